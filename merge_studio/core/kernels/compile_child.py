"""Compile one kernel for one set of argument types, in a process of its own.

LLVM holds the GIL through most of a compile (up to 150 ms at a time), which froze the
window and stalled merge workers when kernels were compiled on a thread. This process
compiles instead and leaves the machine code in numba's on-disk cache; the parent then
only loads it. It also keeps the kernel as object code that later processes load without
numba (see :mod:`.native`). It reads ``(kernel name, arguments)`` pickled on stdin, from the parent.
"""

from __future__ import annotations

import importlib
import pickle
import sys

from merge_studio.core.kernels import native


def main() -> int:
    payload = sys.stdin.buffer.read()
    name, args = pickle.loads(payload)  # noqa: S301 - written by our own parent process
    module, function = name.rsplit(".", 1)
    kernel = getattr(importlib.import_module(f"merge_studio.core.kernels.{module}"), function)
    wanted = native.wanted(name, args)
    result = kernel(*args)
    if wanted:
        try:  # numba's cache is filled whatever happens here
            _, untouched = pickle.loads(payload)  # noqa: S301 - the same bytes, before the call changed them
            native.build_and_keep(name, untouched, native.digest_of(args), result is not None)
        except Exception as exc:  # noqa: BLE001 - numba's path still works
            print(f"kernel {name}: no object code kept ({exc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
