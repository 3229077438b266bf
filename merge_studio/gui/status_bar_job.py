"""One job at a time, reported in the status bar: the plumbing the LoRA and MoE commands share.

A command starts a core generator here; its progress and Cancel live in the
status bar, a cancelled job says that nothing was written, a failure opens the
window's error dialog, and a second start while one runs is refused with a log line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject

from merge_studio.gui.workers import JobError, JobWorker

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow


class StatusBarJob(QObject):
    """Runs one job of a kind (``"lora"``, ``"moe"``) on the window's runner, with status-bar progress."""

    def __init__(self, window: MainWindow, kind: str, *, busy: str, failure: str) -> None:
        super().__init__(window)
        self.window = window
        self.kind = kind
        self.busy = busy  # logged when a second job is asked for while one runs
        self.failure = failure  # the error dialog's title
        self.worker: JobWorker | None = None
        window.job_status.sig_cancel_requested.connect(self.cancel)

    def start(self, job: Any, title: str, on_result: Callable[[Any], None], *, note: str = "") -> JobWorker | None:
        """Start ``job`` (a factory taking a CancelToken); None when one is already running."""
        if self.worker is not None:
            self.window.log_panel.log(self.busy, "warning")
            return None
        worker = self.window.runner.start(job, self.kind)
        worker.sig_progress.connect(self.window.job_status.update_progress)
        worker.sig_result.connect(on_result)
        worker.sig_failed.connect(self._on_failed)
        worker.sig_cancelled.connect(lambda: self.window.log_panel.log(f"{title} cancelled; nothing was written", "warning"))
        worker.sig_done.connect(self._on_done)
        self.worker = worker
        self.window.job_status.start(title)
        self.window.log_panel.log(f"{title}{note}…")
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _on_failed(self, error: JobError) -> None:
        self.window.show_error(error, self.failure)

    def _on_done(self) -> None:
        self.worker = None
        self.window.job_status.finish("Done")
