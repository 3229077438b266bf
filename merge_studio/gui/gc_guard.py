"""Run Python's cyclic garbage collector on the GUI thread only.

Python collects cycles in whichever thread happens to allocate when a
threshold is crossed. With jobs on worker threads that is often a worker, and a
Qt object collected there (a window whose slots are lambdas over ``self``, a
timer) is destroyed from the wrong thread: its timers stay registered with the
GUI thread's dispatcher ("Timers cannot be stopped from another thread") and
later fire into freed memory. The usual cure in Qt applications (pyqtgraph
ships the same idea) is to turn automatic collection off and collect from a
timer on the GUI thread, which is what :func:`install` does.

A full collection walks every object the interpreter tracks (hundreds of
thousands once torch and matplotlib are loaded) and stalls the window for
0.3-1.5 s on a busy two-core machine. While a job runs (:func:`job_started` /
:func:`job_finished`) the youngest generation is collected every 100 ms, so that
each collection is small, and the middle one at most every 5 s. The oldest waits
until the window is idle again, and quiet: for :data:`QUIET_AFTER_JOB_S` after a
job ends, its results arrive, panels refresh and its threads wind down, and a full
collection at that moment (30-60 ms) added to that work. And once the window is
built (:func:`settle`), what exists then (modules, classes, the window's widgets:
about 280,000 objects once torch and matplotlib are in) is frozen out of the
collector's sight, so a later full collection takes about 5 ms instead of 150; a
library loaded later (numba) is frozen the same way once nothing runs
(:func:`freeze_when_idle`).
"""

from __future__ import annotations

import gc
import time

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

INTERVAL_MS = 100
MIDDLE_EVERY_S = 5.0  # during a job, the middle generation is collected at most this often
QUIET_AFTER_JOB_S = 2.0  # the oldest generation (and a re-freeze) waits this long after a job ends
_jobs_running = 0
_last_job_end = float("-inf")  # time.monotonic() when a job last finished
_settled = False
_refreeze = False  # something big was imported after settle(): freeze again once nothing runs


def job_started() -> None:
    """A job began: full collections wait until every job has finished."""
    global _jobs_running
    _jobs_running += 1


def job_finished() -> None:
    global _jobs_running, _last_job_end
    _jobs_running = max(0, _jobs_running - 1)
    _last_job_end = time.monotonic()


def _busy() -> bool:
    """A job runs, or one ended moments ago (its results are still being shown)."""
    return bool(_jobs_running) or time.monotonic() - _last_job_end < QUIET_AFTER_JOB_S


class GuiThreadCollector(QObject):
    """Collects each generation when its counter passes the interpreter's threshold."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self._middle_at = time.monotonic()
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.check)
        self.timer.start()
        gc.disable()

    def check(self) -> int:
        """Collect the oldest generation whose count passed its threshold; returns objects freed."""
        global _refreeze
        busy = _busy()
        if _refreeze and not busy:
            _refreeze = False
            freed = gc.collect()
            gc.freeze()
            return freed
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                if busy:
                    # mostly what was made since the last look: a job that imports a library (numba
                    # at a first merge: 30,000 objects) made each older collection take 20-30 ms;
                    # the middle generation now and then, so a long job's cycles are still freed
                    now = time.monotonic()
                    generation = 1 if now - self._middle_at >= MIDDLE_EVERY_S else 0
                    if generation == 1:
                        self._middle_at = now
                return gc.collect(generation)
        return 0


def settle() -> None:
    """Freeze what the app has built so far (once a process): it lives as long as the app does.

    Frozen objects are never walked by a collection again, and so never freed by one: call it
    when the window is built and before the user's models and results pile up.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()


def freeze_when_idle() -> None:
    """A library was loaded after :func:`settle` (numba, ahead of the first merge): the collector
    freezes again, on the GUI thread, at its next look while no job runs. Safe from any thread."""
    global _refreeze
    _refreeze = True


_collector: GuiThreadCollector | None = None


def install() -> GuiThreadCollector | None:
    """Start collecting on the GUI thread (once; needs the application object)."""
    global _collector
    app = QCoreApplication.instance()
    if _collector is not None or app is None or QThread.currentThread() is not app.thread():
        return _collector
    _collector = GuiThreadCollector(app)
    return _collector


def uninstall() -> None:
    """Give collection back to the interpreter (for test suites that go on without Qt)."""
    global _collector
    if _collector is not None:
        _collector.timer.stop()
        _collector.deleteLater()
        _collector = None
        gc.enable()
        gc.collect()
