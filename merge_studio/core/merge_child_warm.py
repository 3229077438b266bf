"""Imported once by the merge fork server, so every merge's process starts warm.

The server imports this module and then forks a child per merge: torch, the engine,
the methods and (when numba is there) LLVM are already loaded in each child, which
saves about two seconds a merge. Nothing here starts a thread or runs a parallel torch
operation: a thread pool started before a fork would be missing, or locked, in the child.
"""

from __future__ import annotations

import merge_studio.core.engine  # noqa: F401 - loaded for the children
import merge_studio.core.estimate  # noqa: F401
import merge_studio.core.methods  # noqa: F401
from merge_studio.core import kernels

kernels.prepare()  # numba and LLVM, one single-threaded kernel call; a no-op without numba
