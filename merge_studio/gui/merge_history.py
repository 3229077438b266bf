"""Records the window's merges in the shared history and keeps the History tab in step."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from merge_studio.core.history import HistoryRecord, record_merge
from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    from merge_studio.core.engine import MergeResult
    from merge_studio.core.history import Status
    from merge_studio.core.recipe import Recipe
    from merge_studio.gui.main_window import MainWindow


class MergeHistory:
    """What the window merges goes into ``history.jsonl``; the History tab re-opens and loads from it."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self._recipe: Recipe | None = None
        self._started = 0.0
        panel = window.history_panel
        panel.sig_open_recipe.connect(self._on_panel_open_recipe)
        panel.sig_load_output.connect(self._on_panel_load_output)

    def started(self, recipe: Recipe) -> None:
        self._recipe, self._started = recipe, time.perf_counter()

    def finished(self, status: Status, *, result: MergeResult | None = None, error: str | None = None) -> None:
        recipe, self._recipe = self._recipe, None
        if recipe is None:
            return
        record = record_merge(recipe, result=result, status=status, error=error, source="window",
                              seconds=time.perf_counter() - self._started)
        if record is None:
            self.window.log_panel.log("Could not add this merge to the history (is the data folder writable?)", "warning")
        self.window.history_panel.mark_stale()

    def _on_panel_open_recipe(self, record: HistoryRecord) -> None:
        try:
            recipe = record.load_recipe()
        except MergeStudioError as exc:
            self.window.log_panel.log(f"Cannot re-open that merge's recipe: {exc}", "error")
            return
        self.window.apply_recipe(recipe, None, f"the recipe of the {record.when} merge")

    def _on_panel_load_output(self, paths: list) -> None:
        if paths:
            self.window.open_paths(paths)
            self.window.show_tab("Inspector")
