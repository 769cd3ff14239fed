"""Name fastbp's compiled functions for Linux ``perf``: a ``/tmp/perf-<pid>.map`` file.

Numba's machine code lives in anonymous memory, so ``perf report`` shows
bare addresses.  :func:`write_perf_map` lists every function of every
kernel compiled in this process, with its address and size, in the map
format ``perf`` reads (one ``START SIZE NAME`` line per function, hex),
and the profile then reads per kernel.  ``python -m fastbp._tools.perf_map``
runs the fused step in a loop and writes the map at the end, for
``perf record`` (docs/tuning.md shows the commands).

Only code compiled in this process can be placed: a library loaded from
fastbp's cache keeps no object code, so profile with ``FASTBP_CACHE=0``.
Each library's object code (an ELF relocatable file) gives its functions'
offsets within their sections; one exported function per section, whose
address the JIT reports, places that section.  This reads Numba internals
(``CodeLibrary._get_compiled_object``, the JIT engine's
``get_function_address``) and is a development tool, not part of fastbp's API.
"""

import argparse
import os
import struct
import time

__all__ = ["elf_functions", "main", "readable_name", "write_perf_map"]

_STT_FUNC = 2
_SHT_SYMTAB = 2
_BINDINGS = {0: "local", 1: "global", 2: "weak"}


def elf_functions(data):
    """The function symbols of a 64-bit little-endian ELF relocatable file.

    Parameters
    ----------
    data : bytes
        The object file.

    Returns
    -------
    list of (name, section, offset, size, binding)
        One entry per defined function symbol: its section index, its offset
        within that section, its size in bytes, and its binding, "local",
        "global" or "weak".

    Raises
    ------
    ValueError
        If ``data`` is not a 64-bit little-endian ELF file.
    """
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("data is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize) for k in range(shnum)
    ]
    functions = []
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != _SHT_SYMTAB or entsize == 0:  # no symbols, or no size to step by
            continue
        strtab_offset = sections[link][4]
        for k in range(size // entsize):
            st_name, st_info, _, st_shndx, st_value, st_size = struct.unpack_from(
                "<IBBHQQ", data, offset + k * entsize
            )
            binding = _BINDINGS.get(st_info >> 4)
            if st_info & 0xF != _STT_FUNC or binding is None or not 0 < st_shndx < shnum:
                continue
            end = data.index(b"\0", strtab_offset + st_name)
            name = data[strtab_offset + st_name : end].decode()
            functions.append((name, st_shndx, st_value, st_size, binding))
    return functions


def readable_name(symbol):
    """``fastbp._tiles.pack_panels`` for Numba's mangled ``_ZN6fastbp6_tiles11pack_panelsB…``.

    The Python entry of a kernel (mangled with a leading ``cpython``) reads
    ``cpython:fastbp.…``.  A name that is not Numba's mangling is returned
    as it is.
    """
    if not symbol.startswith("_ZN"):
        return symbol
    parts = []
    k = 3
    while k < len(symbol) and symbol[k].isdigit():
        j = k
        while symbol[j].isdigit():
            j += 1
        length = int(symbol[k:j])
        parts.append(symbol[j : j + length])
        k = j + length
    if not parts:
        return symbol
    if parts[0] == "cpython":
        return "cpython:" + ".".join(parts[1:])
    return ".".join(parts)


# Numba's runtime functions every kernel calls, placed by address alone (their
# library keeps no object code); each is given at most this many bytes.
_RUNTIME_FUNCTIONS = ("NRT_incref", "NRT_decref")
_RUNTIME_FUNCTION_BYTES = 0x40


def _perf_map_rows():
    """(address, size, name) of every placeable function compiled in this process."""
    from numba.core.registry import cpu_target

    from .. import _jit

    engine = cpu_target.target_context.codegen()._engine
    rows = set()
    seen = set()
    for dispatcher in _jit._DISPATCHERS:
        for cres in list(dispatcher.overloads.values()):
            library = cres.library
            if id(library) in seen:
                continue
            seen.add(id(library))
            try:
                data = library._get_compiled_object()
            except Exception:  # loaded from the cache, or not compiled to an object
                continue
            functions = elf_functions(data)
            # A section is placed by a global function the JIT finds, the kernel's own
            # entry first.  Not by a weak one: Numba gives every module weak copies of
            # its runtime helpers, and the JIT names another module's copy.
            own = cres.fndesc.mangled_name
            anchors = sorted(
                (name != own, name, section, offset)
                for name, section, offset, _, binding in functions
                if binding == "global"
            )
            bases = {}
            for _, name, section, offset in anchors:
                if section not in bases:
                    address = engine.get_function_address(name)
                    if address:
                        bases[section] = address - offset
            for name, section, offset, size, _ in functions:
                if section in bases and size > 0:
                    rows.add((bases[section] + offset, size, readable_name(name)))
    runtime = {}
    for name in _RUNTIME_FUNCTIONS:
        try:
            address = engine.get_function_address(name)
        except Exception:  # a Numba without it
            continue
        if address:
            runtime[name] = address
    placed = [address for address, _, _ in rows] + list(runtime.values())
    for name, address in runtime.items():
        following = [a - address for a in placed if a > address]
        rows.add((address, min([_RUNTIME_FUNCTION_BYTES] + following), name))
    return sorted(rows)


def write_perf_map(path=None):
    """Write the perf map of this process's compiled fastbp functions; return how many.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Where to write; by default ``/tmp/perf-<pid>.map``, where ``perf
        report`` looks for the process's JIT symbols.

    Returns
    -------
    int
        The number of functions written (0 when everything was loaded from
        the cache: run with ``FASTBP_CACHE=0``).
    """
    path = f"/tmp/perf-{os.getpid()}.map" if path is None else path
    rows = _perf_map_rows()
    with open(path, "w", encoding="utf-8") as handle:
        for address, size, name in rows:
            handle.write(f"{address:x} {size:x} {name}\n")
    return len(rows)


def main(argv=None):
    """Run ``fastbp.backprop`` (L2 = 0.01) in a loop for some seconds, then write the perf map.

    Arguments: the step's shape n x m x d x t, its dtype, ``--seconds``
    (default 10) and ``--map`` (default ``/tmp/perf-<pid>.map``).  The
    first call, which compiles, runs before the timed loop, so ``perf
    report --time`` can keep the loop's samples alone.
    """
    from .cli import dtype_list, positive_float, shape_list

    parser = argparse.ArgumentParser(
        prog="python -m fastbp._tools.perf_map",
        description="run the fused step in a loop, then name its compiled functions for perf",
    )
    parser.add_argument("shape", type=shape_list(4), help="the step's n x m x d x t")
    parser.add_argument("dtype", type=dtype_list, help="float32 or float64")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="default 10")
    parser.add_argument("--map", help="the map's path (default /tmp/perf-<pid>.map)")
    args = parser.parse_args(argv)
    if len(args.shape) != 1 or len(args.dtype) != 1:
        parser.error("give one shape and one dtype")

    import fastbp

    from .problems import make_problem, step_arrays

    n, m, d, t = (int(size) for size in args.shape[0].split("x"))
    arrays = step_arrays(make_problem(n, m, d, t, args.dtype[0]))
    fastbp.backprop(*arrays, l2=0.01)  # compiles, before the loop
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        fastbp.backprop(*arrays, l2=0.01)
        calls += 1
    elapsed = time.perf_counter() - start
    count = write_perf_map(args.map)
    print(
        f"{calls} calls, {elapsed / max(calls, 1) * 1e6:.1f} us each; "
        f"{count} compiled functions named in {args.map or f'/tmp/perf-{os.getpid()}.map'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
