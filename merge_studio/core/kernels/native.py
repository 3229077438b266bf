"""Compiled kernels kept as machine code that a process loads without numba.

Importing numba and loading a kernel from its cache takes about 0.6 s of one core, most of
it Python holding the GIL; a merge's workers meanwhile merged through torch at a fraction
of their speed, so a command-line merge of 2 GB lost most of a second to it. Here the
compile child also emits each kernel, behind a C entry point that takes raw pointers, as an
object file. A later process loads that file with llvmlite alone (about 25 ms) and calls it
through ctypes, which releases the GIL as numba's ``nogil`` does. The machine code is the
one numba built (the same inlined kernel), so the bytes are the same.

The kernels allocate nothing and raise nothing, so their machine code never calls numba's
runtime; the few runtime functions the entry point still names (an error path no kernel
takes) are bound to a function that stops the process. A file is only kept once a fresh
process without numba has loaded it and reproduced numba's result; a file whose checksum
does not match its record is ignored. ``MERGE_STUDIO_NATIVE_KERNELS=0`` turns this off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# One argument of a kernel: ("array", dtype) is a pointer and a length; ("tuple", dtype, count)
# a pointer to ``count`` pointers and one to their lengths; a scalar kind is passed by value.
Spec = tuple[Any, ...]
_SCALARS = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int64": ctypes.c_int64,
            "uint32": ctypes.c_uint32, "bool": ctypes.c_int64}


def enabled() -> bool:
    return os.environ.get("MERGE_STUDIO_NATIVE_KERNELS", "1").strip().lower() not in {"0", "false", "no", "off"}


# --- describing a call --------------------------------------------------------------------------
def describe(args: tuple[Any, ...]) -> tuple[Spec, ...]:
    """The kinds of a kernel's arguments (what its machine code was built for)."""
    import numpy as np

    specs: list[Spec] = []
    for a in args:
        if isinstance(a, np.ndarray):
            specs.append(("array", _dtype_name(a)))
        elif isinstance(a, tuple) and a and all(isinstance(x, np.ndarray) for x in a):
            if len({_dtype_name(x) for x in a}) != 1:
                raise TypeError("a tuple of arrays of different dtypes")
            specs.append(("tuple", _dtype_name(a[0]), len(a)))
        elif isinstance(a, (bool, np.bool_)):
            specs.append(("bool",))
        elif isinstance(a, np.floating):
            specs.append((str(a.dtype),))
        elif isinstance(a, float):
            specs.append(("float64",))
        elif isinstance(a, np.uint32):
            specs.append(("uint32",))
        elif isinstance(a, (int, np.integer)):
            specs.append(("int64",))
        else:
            raise TypeError(f"a kernel argument of type {type(a).__name__}")
    return tuple(specs)


def _dtype_name(a: Any) -> str:
    if a.ndim not in (1, 2) or not a.flags.c_contiguous:
        raise TypeError("arrays must be C-contiguous with one or two dimensions")
    name = "uint8" if a.dtype == bool else str(a.dtype)  # a bool array's bytes are 0 and 1
    return f"{name}[{a.ndim}]"


# --- where machine code is kept ---------------------------------------------------------------
def cache_folder() -> Path:
    from merge_studio.core.hash_cache import cache_dir

    return cache_dir() / "kernels"


@functools.cache
def _build_identity() -> str:
    """What the machine code depends on besides the call: the kernels' sources, the compiler,
    and this CPU (the code uses its instruction set)."""
    from importlib.metadata import version

    import llvmlite.binding as llvm

    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    for part in (version("numba"), version("llvmlite"), llvm.get_process_triple(), llvm.get_host_cpu_name(),
                 llvm.get_host_cpu_features().flatten()):
        digest.update(part.encode())
    return digest.hexdigest()


def wanted(name: str, args: tuple[Any, ...]) -> bool:
    """Whether the machine code for these calls should be built: not kept yet, nor failed before."""
    try:
        path = cached_path(name, describe(args))
    except (TypeError, ImportError):
        return False
    return enabled() and not path.with_suffix(".json").exists() and not path.with_suffix(".failed").exists()


def cached_path(name: str, specs: tuple[Spec, ...]) -> Path:
    key = hashlib.sha256(json.dumps([name, specs, _build_identity()]).encode()).hexdigest()[:32]
    return cache_folder() / f"{name.replace('.', '-')}-{key}"


# --- loading (no numba) -------------------------------------------------------------------------
_engines: list[Any] = []  # execution engines own the loaded code: kept for the life of the process
_lock = threading.Lock()


@functools.cache
def _target_machine() -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten())


@ctypes.CFUNCTYPE(None)
def _unreachable() -> None:
    os.write(2, b"merge-studio: a native kernel called numba's runtime; set MERGE_STUDIO_NATIVE_KERNELS=0\n")
    os.abort()


def load_cached(name: str, args: tuple[Any, ...]) -> NativeKernel | None:
    """The kernel ``name`` for calls like ``args``, from the cache; ``None`` when it is not there
    (or not intact, or cannot be loaded)."""
    if not enabled():
        return None
    try:
        path = cached_path(name, describe(args))
        record = json.loads(path.with_suffix(".json").read_text())
        code = path.with_suffix(".o").read_bytes()
    except (OSError, ValueError, TypeError, ImportError):
        return None
    if hashlib.sha256(code).hexdigest() != record.get("sha256"):
        log.warning("removing damaged kernel file %s (it is built again)", path)
        for suffix in (".json", ".o"):
            path.with_suffix(suffix).unlink(missing_ok=True)
        return None
    try:
        return load(code, record["symbol"], record["unresolved"], [tuple(s) for s in record["specs"]])
    except Exception:  # noqa: BLE001 - numba's own path still works
        log.warning("could not load kernel file %s", path, exc_info=True)
        return None


def load(code: bytes, symbol: str, unresolved: list[str], specs: list[Spec]) -> NativeKernel:
    """Load object code and return its entry point as a callable taking the kernel's arguments."""
    import llvmlite.binding as llvm

    with _lock:
        machine = _target_machine()
        process = ctypes.CDLL(None)
        for missing in unresolved:  # numba's runtime entry points an error path names, never taken
            if not hasattr(process, missing):
                llvm.add_symbol(missing, ctypes.cast(_unreachable, ctypes.c_void_p).value)
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        engine.finalize_object()
        address = engine.get_function_address(symbol)
        if not address:
            raise RuntimeError(f"{symbol} is not in the object code")
        _engines.append(engine)
    return NativeKernel(address, specs)


class NativeKernel:
    """A kernel's machine code, called with the arguments numba's dispatcher would take."""

    def __init__(self, address: int, specs: list[Spec]) -> None:
        argtypes: list[Any] = []
        for spec in specs:
            if spec[0] == "array":
                argtypes += [ctypes.c_void_p, ctypes.c_int64]  # data, element count
            elif spec[0] == "tuple":
                argtypes += [ctypes.c_void_p, ctypes.c_void_p]  # table of data pointers, table of lengths
            else:
                argtypes.append(_SCALARS[spec[0]])
        self._specs = tuple(specs)
        self._function = ctypes.CFUNCTYPE(ctypes.c_int64, *argtypes)(address)  # releases the GIL while it runs

    def __call__(self, *args: Any) -> bool:
        import numpy as np

        if describe(args) != self._specs:  # machine code reads memory as it was built to: never guess
            raise TypeError(f"kernel built for {self._specs}, called with {describe(args)}")
        flat: list[Any] = []
        keep: list[Any] = []  # pointer tables live until the call returns
        for spec, a in zip(self._specs, args, strict=True):
            if spec[0] == "array":
                flat += [a.ctypes.data, a.shape[0] if a.ndim == 1 else a.shape[0] * a.shape[1]]
            elif spec[0] == "tuple":
                pointers = np.array([x.ctypes.data for x in a], np.uint64)
                lengths = np.array([x.shape[0] for x in a], np.int64)
                keep += [pointers, lengths]
                flat += [pointers.ctypes.data, lengths.ctypes.data]
            else:
                flat.append(a)
        return bool(self._function(*flat))


# --- building (in the compile child, with numba) ----------------------------------------------------
def _entry_source(specs: tuple[Spec, ...], returns_value: bool) -> str:
    """Python source of a C entry point that wraps raw pointers as arrays and calls ``kernel``."""
    params, lines, call = [], [], []
    for i, spec in enumerate(specs):
        a = f"a{i}"
        if spec[0] == "array":
            params += [f"{a}_p", f"{a}_n"]
            shape = f"({a}_n,)" if spec[1].endswith("[1]") else f"({a}_n // BLOCK, BLOCK)"
            lines.append(f"    {a} = carray({a}_p, {shape})")
        elif spec[0] == "tuple":
            params += [f"{a}_p", f"{a}_n"]
            items = ", ".join(f"carray({a}_p[{k}], ({a}_n[{k}],))" for k in range(spec[2]))
            lines.append(f"    {a} = ({items},)")
        elif spec[0] == "bool":
            params.append(f"{a}_i")
            lines.append(f"    {a} = {a}_i != 0")
        else:
            params.append(a)
        call.append(a)
    arguments = ", ".join(call)
    ending = [f"    return 1 if kernel({arguments}) else 0"] if returns_value else [f"    kernel({arguments})", "    return 0"]
    return "\n".join([f"def entry({', '.join(params)}):", *lines, *ending])


def _numba_types(specs: tuple[Spec, ...]) -> list[Any]:
    from numba import types

    def element(name: str) -> Any:
        return getattr(types, name.split("[")[0])

    out: list[Any] = []
    for spec in specs:
        if spec[0] == "array":
            out += [types.CPointer(element(spec[1])), types.int64]
        elif spec[0] == "tuple":
            out += [types.CPointer(types.CPointer(element(spec[1]))), types.CPointer(types.int64)]
        elif spec[0] == "bool":
            out.append(types.int64)
        else:
            out.append(getattr(types, spec[0]))
    return out


def build(name: str, args: tuple[Any, ...], returns_value: bool) -> tuple[bytes, str, list[str]]:
    """Object code of kernel ``name`` for calls like ``args``: (code, entry symbol, names it
    leaves to the process)."""
    from numba import carray, cfunc, types

    from merge_studio.core.kernels import BLOCK

    module, function = name.rsplit(".", 1)
    kernel = getattr(importlib.import_module(f"merge_studio.core.kernels.{module}"), function)
    specs = describe(args)
    source = _entry_source(specs, returns_value)
    namespace: dict[str, Any] = {"carray": carray, "kernel": kernel, "BLOCK": BLOCK}
    exec(compile(source, f"<entry for {name}>", "exec"), namespace)  # noqa: S102 - our own generated wrapper
    compiled = cfunc(types.int64(*_numba_types(specs)), nopython=True, error_model="numpy")(namespace["entry"])
    library = compiled._library  # noqa: SLF001 - numba has no public way to emit a JIT library's object code
    final = library._final_module  # noqa: SLF001
    code = library._codegen._tm.emit_object(final)  # noqa: SLF001
    unresolved = sorted(f.name for f in final.functions if f.is_declaration and not f.name.startswith("llvm."))
    return code, compiled.native_name, unresolved


def digest_of(args: tuple[Any, ...]) -> str:
    """A checksum of every array among ``args`` (after a call: its outputs)."""
    import numpy as np

    digest = hashlib.sha256()
    for a in args:
        for x in a if isinstance(a, tuple) else (a,):
            if isinstance(x, np.ndarray):
                digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def build_and_keep(name: str, args: tuple[Any, ...], expected: str, returns_value: bool) -> bool:
    """Build the object code, check it in a fresh process without numba against ``expected``
    (the digest of numba's outputs for ``args``), and keep it in the cache if it matches."""
    path = cached_path(name, describe(args))
    code, symbol, unresolved = build(name, args, returns_value)
    record = {"symbol": symbol, "unresolved": unresolved, "specs": describe(args),
              "sha256": hashlib.sha256(code).hexdigest()}
    check = subprocess.run(
        [sys.executable, "-m", __name__], input=pickle.dumps((code, record, args)), capture_output=True,
        timeout=120, check=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if check.returncode != 0 or check.stdout.decode().strip() != expected:
        # remembered, so that later merges do not start a child to fail again (numba's path still works)
        path.with_suffix(".failed").write_text(check.stderr.decode(errors="replace")[-2000:] or "different result")
        log.warning("kernel %s: machine code loaded without numba did not reproduce numba's result", name)
        return False
    for suffix, data in ((".o", code), (".json", json.dumps(record).encode())):  # the record last: it marks the pair whole
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path.with_suffix(suffix))
    return True


def _check_child() -> int:
    """In a fresh process: load the object code without numba, run it, print the outputs' digest."""
    code, record, args = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by our own parent process
    kernel = load(code, record["symbol"], record["unresolved"], [tuple(s) for s in record["specs"]])
    kernel(*args)
    if "numba" in sys.modules:
        return 3  # the check would prove nothing
    print(digest_of(args))
    return 0


if __name__ == "__main__":
    sys.exit(_check_child())
