"""Numba and LLVM loaded on a thread once the window is built, before a merge needs them.

Loading them during the first merge cost that merge 0.7 s of CPU and gave the window
garbage collections of 20-30 ms (numba's 30,000 new objects) and, once the merge was
done, a full collection of 150-300 ms. Loaded at start-up, their objects are frozen
out of collection (see :mod:`gc_guard`) before any job runs.

The merges that write files run in processes of their own (:mod:`merge_process`); their
fork server is started from here too, so the first merge does not wait for its imports.
Numba is still loaded here for the merges the window computes in memory (Evaluate, Barrier).
"""

from __future__ import annotations

import threading

from merge_studio.gui import gc_guard

_started = False


def start() -> None:
    """Begin loading the compiled kernels on a thread (once a process; no-op without numba)."""
    global _started
    if _started:
        return
    _started = True
    # not a daemon: leaving the app waits for the load instead of killing it inside LLVM
    threading.Thread(target=_prepare, name="kernel-prepare").start()


def _prepare() -> None:
    from merge_studio.core import kernels, merge_process

    if merge_process.enabled():
        merge_process.prewarm()  # the merges' fork server loads torch and the engine in its own process

    if not kernels.available():
        return
    kernels.prepare()
    gc_guard.freeze_when_idle()
