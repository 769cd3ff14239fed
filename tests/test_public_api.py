"""The public surface: what ``__all__`` lists, and that tests use it as users do."""

import ast
import importlib
import inspect
import pathlib

import pytest

import fastbp

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "fastbp").rglob("*.py")
)
# Modules whose import needs an optional dependency.
OPTIONAL = {"fastbp.dask": "dask", "fastbp.sklearn": "sklearn"}


def declared_all(module_name):
    """The module's ``__all__`` as written in its source (None without one), without importing."""
    path = ROOT / (module_name.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module_name.replace(".", "/") / "__init__.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            getattr(target, "id", None) == "__all__" for target in node.targets
        ):
            return [element.value for element in node.value.elts]
    return None


@pytest.mark.parametrize(
    "module_name", [name for name in MODULES if declared_all(name) is not None]
)
def test_every_all_is_sorted_and_names_what_the_module_has(module_name):
    names = declared_all(module_name)
    assert names == sorted(names), f"{module_name}.__all__ is not sorted"
    assert len(set(names)) == len(names)
    if module_name in OPTIONAL:
        pytest.importorskip(OPTIONAL[module_name])
    module = importlib.import_module(module_name)
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name", fastbp.__all__)
def test_every_public_function_and_class_is_documented(name):
    value = getattr(fastbp, name)
    if not (inspect.isfunction(value) or inspect.isclass(value)):
        return  # constants and submodules
    doc = inspect.getdoc(value) or ""
    assert doc.strip(), f"fastbp.{name} has no docstring"
    if inspect.isfunction(value):
        assert "Parameters\n----------" in doc, f"fastbp.{name} documents no parameters"
        assert "Returns\n-------" in doc, f"fastbp.{name} documents no result"


def test_tests_import_public_functions_from_fastbp():
    """A public function is imported as users import it, never from its private module."""
    public = set(fastbp.__all__)
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fastbp._"):
                names = [alias.name for alias in node.names if alias.name in public]
                if names:
                    offenders.append(f"{path.name}: from {node.module} import {', '.join(names)}")
    assert not offenders, offenders


def test_the_chunk_counts_are_public_and_documented():
    # They fix the order of the sums, so the bits of a result: users reproduce a
    # call's bits with them (the README names default_n_chunks), so they stay public.
    assert fastbp.default_n_chunks(100_000, 100, 10, 8) == 16
    assert fastbp.default_backprop_chunks(1024, 64, 100, 10, 8) == 8
    assert fastbp.default_backprop_chunks(1024, 64, 100, 10, 8) == fastbp.default_backprop_chunks(
        1024, 64, 100, 10, 4
    )
    for function in (fastbp.default_n_chunks, fastbp.default_backprop_chunks):
        assert "Raises\n------" in inspect.getdoc(function)
