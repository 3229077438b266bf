"""Mixture-of-experts assembly in the window: Merge ▸ Assemble mixture of experts….

Opens :class:`~merge_studio.gui.dialogs.moe_dialog.MoeDialog` pre-filled from the
model list (the base model as base, the other models as experts), runs the core job
on the window's job runner with progress and Cancel in the status bar, logs what was
written and opens the new folder in the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QDialog

from merge_studio.gui.lora_actions import free_path
from merge_studio.gui.status_bar_job import StatusBarJob
from merge_studio.gui.workers import JobWorker

if TYPE_CHECKING:
    from merge_studio.gui.dialogs.moe_dialog import MoeDialog, MoeRequest
    from merge_studio.gui.main_window import MainWindow

TITLE = "Assembling a mixture of experts"


class MoeActions(QObject):
    """The window's MoE command (kept out of the window module)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.jobs = StatusBarJob(window, "moe", busy="A mixture of experts is already being assembled",
                                 failure="The mixture of experts could not be assembled")
        self.last_result: Any = None

    @property
    def worker(self) -> JobWorker | None:
        """The running assembly, if any."""
        return self.jobs.worker

    def dialog(self) -> MoeDialog:
        """The dialog, filled from the model list (its module is imported only now: start-up stays fast)."""
        from merge_studio.gui.dialogs.moe_dialog import MoeDialog

        session = self.window.session
        models = [m for m in session.ready_models if not m.is_adapter]
        base = session.base if session.base is not None and not session.base.is_adapter else None
        if base is None and models:
            base = models[0]
        experts = [m.path for m in models if base is None or m.id != base.id]
        start = base.path.parent if base is not None else Path.home()
        output = free_path(start / f"{base.path.name if base else 'model'}-moe")
        return MoeDialog([(m.path, m.name) for m in models], output, self.window,
                         base=base.path if base is not None else None, experts=experts)

    def ask(self) -> None:
        dialog = self.dialog()
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.run(dialog.request())

    def run(self, request: MoeRequest) -> JobWorker | None:
        from merge_studio.core.moe.build import iter_build_moe

        def job(token):  # noqa: ANN001, ANN202 - a CancelToken, a generator
            return iter_build_moe(request.config, request.output, device="cpu", cancel=token)

        return self.jobs.start(job, TITLE, self._on_worker_result, note=f" ({request.config.gate_mode} routers)")

    def _on_worker_result(self, result: Any) -> None:
        self.last_result = result
        log = self.window.log_panel
        log.log(f"Wrote a {result.architecture} of {result.experts} experts ({result.experts_per_token} per token, "
                f"{result.layers} layers, routers from {result.gate_mode}) to {result.path}", "ok",
                folder=result.path)
        for note in result.notes:
            log.log(note, "warning")
        self.window.open_paths([result.path])
