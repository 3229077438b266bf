"""Run core job generators on a QThread and report back through signals.

Every long job in the core is a generator that yields :class:`Progress` and
partial results and returns a result. ``JobWorker`` drives one such generator on
its own thread; ``JobRunner`` owns the threads so the window can start jobs
without caring about their lifetime, and can stop them all when it closes.

Cancel is a direct call (``worker.cancel()``) that sets a thread-safe token: a
queued slot on a busy worker would never run.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import Cancelled, MergeStudioError

JobFactory = Callable[[CancelToken], Generator[Any, None, Any]]
PROGRESS_INTERVAL_S = 0.05  # ~20 Hz: enough for a smooth bar, few enough to keep the GUI idle


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
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        hint = exc.hint if isinstance(exc, MergeStudioError) else None
        message = exc.message if isinstance(exc, MergeStudioError) else (str(exc) or type(exc).__name__)
        return cls(type(exc).__name__, message, text, hint, isinstance(exc, MergeStudioError))


class JobWorker(QObject):
    """Drives one job generator; emits ``sig_done`` last, whatever happened."""

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
    """Always emitted last; the thread quits on it."""

    def __init__(self, factory: JobFactory, name: str = "job") -> None:
        super().__init__()
        self._factory = factory
        self.name = name
        self.token = CancelToken()
        self.started_at: float | None = None
        self.finished = False

    def cancel(self) -> None:
        """Ask the job to stop at its next check. Safe to call from any thread."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    @Slot()
    def run(self) -> None:
        """Iterate the job, sorting progress from partial results."""
        self.started_at = time.monotonic()
        last_emit = 0.0
        pending: Progress | None = None
        job = None
        try:
            if self.token.cancelled:
                raise Cancelled("cancelled before it started")
            job = self._factory(self.token)
            while True:
                try:
                    item = next(job)
                except StopIteration as stop:
                    if pending is not None:
                        self.sig_progress.emit(pending)
                    self.sig_result.emit(stop.value)
                    break
                if isinstance(item, Progress):
                    now = time.monotonic()
                    if now - last_emit >= PROGRESS_INTERVAL_S:
                        self.sig_progress.emit(item)
                        last_emit, pending = now, None
                    else:
                        pending = item
                else:
                    self.sig_partial.emit(item)
                if self.token.cancelled:
                    raise Cancelled("cancelled by the user")
        except Cancelled:
            self.sig_cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - every failure goes to the window
            if self.token.cancelled:
                self.sig_cancelled.emit()
            else:
                self.sig_failed.emit(JobError.from_exception(exc))
        finally:
            if job is not None:
                try:
                    job.close()  # runs the generator's finally blocks (files, temp outputs)
                except Exception:  # noqa: BLE001, S110 - cleanup must not mask the outcome
                    pass
            self.finished = True
            self.sig_done.emit()


class JobRunner(QObject):
    """Starts each job on its own QThread and keeps it alive until it finishes."""

    sig_started = Signal(object)
    """A :class:`JobWorker` that just started."""
    sig_finished = Signal(object)
    """A :class:`JobWorker` whose thread has finished."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: dict[JobWorker, QThread] = {}
        self._pending: set[QThread] = set()  # created, waiting for the event loop to start them

    def start(self, job_factory: JobFactory, name: str = "job") -> JobWorker:
        """Run ``job_factory(cancel_token)`` on a new thread; connect to the worker's signals.

        The thread starts when control returns to the event loop, so signals
        connected right after this call never miss an early emission.
        """
        worker = JobWorker(job_factory, name)
        thread = QThread(self)
        thread.setObjectName(f"merge-studio-{name}")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: QThread.quit is thread-safe, and shutdown() can then wait without an event loop.
        worker.sig_done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)  # queued to this (GUI) thread
        self._jobs[worker] = thread
        self._pending.add(thread)
        QTimer.singleShot(0, self, lambda t=thread: self._start_thread(t))
        self.sig_started.emit(worker)
        return worker

    def _start_thread(self, thread: QThread) -> None:
        if thread in self._pending:
            self._pending.discard(thread)
            thread.start()

    @Slot()
    def _on_thread_finished(self) -> None:
        thread = self.sender()
        worker = next((w for w, t in self._jobs.items() if t is thread), None)
        if worker is None:  # already collected by shutdown()
            return
        del self._jobs[worker]
        thread.wait()
        thread.deleteLater()
        self.sig_finished.emit(worker)

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
        for worker, thread in list(self._jobs.items()):
            if not thread.wait(timeout_ms):
                ok = False
                continue
            self._jobs.pop(worker, None)
            thread.deleteLater()
        return ok
