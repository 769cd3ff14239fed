"""Sphinx configuration of fastbp's documentation site.

Build it with ``pip install '.[docs,sklearn,dask]'`` and
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import os
import re
import sys

# The checkout's fastbp, so that the site documents the sources beside it.
sys.path.insert(0, os.path.abspath(".."))

project = "fastbp"
author = "fastbp contributors"
copyright = "fastbp contributors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    # napoleon, not numpydoc: it ships with Sphinx (no extra dependency) and reads the
    # numpy-style docstrings as they are, without numpydoc's stricter section checks.
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False

# Unresolved cross-references (NumPy's, scikit-learn's types) are not errors.
nitpicky = False

# Markdown pages: headings get anchors for links between pages.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "alabaster"
html_title = "fastbp"


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    """Keep scikit-learn-style names (``n_features_in_``) in type fields literal.

    A numpy-style type such as ``shape (n_features_in_,)`` reaches reST as text, where a
    word ending in ``_`` is a link to a target of that name; escaping the underscore
    keeps the word as written.  Runs after napoleon has turned sections into fields.
    """
    for index, line in enumerate(lines):
        match = _TYPE_FIELD.match(line)
        if match:
            head, body = line[: match.end()], line[match.end() :]
            lines[index] = head + _TRAILING_UNDERSCORE.sub(r"\1\\_", body)


_TYPE_FIELD = re.compile(r"^\s*:(?:type|vartype|rtype)\b[^:]*:")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])([A-Za-z]\w*?)_(?![\w`])")


def setup(app):
    """Connect the type-field escaping after napoleon (priority 500, the default)."""
    app.connect("autodoc-process-docstring", _escape_trailing_underscores, priority=600)
