"""Records the window's merges in the shared history and shows them in the History panel.

The panel is a dock (View ▸ History, Ctrl+H), hidden at first: the central tabs
already fill the width at 1024×768, and the history is looked at now and then.

Records are appended on a thread of their own, in order. Appending waits for the
file system, and right after a cancelled merge that is also deleting a
gigabyte-sized temporary file: on the GUI thread that froze the window for
110-500 ms in about one cancel in ten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDockWidget

from merge_studio.core.history import HistoryRecord, record_merge
from merge_studio.errors import MergeStudioError
from merge_studio.gui.views.history_panel import HistoryPanel

if TYPE_CHECKING:
    from merge_studio.core.engine import MergeResult
    from merge_studio.core.history import Status
    from merge_studio.core.recipe import Recipe
    from merge_studio.gui.main_window import MainWindow


class _Written(QObject):
    """Brings the outcome of a history write back to the GUI thread."""

    sig_written = Signal(str, bool)  # what was written ("merge", "evaluation"), and whether it was


class MergeHistory:
    """What the window merges goes into ``history.jsonl``; the History tab re-opens and loads from it."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self._recipe: Recipe | None = None
        self._started = 0.0
        self._writer: ThreadPoolExecutor | None = None  # one thread: records land in the order they were made
        self._pending: list[Future[Any]] = []
        self._written = _Written(window)
        self._written.sig_written.connect(self._on_written)
        panel = window.history_panel = HistoryPanel(window)
        panel.sig_open_recipe.connect(self._on_panel_open_recipe)
        panel.sig_load_output.connect(self._on_panel_load_output)
        dock = self.dock = QDockWidget("History", window)
        dock.setObjectName("history_dock")  # saveState() remembers where it was and whether it showed
        dock.setWidget(panel)
        dock.setAllowedAreas(Qt.DockWidgetArea.BottomDockWidgetArea | Qt.DockWidgetArea.RightDockWidgetArea
                             | Qt.DockWidgetArea.LeftDockWidgetArea)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        dock.dockLocationChanged.connect(self._on_dock_location_changed)
        dock.hide()
        self._sized = False
        toggle = dock.toggleViewAction()
        toggle.setText("&History")
        toggle.setShortcut(QKeySequence("Ctrl+H"))
        toggle.setStatusTip("Show or hide the merges recorded from the window and the command line")
        window.actions_by_name["history"] = toggle
        view_menu = next((a.menu() for a in window.menuBar().actions() if a.text() == "&View"), None)
        if view_menu is not None:
            view_menu.addSeparator()
            view_menu.addAction(toggle)

    def show(self) -> None:
        self.flush()  # what was just recorded is listed
        """Bring the History panel into view (read afresh)."""
        self.dock.show()
        self.dock.raise_()
        if not self._sized:  # a third of the height the first time; the user's own size after that
            self._sized = True
            self.window.resizeDocks([self.dock], [max(200, self.window.height() // 3)], Qt.Orientation.Vertical)
        self.window.history_panel.refresh()

    def started(self, recipe: Recipe) -> None:
        self._recipe, self._started = recipe, time.perf_counter()

    def finished(self, status: Status, *, result: MergeResult | None = None, error: str | None = None) -> None:
        recipe, self._recipe = self._recipe, None
        if recipe is None:
            return
        seconds = time.perf_counter() - self._started
        self._write("merge", lambda: record_merge(recipe, result=result, status=status, error=error, source="window",
                                                  seconds=seconds) is not None)

    def flush(self) -> None:
        """Wait until every record made so far is in the file."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.exception()  # waits; a failure was already reported through sig_written

    def _write(self, kind: str, write: Callable[[], bool]) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        future = self._writer.submit(write)
        self._pending = [f for f in self._pending if not f.done()] + [future]
        future.add_done_callback(lambda f: self._report(kind, f))

    def _report(self, kind: str, future: Future[bool]) -> None:
        """On the writing thread: hand the outcome to the GUI thread (queued)."""
        ok = future.exception() is None and bool(future.result())
        try:
            self._written.sig_written.emit(kind, ok)
        except RuntimeError:  # the window is gone; the record is in the file all the same
            pass

    def _on_written(self, kind: str, ok: bool) -> None:
        if kind == "merge" and not ok:
            self.window.log_panel.log("Could not add this merge to the history (is the data folder writable?)", "warning")
        if ok:
            self.window.history_panel.mark_stale()

    def on_scores(self, shown: object) -> None:
        """The Barrier tab evaluated models: their scores go to the merges that wrote them."""
        from merge_studio.core.history import add_evaluation, evaluation_results

        names, results = getattr(shown, "names", None), getattr(shown, "results", None)
        if not names or not isinstance(results, dict):
            return  # a barrier curve, or a failure
        barrier = self.window.extra_views.get("Barrier")
        combo = getattr(barrier, "data_source", None)
        data = None if combo is None else ("digits" if combo.currentData() == "digits" else combo.currentText())
        by_name = {m.name: m.path for m in self.window.session.models}
        found = [(by_name[n], evaluation_results(shown, i, data)) for i, n in enumerate(names) if n in by_name]
        if found:

            def add_all() -> bool:
                added = [add_evaluation(path, scores) for path, scores in found]  # every one, not up to the first
                return any(added)

            self._write("evaluation", add_all)

    def _on_dock_location_changed(self, area: Qt.DockWidgetArea) -> None:
        sideways = area in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
        self.window.history_panel.set_orientation(Qt.Orientation.Vertical if sideways else Qt.Orientation.Horizontal)

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
