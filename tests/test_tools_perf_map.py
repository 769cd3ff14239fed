"""The perf map of compiled kernels (fastbp/_tools/perf_map.py): names, ELF symbols, the file."""

import json
import os
import struct
import subprocess
import sys

import pytest

from fastbp._tools.perf_map import elf_functions, readable_name


def test_readable_names_undo_numbas_mangling():
    mangled = "_ZN6fastbp6_tiles11pack_panelsB3v28B70c8tJTIeFIjxB2IKSgI4CrvQCk0ZE5ArrayIfLi2E1C"
    assert readable_name(mangled) == "fastbp._tiles.pack_panels"
    wrapper = "_ZN7cpython6fastbp8_kernels13_sigmoid_flatB3v11B70c8tJTIeFIjxE5ArrayIdLi1E1C"
    assert readable_name(wrapper) == "cpython:fastbp._kernels._sigmoid_flat"
    assert readable_name("NRT_incref") == "NRT_incref"
    assert readable_name("_ZNfoo") == "_ZNfoo"


def test_anything_but_a_64_bit_little_endian_elf_file_is_refused():
    with pytest.raises(ValueError, match="64-bit little-endian ELF"):
        elf_functions(b"\x7fELF\x01\x01" + bytes(64))  # 32-bit
    with pytest.raises(ValueError, match="64-bit little-endian ELF"):
        elf_functions(b"MZ" + bytes(64))


def elf_with_one_function(entsize, binding=1):
    """A minimal ELF64 object whose symbol table (entries ``entsize`` bytes apart) holds
    one function ``f`` (global, or as ``binding`` says): 16 bytes at offset 32 of section 3."""
    identity = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)  # 64-bit, little-endian
    # e_type … e_shstrndx: relocatable x86-64, section headers at 64, 4 of 64 bytes.
    header = identity + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, 64, 0, 64, 0, 0, 64, 4, 0)
    names = b"\0f\0"
    symbols = bytes(24) + struct.pack("<IBBHQQ", 1, (binding << 4) | 2, 0, 3, 32, 16)
    names_at = 64 + 4 * 64
    symbols_at = names_at + len(names)
    sections = [
        bytes(64),
        struct.pack("<IIQQQQIIQQ", 0, 2, 0, 0, symbols_at, len(symbols), 2, 1, 8, entsize),
        struct.pack("<IIQQQQIIQQ", 0, 3, 0, 0, names_at, len(names), 0, 0, 1, 0),
        struct.pack("<IIQQQQIIQQ", 0, 1, 6, 0, 0, 64, 0, 0, 16, 0),  # .text
    ]
    return header + b"".join(sections) + names + symbols


def test_the_symbol_table_of_an_object_file_is_read():
    assert elf_functions(elf_with_one_function(24)) == [("f", 3, 32, 16, "global")]
    assert elf_functions(elf_with_one_function(24, binding=0)) == [("f", 3, 32, 16, "local")]
    assert elf_functions(elf_with_one_function(24, binding=2)) == [("f", 3, 32, 16, "weak")]
    assert elf_functions(elf_with_one_function(24, binding=10)) == []  # an OS-specific binding
    # A symbol table whose entries claim no size is skipped, not divided by.
    assert elf_functions(elf_with_one_function(0)) == []


_CHILD = """
import json, sys
import numpy as np
import fastbp
from fastbp import _jit
from fastbp._tools.perf_map import elf_functions, readable_name, write_perf_map
fastbp.sigmoid(np.linspace(-3.0, 3.0, 50))
count = write_perf_map(sys.argv[1])
# The kernel's object code lists its functions; the JIT says where the global ones are.
from numba.core.registry import cpu_target
engine = cpu_target.target_context.codegen()._engine
functions = [
    function
    for dispatcher in _jit._DISPATCHERS
    if dispatcher.py_func.__name__ == "_sigmoid_flat"
    for cres in dispatcher.overloads.values()
    for function in elf_functions(cres.library._get_compiled_object())
]
addresses = {
    readable_name(name): engine.get_function_address(name)
    for name, _, _, _, binding in functions
    if binding == "global"
}
bindings = sorted({binding for *_, binding in functions})
print(json.dumps({"count": count, "names": [f[0] for f in functions], "addresses": addresses,
                  "bindings": bindings}))
"""


def run_compiling(arguments):
    """Stdout of Python with ``arguments``, in a child that compiles its kernels (no cache)."""
    done = subprocess.run(
        [sys.executable, *arguments],
        env=dict(os.environ, FASTBP_CACHE="0"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="perf maps and ELF: Linux")
def test_a_process_compiling_its_kernels_writes_a_map_of_them(tmp_path):
    path = tmp_path / "perf.map"
    stdout = run_compiling(["-c", _CHILD, str(path)])
    report = json.loads(stdout.strip().splitlines()[-1])
    assert any("_sigmoid_flat" in name for name in report["names"])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert report["count"] == len(lines) > 0
    rows = []
    for line in lines:
        start, size, name = line.split(" ", 2)
        rows.append((int(start, 16), int(size, 16), name))
    assert rows == sorted(rows)
    names = {name for _, _, name in rows}
    assert "fastbp._kernels._sigmoid_flat" in names
    assert "cpython:fastbp._kernels._sigmoid_flat" in names  # its Python entry
    assert all(size > 0 for _, size, _ in rows)
    # Each function of the kernel's library starts where the JIT put it.
    starts = {name: start for start, _, name in rows}
    # Numba gives the kernel's module weak copies of its runtime helpers, which the JIT
    # resolves to another module's: the map must not place the module by them.
    assert report["bindings"] == ["global", "weak"]
    assert report["addresses"]
    for name, address in report["addresses"].items():
        assert starts[name] == address
    # No two functions overlap: perf would give one address two names.
    for (start, size, _), (next_start, _, _) in zip(rows, rows[1:]):
        assert start + size <= next_start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="perf maps and ELF: Linux")
def test_the_runner_loops_over_the_step_and_names_its_kernels(tmp_path):
    path = tmp_path / "step.map"
    stdout = run_compiling(
        ["-m", "fastbp._tools.perf_map", "7x3x20x2", "float64", "--seconds", "0.2"]
        + ["--map", str(path)]
    )
    assert "calls," in stdout and str(path) in stdout
    names = {line.split(" ", 2)[2] for line in path.read_text(encoding="utf-8").splitlines()}
    assert {"fastbp._kernels_step._plain_step", "fastbp._tiles.pack_panels"} <= names


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["7x3x20", "float64"], "4 positive integers"),
        (["7x3x20x2", "float16"], "float32, float64"),
        (["7x3x20x2,8x3x20x2", "float64"], "one shape and one dtype"),
        (["7x3x20x2", "float64", "--seconds", "0"], "seconds"),
    ],
)
def test_the_runner_refuses_bad_arguments(arguments, message, capsys):
    from fastbp._tools.perf_map import main

    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
