"""Run core job generators on a QThread and report back through signals.

Every long job in the core is a generator that yields :class:`Progress` and
partial results and returns a result. ``JobWorker`` drives one such generator on
its own thread; ``JobRunner`` owns the threads so the window can start jobs
without caring about their lifetime, and can stop them all when it closes.

Cancel is a direct call (``worker.cancel()``) that sets a thread-safe token: a
queued slot on a busy worker would never run. The worker's signals are emitted
on the GUI thread, so slots of any kind (lambdas too) may touch widgets.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, QTimer, Signal, Slot

from merge_studio.core.progress import PROGRESS_INTERVAL_S, CancelToken, Progress
from merge_studio.gui import gc_guard
from merge_studio.gui.qt_compat import protect_none
from merge_studio.errors import Cancelled, describe_failure

JobFactory = Callable[[CancelToken], Generator[Any, None, Any]]
JOB_NICENESS = 5  # jobs run a little below the window, so a busy CPU still repaints it


@dataclass(frozen=True)
class JobError:
    """A failure, copied out of the worker thread as plain text."""

    type_name: str
    message: str
    traceback_text: str
    hint: str | None = None
    for_people: bool = False  # a MergeStudioError: the message alone says enough

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobError:
        failure = describe_failure(exc)
        return cls(failure["type_name"], failure["message"], failure["traceback"], failure["hint"], failure["for_people"])


def _lower_this_threads_priority() -> None:
    """Let the GUI thread win the CPU when a job competes with it (Linux: per-thread nice)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + JOB_NICENESS))
        except (OSError, AttributeError):
            pass


class _ThreadSide(QObject):
    """The part of a job that runs on the worker thread; it only emits into :class:`JobWorker`."""

    progress = Signal(object)
    partial = Signal(object)
    result = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    done = Signal()

    def __init__(self, factory: JobFactory, token: CancelToken) -> None:
        super().__init__()
        self._factory = factory
        self._token = token
        self.started_at: float | None = None

    @Slot()
    def run(self) -> None:
        """Iterate the job, sorting progress from partial results."""
        self.started_at = time.monotonic()
        _lower_this_threads_priority()
        last_emit = 0.0
        pending: Progress | None = None
        job = None
        try:
            if self._token.cancelled:
                raise Cancelled("cancelled before it started")
            job = self._factory(self._token)
            while True:
                try:
                    item = next(job)
                except StopIteration as stop:
                    if pending is not None:
                        self.progress.emit(pending)
                    self.result.emit(stop.value)
                    break
                if isinstance(item, Progress):
                    now = time.monotonic()
                    if now - last_emit >= PROGRESS_INTERVAL_S:
                        self.progress.emit(item)
                        last_emit, pending = now, None
                    else:
                        pending = item
                else:
                    self.partial.emit(item)
                if self._token.cancelled:
                    raise Cancelled("cancelled by the user")
        except Cancelled:
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure goes to the window
            if self._token.cancelled:
                self.cancelled.emit()
            else:
                self.failed.emit(JobError.from_exception(exc))
        finally:
            if job is not None:
                try:
                    job.close()  # runs the generator's finally blocks (files, temp outputs)
                except Exception:  # noqa: BLE001, S110 - cleanup must not mask the outcome
                    pass
            self.done.emit()


class JobWorker(QObject):
    """One job as the GUI sees it: its signals are emitted on the GUI thread.

    The generator runs on a worker thread (in a private object moved there); what
    it reports is relayed here through queued connections, so any slot, a lambda
    included, runs on the GUI thread and may touch widgets. ``sig_done`` is
    always the last signal.
    """

    sig_progress = Signal(object)
    """A :class:`Progress`, at most about 20 times a second (the last one always)."""
    sig_partial = Signal(object)
    """Anything else the job yields (a loaded checkpoint, a barrier point...)."""
    sig_result = Signal(object)
    """The generator's return value."""
    sig_failed = Signal(object)
    """A :class:`JobError`."""
    sig_cancelled = Signal()
    """The job stopped because :meth:`cancel` was called."""
    sig_done = Signal()
    """Always emitted last."""

    def __init__(self, factory: JobFactory, name: str = "job") -> None:
        super().__init__()
        self.name = name
        self.token = CancelToken()
        self.finished = False
        self.thread_side = _ThreadSide(factory, self.token)
        side = self.thread_side
        side.progress.connect(self._on_side_progress)
        side.partial.connect(self._on_side_partial)
        side.result.connect(self._on_side_result)
        side.failed.connect(self._on_side_failed)
        side.cancelled.connect(self._on_side_cancelled)
        side.done.connect(self._on_side_done)

    def cancel(self) -> None:
        """Ask the job to stop at its next check. Safe to call from any thread."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    @property
    def started_at(self) -> float | None:
        """``time.monotonic()`` when the generator started, ``None`` before."""
        return self.thread_side.started_at

    @Slot(object)
    def _on_side_progress(self, progress: object) -> None:
        self.sig_progress.emit(progress)

    @Slot(object)
    def _on_side_partial(self, item: object) -> None:
        self.sig_partial.emit(item)

    @Slot(object)
    def _on_side_result(self, value: object) -> None:
        self.sig_result.emit(value)

    @Slot(object)
    def _on_side_failed(self, error: object) -> None:
        self.sig_failed.emit(error)

    @Slot()
    def _on_side_cancelled(self) -> None:
        self.sig_cancelled.emit()

    @Slot()
    def _on_side_done(self) -> None:
        self.finished = True
        self.sig_done.emit()


class _JobHandle(QObject):
    """Lives on the GUI thread and hears its job's thread finish (queued), without ``sender()``."""

    def __init__(self, runner: JobRunner, worker: JobWorker, thread: QThread) -> None:
        super().__init__(runner)
        self.runner = runner
        self.worker = worker
        self.thread = thread

    @Slot()
    def on_thread_finished(self) -> None:
        self.runner._finish(self)


class JobRunner(QObject):
    """Starts each job on its own QThread and keeps it alive until it finishes."""

    sig_started = Signal(object)
    """A :class:`JobWorker` that just started."""
    sig_finished = Signal(object)
    """A :class:`JobWorker` whose thread has finished."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        protect_none()  # emitting signals must not wear True out (see qt_compat)
        gc_guard.install()  # cycles holding Qt objects must never be freed on a worker thread
        self._jobs: dict[JobWorker, _JobHandle] = {}
        self._pending: set[QThread] = set()  # created, waiting for the event loop to start them
        self._retired: list[_JobHandle] = []
        # Real child timers, not QTimer.singleShot: they die with the runner and never fire into a freed object.
        self._start_timer = self._zero_timer(self._start_pending)
        self._release_timer = self._zero_timer(self._release_retired)

    def _zero_timer(self, slot) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(0)
        timer.timeout.connect(slot)
        return timer

    def start(self, job_factory: JobFactory, name: str = "job") -> JobWorker:
        """Run ``job_factory(cancel_token)`` on a new thread; connect to the worker's signals.

        The thread starts when control returns to the event loop, so signals
        connected right after this call never miss an early emission.
        """
        worker = JobWorker(job_factory, name)
        thread = QThread()
        thread.setObjectName(f"merge-studio-{name}")
        side = worker.thread_side
        side.moveToThread(thread)
        handle = _JobHandle(self, worker, thread)
        thread.started.connect(side.run)
        # Direct: QThread.quit is thread-safe, and shutdown() can then wait without an event loop.
        side.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(handle.on_thread_finished)  # queued to the GUI thread
        self._jobs[worker] = handle
        gc_guard.job_started()
        self._pending.add(thread)
        self._start_timer.start()
        self.sig_started.emit(worker)
        return worker

    def _start_pending(self) -> None:
        for thread in list(self._pending):
            self._start_thread(thread)

    def _start_thread(self, thread: QThread) -> None:
        if thread in self._pending:
            self._pending.discard(thread)
            thread.start()

    def _finish(self, handle: _JobHandle) -> None:
        """Forget a job whose thread has ended (once, from its queued signal or from shutdown)."""
        if self._jobs.get(handle.worker) is not handle:
            return
        del self._jobs[handle.worker]
        gc_guard.job_finished()
        handle.thread.wait()
        # Freed a turn of the event loop later: this may run inside the handle's own slot.
        self._retired.append(handle)
        self._release_timer.start()
        self.sig_finished.emit(handle.worker)

    def _release_retired(self) -> None:
        retired, self._retired = self._retired, []
        for handle in retired:
            handle.setParent(None)  # Python deletes it (and its finished QThread) with the last reference

    def running(self) -> list[JobWorker]:
        """Workers whose threads have not finished yet."""
        return list(self._jobs)

    def is_running(self, name: str) -> bool:
        return any(w.name == name for w in self._jobs)

    def cancel_all(self) -> None:
        for worker in list(self._jobs):
            worker.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel every job and wait for the threads; ``False`` if one would not stop."""
        self.cancel_all()
        for thread in list(self._pending):  # cancelled before they began: let them finish at once
            self._start_thread(thread)
        ok = True
        for handle in list(self._jobs.values()):
            if handle.thread.wait(timeout_ms):
                QCoreApplication.sendPostedEvents(handle.worker)  # deliver its last signals (sig_done)
                self._finish(handle)
            else:
                ok = False
        return ok
