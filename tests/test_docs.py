"""The README and the documentation site: examples that run, and an API entry for every name.

Code blocks (README.md and every Markdown page of docs/):

* Every ```python block runs as written, in a fresh namespace and a temporary
  working directory (so examples that write files leave nothing behind).
* A block whose fence is preceded by the line ``<!-- continues -->`` (blank
  lines may stand between) is a fragment: it runs in the namespace of the block
  before it on the same page, after it.  Each chain of blocks is one test.
* A ```pycon block (or one whose first line starts with ``>>>``) runs as a
  doctest.
* Shell blocks (```sh, ```bash, ```console, ```shell) are not run (they install
  packages and run long benchmarks).  Each of their commands must start with a
  known program, and each ``fastbp ...`` command must parse with the command's
  own argument parser, so that no page shows an option that does not exist.
  ``fastbp --help`` itself runs once, in a subprocess.

Blocks that need an optional package (scikit-learn, Dask, dp-accounting,
matplotlib) are skipped where it is not installed; the README's test command
installs all of them.

API entries: every name in ``fastbp.__all__`` and in the ``__all__`` of every
public module of the package (``fastbp.dask``, ``fastbp.sklearn``, ...) must
have an autodoc entry (``.. autofunction::``, ``.. autoclass::``, ``.. autodata::``,
``.. automodule::``, or a line of an ``.. autosummary::`` table) in the sources
of docs/.  The modules' ``__all__`` lists are read from their source with
:mod:`ast`, so this needs neither Sphinx nor the optional packages.  A name that
``fastbp/__init__.py`` re-exports (``fastbp.mlp.MLP`` as ``fastbp.MLP``) is
covered by an entry under either name.
"""

import ast
import doctest
import os
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "fastbp"
MARKDOWN_SOURCES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONTINUES = "<!-- continues -->"

PYTHON_LANGUAGES = {"python", "py", "python3"}
DOCTEST_LANGUAGES = {"pycon", "doctest"}
SHELL_LANGUAGES = {"sh", "bash", "console", "shell"}
# Optional packages an example may need: without them its block is skipped.
OPTIONAL_MODULES = {"sklearn", "joblib", "dask", "distributed", "dp_accounting", "matplotlib"}
# The programs shell blocks may name.
SHELL_PROGRAMS = {
    "python3", "python", "pip", "fastbp", "asv", "dask", "sphinx-build", ".", "perf",
}  # fmt: skip


# --------------------------------------------------------------------------
# Reading code blocks out of Markdown
# --------------------------------------------------------------------------


def fenced_blocks(path):
    """(language, first line number, text, continues) for every fenced block of a page."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = re.match(r"^(`{3,}|~{3,})\s*\{?([\w+-]*)\}?", lines[index])
        if not opening:
            index += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        continues = before >= 0 and lines[before].strip() == CONTINUES
        end = index + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        assert end < len(lines), f"{path.name}:{index + 1}: code block never closed"
        blocks.append((language, index + 1, "\n".join(lines[index + 1 : end]) + "\n", continues))
        index = end + 1
    return blocks


def is_doctest(language, text):
    return language in DOCTEST_LANGUAGES or (
        language in PYTHON_LANGUAGES and text.lstrip().startswith(">>>")
    )


def python_groups():
    """Each chain of Python blocks (a block and the fragments that continue it), per page."""
    groups = []
    for path in MARKDOWN_SOURCES:
        name = path.relative_to(ROOT).as_posix()
        for language, line, text, continues in fenced_blocks(path):
            if language not in PYTHON_LANGUAGES | DOCTEST_LANGUAGES:
                if continues:
                    pytest.fail(f"{name}:{line}: {CONTINUES} before a {language or 'plain'} block")
                continue
            if continues:
                assert groups and groups[-1][0] == name, (
                    f"{name}:{line}: {CONTINUES} with no Python block before it on the page"
                )
                groups[-1][2].append((line, language, text))
            else:
                groups.append((name, line, [(line, language, text)]))
    return groups


def shell_commands():
    """(page, line, command) for every command of every shell block."""
    commands = []
    for path in MARKDOWN_SOURCES:
        name = path.relative_to(ROOT).as_posix()
        for language, line, text, _ in fenced_blocks(path):
            if language not in SHELL_LANGUAGES:
                continue
            for offset, raw in enumerate(text.splitlines(), start=1):
                command = re.sub(r"(^|\s)#.*$", "", raw).strip()
                if language == "console":
                    command = re.sub(r"^\$\s*", "", command)
                for part in re.split(r"\s*(?:&&|\|\||;)\s*", command):
                    if part:
                        commands.append((name, line + offset, part))
    return commands


# --------------------------------------------------------------------------
# Python blocks run
# --------------------------------------------------------------------------

GROUPS = python_groups()


def test_pages_have_python_examples():
    # The parser found the README's example and the pages' (a broken fence would hide them).
    pages = {name for name, _, _ in GROUPS}
    assert "README.md" in pages and "docs/dask.md" in pages and "docs/usage.md" in pages


@pytest.mark.parametrize(
    "page, line, blocks", GROUPS, ids=[f"{name}:{line}" for name, line, _ in GROUPS]
)
def test_python_example_runs(page, line, blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_example_{len(blocks)}"}
    for block_line, language, text in blocks:
        where = f"{page}:{block_line}"
        try:
            if is_doctest(language, text):
                run_doctest(text, where, namespace)
            else:
                exec(compile(text, where, "exec"), namespace)
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] in OPTIONAL_MODULES:
                pytest.skip(f"{where} needs {error.name}, not installed")
            raise


def run_doctest(text, where, namespace):
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, namespace, where, where, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test, out=lambda message: None)
    failures = runner.summarize(verbose=False).failed
    assert failures == 0, f"{where}: {failures} doctest example(s) failed"


def test_continues_marker_is_found(tmp_path):
    # A fragment and the block it continues run as one test: the marker is read.
    text = "```python\nx = 1\n```\n\n<!-- continues -->\n\n```python\nassert x == 1\n```\n"
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    blocks = fenced_blocks(path)
    assert [(language, continues) for language, _, _, continues in blocks] == [
        ("python", False),
        ("python", True),
    ]


# --------------------------------------------------------------------------
# Shell blocks checked, not run
# --------------------------------------------------------------------------

SHELL = shell_commands()


def program_and_arguments(command):
    """The program and its arguments once env -u, taskset and VAR=value prefixes are gone."""
    words = shlex.split(command)
    while words:
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        elif words[0] == "env":
            words = words[1:]
            while words and (words[0] == "-u" or re.match(r"^[A-Za-z_]\w*=", words[0])):
                words = words[2:] if words[0] == "-u" else words[1:]
        elif words[0] == "taskset":
            words = words[3:]  # taskset -c CPUS
        else:
            break
    return words[0], words[1:]


@pytest.mark.parametrize(
    "page, line, command", SHELL, ids=[f"{name}:{line}" for name, line, _ in SHELL]
)
def test_shell_command_names_real_options(page, line, command):
    from fastbp._tools.cli import build_parser

    program, arguments = program_and_arguments(command)
    assert program in SHELL_PROGRAMS, f"{page}:{line}: unknown program {program!r} in {command!r}"
    if program != "fastbp":
        return
    try:
        build_parser().parse_args(arguments)
    except SystemExit as stop:  # argparse: 0 after --help, 2 for an unknown option
        assert stop.code == 0, f"{page}:{line}: {command!r} does not parse"


def test_fastbp_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "usage: fastbp" in result.stdout


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    # .ci/run reads the test command after its marker; the main command has its own.
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        assert text.count(marker) == 1, marker
    # The seed is defined before it is used.
    assert text.lower().index("the seed") == text.index("**the seed**") + 2


# --------------------------------------------------------------------------
# An API entry for every public name
# --------------------------------------------------------------------------

DIRECTIVE = re.compile(
    r"^\s*(?:\.\.\s+|```\{)auto(?:function|class|data|module|attribute|exception|method)"
    r"(?:::|\})\s+([\w.]+)",
    re.M,
)


def documented_names():
    names = set()
    for path in [*DOCS.glob("*.rst"), *DOCS.glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        names.update(DIRECTIVE.findall(text))
        # autosummary tables: the indented names below the directive and its options.
        for table in re.finditer(r"^(\s*)\.\.\s+autosummary::\n((?:\1\s+.*\n|\s*\n)*)", text, re.M):
            for entry in table.group(2).splitlines():
                entry = entry.strip()
                if entry and not entry.startswith(":"):
                    names.add(entry)
    return names


def module_all(path):
    """The names of a module's ``__all__`` list, read from its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return list(ast.literal_eval(node.value))
    return []


def reexports():
    """{"fastbp.mlp.MLP": "fastbp.MLP", ...}: names fastbp/__init__.py imports from a module."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    aliases = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                public = f"fastbp.{alias.asname or alias.name}"
                aliases[f"fastbp.{node.module}.{alias.name}"] = public
    return aliases


def public_names():
    """Every public module of the package and every name in a public ``__all__``."""
    names = {"fastbp"}
    names.update(f"fastbp.{name}" for name in module_all(PACKAGE / "__init__.py"))
    for module in pkgutil.iter_modules([str(PACKAGE)]):
        if module.name.startswith("_"):
            continue
        names.add(f"fastbp.{module.name}")
        source = PACKAGE / module.name
        source = source / "__init__.py" if module.ispkg else source.with_suffix(".py")
        names.update(f"fastbp.{module.name}.{name}" for name in module_all(source))
    return names


def test_public_names_are_read_from_the_sources():
    # The static reading agrees with the imported package.
    assert {f"fastbp.{name}" for name in fastbp.__all__} <= public_names()
    assert {"fastbp.dask.backprop", "fastbp.sklearn.MLPClassifier", "fastbp.privacy.epsilon"} <= (
        public_names()
    )


def test_every_public_name_has_an_api_entry():
    documented = documented_names()
    aliases = reexports()
    missing = sorted(
        name
        for name in public_names()
        if name not in documented and aliases.get(name) not in documented
    )
    assert not missing, f"no API entry in docs/ for: {', '.join(missing)}"


def test_api_entries_name_public_objects():
    # An entry for a private or misspelt name would document something users cannot reach.
    public = public_names()
    aliases = reexports()
    stray = sorted(
        name
        for name in documented_names()
        if name not in public and name not in aliases.values() and not name.count(".") > 2
    )
    assert not stray, f"API entries for names that are not public: {', '.join(stray)}"
