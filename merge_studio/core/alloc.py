"""Keep freed chunk buffers in the process instead of handing them back to the kernel.

A streaming merge allocates and frees the same few megabyte-sized buffers for every
chunk. glibc serves blocks that large with fresh ``mmap`` calls (or trims them off
the heap when freed), so each chunk paid for ~1,000 page faults and zeroed pages:
a third of a 2 × 2.2 GB average's time went to the kernel. Raising glibc's mmap and
trim thresholds makes the buffers be reused. Memory held this way is bounded by the
largest working set the merge ever had, which is small by design.

Threads started after this share the main heap (one arena): glibc gives each new thread
a heap of its own, at most 64 MB, and removes such a heap, returning its pages, whenever
it empties. A worker that reads a whole 23 MB tensor for TIES's statistics emptied one
every few tensors, so most of those reads landed in fresh pages the kernel had to zero
(a quarter of a TIES merge's CPU time). Small blocks still come from each thread's cache.

numpy is asked not to back its large arrays (the read buffers) with transparent huge pages:
a 2 MB page is zeroed whole on first touch, and as the heap grew and shrank under TIES's
whole-tensor reads the kernel zeroed gigabytes that way (TIES on 3 × 2.2 GB: 4.4-4.9 s
and 7.7-8.2 CPU-s without, 6.4-6.6 s and 10.3 CPU-s with).

Other C libraries (musl, macOS, Windows) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks up to this size come from the heap and are reused; larger ones (a whole
# embedding matrix in float32) still get their own mapping and are returned at once.
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 128 << 20

_done = False


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for chunk reuse (once per process); False where it is not glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl has no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _no_huge_pages_for_numpy()
    _done = (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        and bool(mallopt(_M_ARENA_MAX, 1))
    )
    return _done


def _no_huge_pages_for_numpy() -> None:
    import numpy

    core = getattr(numpy, "_core", None) or getattr(numpy, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)  # private: may go away
    if switch is not None:
        switch(False)
