"""Work-arounds for bugs in the Qt binding that would otherwise crash the window.

PySide6 6.12.0 (abi3 wheels) on Python 3.11 drops one reference to ``None``
every time a Qt method that returns ``void`` is called from Python
(``widget.resize(...)``, ``app.processEvents()``...). Python 3.12 made ``None``
immortal, so it is harmless there; on 3.11 ``None``'s count reaches zero after
some tens of thousands of calls and the interpreter aborts with
"none_dealloc: deallocating None". A long merge with a progress bar gets there
in minutes.

:func:`protect_none` probes for the leak and, only where it is found, raises
``None``'s reference count far out of reach (what 3.12 does by design). Where
the binding is fixed, the probe finds nothing and nothing is changed.
"""

from __future__ import annotations

import ctypes
import sys

HEADROOM = 1 << 40  # ~10^12 leaked calls before trouble: years of use
_done = False


def void_call_leaks_none() -> bool:
    """Whether calling a ``void`` Qt method loses a reference to ``None``."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(20):
        probe.setObjectName("probe")
    return sys.getrefcount(None) < before - 10


def protect_none() -> bool:
    """Apply the work-around when needed; returns whether it was applied (once per process)."""
    global _done
    if _done:
        return False
    _done = True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython" or not void_call_leaks_none():
        return False
    refcount = ctypes.c_ssize_t.from_address(id(None))  # ob_refcnt is the first field of every object
    refcount.value += HEADROOM
    return True
