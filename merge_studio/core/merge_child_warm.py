"""Imported once by the merge fork server, so every merge's process starts warm.

The server imports this module and then forks a child per merge: torch, the engine,
the methods and (when numba is there) LLVM are already loaded in each child, which
saves about two seconds a merge. Nothing here starts a thread or runs a parallel torch
operation: a thread pool started before a fork would be missing, or locked, in the child.
"""

from __future__ import annotations

import importlib
import os

try:  # the imports below take seconds of CPU: the window, starting up beside them, comes first
    os.nice(19)
except (OSError, AttributeError):
    pass

import merge_studio.core.engine  # loaded for the children
import merge_studio.core.estimate
import merge_studio.core.history
import merge_studio.core.lora.files  # an input is asked whether it is an adapter
import merge_studio.core.naming.sd
import merge_studio.core.overwrite  # noqa: F401 - the output check
from merge_studio.core import kernels
from merge_studio.core.methods import list_methods

list_methods()  # every method's module: a merge looks its method up among all of them
if kernels.available():
    for _kernel in ("weighted_sum", "task_sum", "ties", "magnitude"):
        importlib.import_module(f"merge_studio.core.kernels.{_kernel}")
kernels.prepare()  # numba and LLVM, one single-threaded kernel call; a no-op without numba
