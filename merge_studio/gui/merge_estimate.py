"""The estimate under the Merge button: output size, free space, memory and time, kept current.

Sizing plans the merge (every input's header is read), so it runs as a job off the
GUI thread, a moment after the last edit; :mod:`merge_studio.core.estimate` does the
work and says how rough each figure is.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QLabel

from merge_studio.core.progress import Progress
from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    from merge_studio.core.estimate import MergeEstimate
    from merge_studio.core.recipe import Recipe
    from merge_studio.gui.main_window import MainWindow

DELAY_MS = 400


def _estimate_job(recipe: Recipe, threads: int | None):  # noqa: ANN202 - a job factory
    def job(_cancel: Any) -> Generator[Any, None, MergeEstimate]:
        from merge_studio.core.estimate import estimate_merge

        yield Progress("estimate", 0, None, message="estimating the output")
        return estimate_merge(recipe, threads=threads)

    return job


class MergeEstimateLabel(QObject):
    """Owns the label above the Merge button and the debounced job that fills it."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.label = QLabel(window.method_panel)
        self.label.setObjectName("muted")  # secondary to the problems above it and the button below
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setVisible(False)
        footer = window.method_panel.footer
        footer.insertWidget(footer.count() - 1, self.label)
        self.estimate: MergeEstimate | None = None
        self._running = False
        self._again = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        window.method_panel.sig_changed.connect(self.schedule)
        window.method_panel.sig_method_changed.connect(self.schedule)
        window.sig_models_loaded.connect(self.schedule)
        window.table_model.sig_params_edited.connect(self.schedule)

    def schedule(self, *_args: object) -> None:
        self._timer.start()

    def _recipe(self) -> Recipe | None:
        window = self.window
        if window.merge_worker is not None or window.session.loading or not window.session.ready_models:
            return None
        form = window.method_panel.form
        if form is not None:
            if not form.is_valid():
                return None
            window.session.set_params(form.values())
        try:
            return window.session.to_recipe()
        except MergeStudioError:
            return None

    def refusal(self, recipe: Recipe) -> MergeStudioError | None:
        """Why ``recipe`` cannot be merged, when the estimate shown is current and says it cannot fit."""
        estimate = self.estimate
        if estimate is None or estimate.fits or self._running or self._timer.isActive():
            return None
        from merge_studio.core.estimate import require_space
        from merge_studio.core.overwrite import merge_targets

        if tuple(merge_targets(recipe)) != tuple(estimate.outputs):
            return None  # made for another output: the merge checks again itself
        try:
            require_space(estimate)
        except MergeStudioError as exc:
            return exc
        return None

    def refresh(self) -> None:
        """Start an estimate for what the window shows now (once the running one is done)."""
        if self._running:
            self._again = True
            return
        recipe = self._recipe()
        if recipe is None:
            self.estimate = None
            self.label.setVisible(False)
            return
        self._running = True
        threads = self.window.settings.merge_threads or None
        worker = self.window.runner.start(_estimate_job(recipe, threads), "estimate")
        worker.sig_result.connect(self._on_worker_result)
        worker.sig_failed.connect(self._on_worker_failed)
        worker.sig_done.connect(self._on_worker_done)

    def _on_worker_result(self, estimate: MergeEstimate) -> None:
        from merge_studio.core.estimate import human

        self.estimate = estimate
        if estimate.fits:
            self.label.setText(estimate.summary())
            self.label.setStyleSheet("")
        else:
            self.label.setText(f"Not enough disk space: the output needs {human(estimate.output_bytes)}, "
                               f"{human(estimate.free_bytes or 0)} free")
            self.label.setStyleSheet("color: #c0392b;")
        self.label.setToolTip("\n".join(estimate.lines()))
        self.label.setVisible(True)

    def _on_worker_failed(self, _error: object) -> None:
        self.estimate = None  # the merge itself reports what is wrong, in full
        self.label.setVisible(False)

    def _on_worker_done(self) -> None:
        self._running = False
        if self._again:
            self._again = False
            self.schedule()
