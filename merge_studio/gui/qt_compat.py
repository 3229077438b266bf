"""Work-arounds for bugs in the Qt binding that would otherwise crash the window.

PySide6 6.12.0 (abi3 wheels) on Python 3.11 drops one reference to ``None``
every time a Qt method that returns ``void`` is called from Python
(``widget.resize(...)``, ``app.processEvents()``...), and one reference to
``True`` every time a signal is emitted from Python (``emit`` returns ``True``).
Python 3.12 made these singletons immortal, so it is harmless there; on 3.11
their counts reach zero after some thousands of calls and the interpreter
aborts ("none_dealloc", "bool_dealloc") or, once ``True`` has been freed,
crashes anywhere. A merge reporting progress gets there in minutes.

:func:`protect_none` probes for the leaks and, only where one is found, raises
the singletons' reference counts far out of reach (what 3.12 does by design).
Where the binding is fixed, the probes find nothing and nothing is changed.
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


def emit_leaks_true() -> bool:
    """Whether emitting a signal from Python loses a reference to ``True``."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        sig_probe = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(20):
        probe.sig_probe.emit()
    return sys.getrefcount(True) < before - 10


def protect_none() -> bool:
    """Apply the work-around when needed; returns whether it was applied (once per process)."""
    global _done
    if _done:
        return False
    _done = True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    if not (void_call_leaks_none() or emit_leaks_true()):
        return False
    for singleton in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(singleton))  # ob_refcnt is the first field of every object
        refcount.value += HEADROOM
    return True
