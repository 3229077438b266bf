"""Compiled kernels for the merges that torch does as many small passes (numba, optional).

TIES on one chunk is some thirty torch calls: each is a pass over the chunk, and each
releases and retakes the GIL, so two workers spend a third of their time waiting for it.
A kernel compiled with numba does the same arithmetic, in the same order and in float32,
in one call that holds no GIL, over blocks that stay in the L1 cache, and gives the same
bytes. Without numba (it is the ``fast`` extra) or with ``MERGE_STUDIO_KERNELS=0`` every
caller falls back to its torch code; compiled kernels are cached on disk after first use, and
kept as machine code that later processes load without importing numba (:mod:`.native`).

Tensors are handed over as their raw bits: bfloat16 as ``uint16`` (widened to float32 by a
shift, exactly as torch does) and float32 as ``uint32``; any other dtype is declined.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

# Entries per block: a kernel's few float32 blocks of this size stay in a core's L1 cache.
BLOCK = 1024
# Working rows the TIES kernel needs besides one per model (see :mod:`.ties`).
TIES_SCRATCH_ROWS = 6

# How many bits a stored dtype's pattern is shifted left to become a float32 pattern.
_SHIFTS = {"torch.bfloat16": 16, "torch.float32": 0}


def available() -> bool:
    """Whether compiled kernels can be used (numba installed and not switched off)."""
    if os.environ.get("MERGE_STUDIO_KERNELS", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    return _numba_installed()


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None  # a search of sys.path: asked once, not per chunk


def shift_of(dtype: "torch.dtype") -> int | None:
    """The widening shift for ``dtype``, or ``None`` when the kernels do not take it."""
    return _SHIFTS.get(str(dtype))


def raw_bits(t: "torch.Tensor") -> "np.ndarray":
    """A flat CPU tensor's storage as unsigned integers of its width (no copy)."""
    import numpy as np
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.view(torch.int32).numpy().view(np.uint32)


def kernel_inputs(tensors: "list[torch.Tensor]") -> "tuple[list[np.ndarray], int] | None":
    """The tensors as raw bits and their common shift, or ``None`` when they cannot be taken
    (different or unsupported dtypes, not on the CPU, not flat and contiguous)."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        return None
    shift = shift_of(next(iter(dtypes)))
    if shift is None or any(t.device.type != "cpu" or t.dim() != 1 or not t.is_contiguous() for t in tensors):
        return None
    return [raw_bits(t) for t in tensors], shift


# Loading numba and a kernel's cached machine code takes about half a second, compiling it the
# first time several seconds. A merge does not wait: until a kernel is ready its callers get
# None and merge with torch (the same bytes), while a thread gets it ready.
WARM_IN_BACKGROUND = True
_ready: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = {}
_warming: set[tuple[str, tuple[Any, ...]]] = set()
_lock = threading.Lock()


def _compiled(
    name: str, key: tuple[Any, ...], warm: Callable[[Callable[..., Any]], object], wait: bool
) -> Callable[..., Any] | None:
    """The kernel ``module.function`` of this package, compiled for the argument types ``key``.

    ``warm`` calls it on tiny inputs of those types. With ``wait`` (or background warming
    off) this compiles or loads it now; otherwise it returns ``None`` until a thread has.
    """
    found = _ready.get((name, key))
    if found is not None:
        return found
    if wait or not WARM_IN_BACKGROUND:
        return _warm(name, key, warm)
    with _lock:
        if (name, key) in _warming:
            return None
        _warming.add((name, key))
    # not a daemon: leaving the program waits for a compile in flight instead of killing it inside LLVM
    threading.Thread(target=_warm_quietly, args=(name, key, warm), name="kernel-warm").start()
    return None


def _warm(
    name: str, key: tuple[Any, ...], warm: Callable[[Callable[..., Any]], object], kernel: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """Make the kernel ready: ``kernel`` if given, else its kept machine code, else numba's."""
    if kernel is None:
        kernel = _load_native(name, warm)
    if kernel is None:
        module, function = name.rsplit(".", 1)
        kernel = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    warm(kernel)
    _ready[(name, key)] = kernel
    return kernel


def _load_native(name: str, warm: Callable[[Callable[..., Any]], object]) -> Callable[..., Any] | None:
    """The kernel's machine code loaded without numba (see :mod:`.native`), when it was kept."""
    from merge_studio.core.kernels import native

    if not native.enabled():
        return None
    args = _recorded_args(warm)
    return None if args is None else native.load_cached(name, args)


class _Recorded(Exception):
    """Stops ``warm`` at its first kernel call: the arguments are known."""


class _ArgumentRecorder:
    """Stands in for a kernel during ``warm`` and keeps the arguments (their types pick the machine code)."""

    def __init__(self) -> None:
        self.args: tuple[Any, ...] | None = None

    def __call__(self, *args: Any) -> None:
        self.args = args
        raise _Recorded


def _compile_in_child(name: str, warm: Callable[[Callable[..., Any]], object]) -> bool:
    """Compile the kernel ``warm`` would call in another process, which fills numba's disk cache.

    LLVM holds the GIL for up to 150 ms at a time while it compiles; in a thread of this process
    that froze the window and the merge workers. Returns whether the child succeeded.
    """
    from merge_studio.core.kernels import native

    if getattr(sys, "frozen", False):  # a bundled app has no interpreter to start
        return False
    args = _recorded_args(warm)
    if args is None:
        return False
    if _in_disk_cache(name, args) and not native.wanted(name, args):
        return True  # loading machine code is quick: no process to start
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"{__name__}.compile_child"], input=pickle.dumps((name, args)),
            capture_output=True, timeout=600, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _recorded_args(warm: Callable[[Callable[..., Any]], object]) -> tuple[Any, ...] | None:
    """The arguments ``warm`` passes its kernel (their types pick the machine code)."""
    recorder = _ArgumentRecorder()
    try:
        warm(recorder)
    except _Recorded:
        pass
    return recorder.args


def _in_disk_cache(name: str, args: tuple[Any, ...]) -> bool:
    """Whether numba's disk cache holds the kernel ``name`` for the types of ``args``.

    Reads numba's cache index the way its dispatcher does (private API: any failure
    answers no, and the kernel is then compiled in a child, which is only slower).
    """
    try:
        module, function = name.rsplit(".", 1)
        kernel = getattr(importlib.import_module(f"{__name__}.{module}"), function)
        signature = tuple(kernel.typeof_pyval(a) for a in args)
        cache = kernel._cache  # noqa: SLF001
        key = cache._index_key(signature, kernel.targetctx.codegen())  # noqa: SLF001
        return key in cache._cache_file._load_index()  # noqa: SLF001
    except Exception:  # noqa: BLE001 - numba changed: fall back to the child
        return False


@functools.cache
def _preload_llvm() -> None:
    """Load LLVM's shared library (180 MB) with the GIL released, before numba asks for it.

    llvmlite opens it with ``ctypes.CDLL``, which holds the GIL while the library's pages
    are read and its static constructors run: 20-150 ms during which the window froze.
    Read into the page cache, then opened through libc's ``dlopen`` (a ctypes call, which
    releases the GIL), it is already loaded when llvmlite opens it. Linux only; elsewhere
    llvmlite loads it as usual.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    from pathlib import Path

    spec = importlib.util.find_spec("llvmlite")
    if spec is None or not spec.submodule_search_locations:
        return
    for library in Path(next(iter(spec.submodule_search_locations)), "binding").glob("libllvmlite*.so*"):
        # its pages into the page cache first (a file read holds no lock): dlopen holds the loader's
        # lock while it faults pages in, and any thread asking for that lock meanwhile (a starting
        # thread registers its thread-local destructors under it) would wait for the disk holding the GIL
        buffer = bytearray(4 << 20)
        with library.open("rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen(str(library).encode(), os.RTLD_NOW | os.RTLD_LOCAL)  # kept open: llvmlite reuses it
        return


def _warm_quietly(name: str, key: tuple[Any, ...], warm: Callable[[Callable[..., Any]], object]) -> None:
    """On a thread: load the kept machine code, or compile in a child process and load numba's here."""
    try:
        _preload_llvm()
        kernel = _load_native(name, warm)
        if kernel is None:
            _compile_in_child(name, warm)
        _warm(name, key, warm, kernel)
    except Exception:  # noqa: BLE001 - a kernel that cannot be built leaves its callers on torch
        log.warning("compiled kernel %s could not be prepared; merging with torch instead", name, exc_info=True)


def prepare() -> None:
    """Load numba and LLVM now, ahead of the first merge (the window calls it on a thread once built).

    The first kernel of a process costs about 0.7 s of CPU and some 30,000 new Python
    objects (numba's types and functions); done at start-up, a merge does not pay it and
    the window can set those objects aside from garbage collection while nothing runs.
    """
    if not available():
        return
    import torch

    tiny = torch.zeros(4, dtype=torch.bfloat16)

    def warm(kernel: Callable[..., Any]) -> object:
        return _run_sample(kernel, tiny, tiny, 1)

    # as a merge's background warming does: compiled (if need be) in a child, loaded here
    _warm_quietly("magnitude.sample_magnitudes", (shift_of(tiny.dtype),), warm)


_scratch = threading.local()


def scratch(rows: int) -> "np.ndarray":
    """This thread's float32[rows, BLOCK] working rows for a kernel (kernels allocate nothing:
    a kernel loaded without numba has no allocator to call)."""
    import numpy as np

    held = getattr(_scratch, "rows", None)
    if held is None or held.shape[0] < rows:
        held = _scratch.rows = np.empty((rows, BLOCK), np.float32)
    return held[:rows]


def _call(
    kernel: Callable[..., Any], args: tuple[Any, ...], numel: int,
    out_dtype: "torch.dtype", want_metrics: bool, metric_names: tuple[str, ...], rows: int = 1,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """Run a merge kernel whose arguments end with (out, out_shift, limit, want_metrics, metrics,
    scratch): the chunk in ``out_dtype`` and its metrics, or ``None`` when a result was not finite."""
    import numpy as np
    import torch

    # numpy's allocation, not torch.empty's aligned one, which glibc could not reuse (see file_io.pread_bytes)
    out = torch.from_numpy(np.empty(numel * out_dtype.itemsize, np.uint8)).view(out_dtype)
    metrics = np.zeros(len(metric_names))
    limit = np.float32(torch.finfo(out_dtype).max)
    if not kernel(*args, raw_bits(out), shift_of(out_dtype), limit, want_metrics, metrics, scratch(rows)):
        return None
    return out, (dict(zip(metric_names, metrics.tolist())) if want_metrics else {})


def _tiny(dtype: "torch.dtype", n_models: int) -> "tuple[list[torch.Tensor], torch.Tensor]":
    import torch

    return [torch.zeros(4, dtype=dtype) for _ in range(n_models)], torch.zeros(4, dtype=dtype)


def ties_chunk(
    stored: "list[torch.Tensor]", base: "torch.Tensor", thresholds: "list[float]", weights: "list[float]", *,
    lambda_: float, normalize: bool, count_consensus: bool, out_dtype: "torch.dtype", want_metrics: bool,
    wait: bool = True, drops: "list[tuple[np.ndarray, float, bool] | None] | None" = None,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """TIES of one flat chunk as stored (see :mod:`.ties`): the merged chunk in ``out_dtype``
    and, with ``want_metrics``, its per-layer numbers; ``None`` when the kernel cannot take
    these tensors, is not ready and ``wait`` is false, or a result is not finite (the torch
    path then decides what to do). DARE-TIES gives ``drops``: per model, its keep mask (bool,
    one per entry), density and whether to rescale, or ``None`` for a model it does not thin."""
    taken = kernel_inputs([*stored, base])
    out_shift = shift_of(out_dtype)
    if taken is None or out_shift is None:
        return None
    dtype, n = base.dtype, len(stored)

    def warm(kernel: Callable[..., Any]) -> object:
        tiny, tiny_base = _tiny(dtype, n)
        return _run_ties(kernel, tiny, tiny_base, [0.5] * n, [1.0] * n, 1.0, True, False, out_dtype, True, None)

    kernel = _compiled("ties.ties_chunk", (n, taken[1], out_shift), warm, wait)
    if kernel is None:
        return None
    return _run_ties(kernel, stored, base, thresholds, weights, lambda_, normalize, count_consensus, out_dtype,
                     want_metrics, drops)


def _run_ties(
    kernel: Callable[..., Any], stored: "list[torch.Tensor]", base: "torch.Tensor", thresholds: "list[float]",
    weights: "list[float]", lambda_: float, normalize: bool, count_consensus: bool, out_dtype: "torch.dtype",
    want_metrics: bool, drops: "list[tuple[np.ndarray, float, bool] | None] | None",
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    import numpy as np
    import torch

    from merge_studio.core.methods.sparsify import _just_below

    taken = kernel_inputs([*stored, base])
    assert taken is not None
    bits, shift = taken
    smallest = min(weights)
    drops = drops or [None] * len(stored)
    no_mask = np.zeros(0, np.uint8)
    keeps = tuple(no_mask if d is None else d[0].view(np.uint8) for d in drops)
    rescale = [d is not None and d[2] and d[1] < 1.0 for d in drops]
    kept_scales = [abs(w) * (1.0 / d[1] if r else 1.0) for w, d, r in zip(weights, drops, rescale)]  # type: ignore[index]
    args = (
        tuple(bits[:-1]), bits[-1], shift,
        np.array([_just_below(t, torch.float32) if t > 0 else 0.0 for t in thresholds], np.float32),
        np.array([t > 0 for t in thresholds]), keeps, np.array([d is not None for d in drops]),
        np.array([1.0 if d is None else d[1] for d in drops], np.float32), np.array(rescale),
        np.array(weights, np.float32), np.array([w != 1.0 for w in weights]),
        count_consensus, normalize, smallest > 0, np.float32(smallest), np.float32(lambda_), lambda_ != 1.0,
        np.array(kept_scales),
    )
    names = ("diff_sq", "ref_sq", "task_mass_total", "task_mass_kept")
    found = _call(kernel, args, base.numel(), out_dtype, want_metrics, names, rows=TIES_SCRATCH_ROWS + len(stored))
    if found is not None and want_metrics and not any(weights):
        del found[1]["task_mass_kept"]  # as in torch: only models with a weight add to it
    return found


def count_and_gather(
    values: "torch.Tensor", base: "torch.Tensor", lo: float, hi: float, capacity: int, *, wait: bool = True
) -> "tuple[int, np.ndarray] | None":
    """How many |values − base| (float32) are above ``hi`` and those inside [lo, hi], in
    order, for flat tensors as stored; ``None`` when the kernel cannot take them, is not
    ready and ``wait`` is false, or more than ``capacity`` are inside."""
    taken = kernel_inputs([values, base])
    if taken is None:
        return None
    dtype = base.dtype

    def warm(kernel: Callable[..., Any]) -> object:
        tiny, tiny_base = _tiny(dtype, 1)
        return _run_count(kernel, tiny[0], tiny_base, 0.0, 1.0, 4)

    kernel = _compiled("magnitude.count_and_gather", (taken[1],), warm, wait)
    return None if kernel is None else _run_count(kernel, values, base, lo, hi, capacity)


def _run_count(
    kernel: Callable[..., Any], values: "torch.Tensor", base: "torch.Tensor", lo: float, hi: float, capacity: int
) -> "tuple[int, np.ndarray] | None":
    import numpy as np

    taken = kernel_inputs([values, base])
    assert taken is not None
    (value_bits, base_bits), shift = taken
    out = np.empty(capacity, np.float32)
    counts = np.zeros(2, np.int64)
    kernel(value_bits, base_bits, shift, np.float32(max(lo, 0.0)), np.float32(hi), out, counts, scratch(2))
    above, written = int(counts[0]), int(counts[1])
    return None if written < 0 else (above, out[:written])


def task_sum_chunk(
    stored: "list[torch.Tensor]", base: "torch.Tensor", weights: "list[float]", *,
    lambda_: float, normalize: bool, out_dtype: "torch.dtype", want_metrics: bool, wait: bool = True,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """Task arithmetic of one flat chunk as stored (see :mod:`.task_sum`), like :func:`ties_chunk`."""
    taken = kernel_inputs([*stored, base])
    out_shift = shift_of(out_dtype)
    if taken is None or out_shift is None:
        return None
    dtype, n = base.dtype, len(stored)

    def warm(kernel: Callable[..., Any]) -> object:
        tiny, tiny_base = _tiny(dtype, n)
        return _run_task_sum(kernel, tiny, tiny_base, [1.0] * n, 1.0, True, out_dtype, True)

    kernel = _compiled("task_sum.task_sum_chunk", (n, taken[1], out_shift), warm, wait)
    if kernel is None:
        return None
    return _run_task_sum(kernel, stored, base, weights, lambda_, normalize, out_dtype, want_metrics)


def _run_task_sum(
    kernel: Callable[..., Any], stored: "list[torch.Tensor]", base: "torch.Tensor", weights: "list[float]",
    lambda_: float, normalize: bool, out_dtype: "torch.dtype", want_metrics: bool,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    import numpy as np

    taken = kernel_inputs([*stored, base])
    assert taken is not None
    bits, shift = taken
    divisor = float(sum(weights))
    args = (
        tuple(bits[:-1]), bits[-1], shift, np.array(weights, np.float32), np.float32(divisor),
        normalize and abs(divisor) >= 1e-8, np.float32(lambda_), lambda_ != 1.0,
    )
    return _call(kernel, args, base.numel(), out_dtype, want_metrics, ("diff_sq", "ref_sq"))


def sample_magnitudes(
    values: "torch.Tensor", base: "torch.Tensor", step: int, *, wait: bool = True
) -> "np.ndarray | None":
    """|values − base| in float32 at every ``step``-th entry of flat tensors as stored, or
    ``None`` when the kernel cannot take them or is not ready and ``wait`` is false (the
    same numbers as torch's strided copy)."""
    taken = kernel_inputs([values, base])
    if taken is None:
        return None
    dtype = base.dtype

    def warm(kernel: Callable[..., Any]) -> object:
        tiny, tiny_base = _tiny(dtype, 1)
        return _run_sample(kernel, tiny[0], tiny_base, 1)

    kernel = _compiled("magnitude.sample_magnitudes", (taken[1],), warm, wait)
    return None if kernel is None else _run_sample(kernel, values, base, step)


def _run_sample(kernel: Callable[..., Any], values: "torch.Tensor", base: "torch.Tensor", step: int) -> "np.ndarray":
    import numpy as np

    taken = kernel_inputs([values, base])
    assert taken is not None
    (value_bits, base_bits), shift = taken
    out = np.empty(len(range(0, values.numel(), step)), np.float32)
    kernel(value_bits, base_bits, shift, step, out)
    return out


def weighted_sum_chunk(
    stored: "list[torch.Tensor]", weights: "list[float]", divisor: float | None, *,
    out_dtype: "torch.dtype", want_metrics: bool, wait: bool = True,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    """Σ θᵢ·wᵢ (÷ ``divisor`` unless it is None) of one flat chunk as stored (see
    :mod:`.weighted_sum`), like :func:`ties_chunk`; the metrics measure against θ₀."""
    taken = kernel_inputs(list(stored))
    out_shift = shift_of(out_dtype)
    if taken is None or out_shift is None:
        return None
    dtype, n = stored[0].dtype, len(stored)

    def warm(kernel: Callable[..., Any]) -> object:
        tiny, _ = _tiny(dtype, n)
        return _run_weighted_sum(kernel, tiny, [1.0] * n, 2.0, out_dtype, True)

    kernel = _compiled("weighted_sum.weighted_sum_chunk", (n, taken[1], out_shift), warm, wait)
    if kernel is None:
        return None
    return _run_weighted_sum(kernel, stored, weights, divisor, out_dtype, want_metrics)


def _run_weighted_sum(
    kernel: Callable[..., Any], stored: "list[torch.Tensor]", weights: "list[float]", divisor: float | None,
    out_dtype: "torch.dtype", want_metrics: bool,
) -> "tuple[torch.Tensor, dict[str, float]] | None":
    import numpy as np

    taken = kernel_inputs(list(stored))
    assert taken is not None
    bits, shift = taken
    args = (tuple(bits), shift, np.array(weights, np.float32), np.float32(divisor or 1.0), divisor is not None)
    return _call(kernel, args, stored[0].numel(), out_dtype, want_metrics, ("diff_sq", "ref_sq"))
