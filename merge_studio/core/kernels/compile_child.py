"""Compile one kernel for one set of argument types, in a process of its own.

LLVM holds the GIL through most of a compile (up to 150 ms at a time), which froze the
window and stalled merge workers when kernels were compiled on a thread. This process
compiles instead and leaves the machine code in numba's on-disk cache; the parent then
only loads it. It reads ``(kernel name, arguments)`` pickled on stdin, from the parent.
"""

from __future__ import annotations

import importlib
import pickle
import sys


def main() -> int:
    name, args = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - written by our own parent process
    module, function = name.rsplit(".", 1)
    kernel = getattr(importlib.import_module(f"merge_studio.core.kernels.{module}"), function)
    kernel(*args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
