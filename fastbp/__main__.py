"""``python -m fastbp``: the ``fastbp`` command line."""

import sys

from ._tools.cli import main

sys.exit(main())
