"""The main window: assembles the panels and connects them to the session and the job runner.

It holds no merge logic: models load through :mod:`merge_studio.gui.loading`,
merges run ``iter_merge`` on a :class:`JobRunner`, and recipes come from the
:class:`Session`. The menus live in :mod:`merge_studio.gui.menus`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.device import describe_device
from merge_studio.core.engine import MergeResult, iter_merge
from merge_studio.core.progress import Progress
from merge_studio.core.recipe import load_recipe
from merge_studio.errors import MergeStudioError
from merge_studio.gui.compat import check_models
from merge_studio.gui.dialogs.error_dialog import ErrorDialog
from merge_studio.gui.loading import Loaded, LoadFailed, load_checkpoints
from merge_studio.gui.menus import build_menus
from merge_studio.gui.qt_compat import protect_none
from merge_studio.gui.resources import icon
from merge_studio.gui.session import Session
from merge_studio.gui.settings import AppSettings
from merge_studio.gui.views.checkpoint_list import CheckpointList, paths_from_mime
from merge_studio.gui.views.checkpoint_model import CheckpointTableModel
from merge_studio.gui.views.empty_state import EmptyState
from merge_studio.gui.views.inspector import Inspector
from merge_studio.gui.views.log_panel import LogPanel
from merge_studio.gui.views.method_picker import MethodPicker
from merge_studio.gui.views.status_panel import JobStatus
from merge_studio.gui.workers import JobError, JobRunner, JobWorker

MODEL_FILTER = "Checkpoints (*.safetensors *.pt *.pth *.bin *.ckpt *.pt2 *.index.json);;All files (*)"
RECIPE_FILTER = "Recipes (*.yaml *.yml);;All files (*)"
# (tab title, module, class, empty-state sentence) for views other issues provide
OPTIONAL_TABS = (
    ("Graph", "merge_studio.gui.views.graph_view", "GraphView",
     "The model's layer graph will appear here, coloured by how much each layer changed in the merge."),
    ("Barrier", "merge_studio.gui.views.barrier_plot", "BarrierPanel",
     "Loss and accuracy along the path between two models (the loss barrier) will be plotted here."),
    ("Permutations", "merge_studio.gui.views.permutation_view", "PermutationView",
     "How re-basin aligns the neurons of one model to another will be shown here, layer by layer."),
)


class MainWindow(QMainWindow):
    """Model list | tabs | method panel, a log below and a status bar."""

    sig_models_loaded = Signal()
    """No model is loading any more (after a drop, an open or a recipe)."""
    sig_merge_finished = Signal(object)
    """A :class:`MergeResult`, or ``None`` when the merge failed or was cancelled."""

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None, *,
                 remember_layout: bool = True) -> None:
        protect_none()  # before the many Qt calls a session makes (see qt_compat)
        super().__init__(parent)
        self.setObjectName("main_window")
        self.setWindowTitle("Merge Studio")
        self.setAcceptDrops(True)
        self.settings = settings or AppSettings()
        self.session = Session()
        self.runner = JobRunner(self)
        self.recipe_path: Path | None = None
        self.merge_worker: JobWorker | None = None
        self.error_dialogs: list[ErrorDialog] = []
        self._loaders: set[JobWorker] = set()
        self._sized_panels = False
        self._user_sized = False  # once the user drags a splitter, the layout is theirs
        self._fitted_for_models = False
        self.remember_layout = remember_layout  # screenshots use the default layout and leave settings alone

        self.table_model = CheckpointTableModel(self.session, self)
        self.model_list = CheckpointList(self.table_model, self)
        self.inspector = Inspector(self)
        self.method_panel = MethodPicker(self.session, self.table_model, self)
        self.log_panel = LogPanel(self)
        self.job_status = JobStatus(self)
        self.device_label = QLabel(self)
        self.device_label.setObjectName("device_label")

        self.extra_views: dict[str, QWidget] = {}
        self.welcome = self._optional_view("Welcome", "merge_studio.gui.views.welcome", "WelcomeView", "")
        self.inspector_stack = QStackedWidget(self)
        self.inspector_stack.setObjectName("inspector_stack")
        self.inspector_stack.addWidget(self.welcome)
        self.inspector_stack.addWidget(self.inspector)
        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("central_tabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.inspector_stack, icon("inspector"), "Inspector")
        for title, module, cls_name, sentence in OPTIONAL_TABS:
            self.tabs.addTab(self._optional_view(title, module, cls_name, sentence), icon(title.lower()), title)

        self._build_layout()
        self.actions_by_name = build_menus(self)
        self._connect()
        self._problems_timer = QTimer(self)
        self._problems_timer.setSingleShot(True)
        self._problems_timer.setInterval(150)
        self._problems_timer.timeout.connect(self._refresh_problems)
        self._refresh_device()
        self._refresh_all()
        self._restore_layout()
        self.log_panel.log("Ready. Drop checkpoints on the list, or use File ▸ Open (Ctrl+O).")

    # --- construction -----------------------------------------------------------------
    def _optional_view(self, title: str, module: str, cls_name: str, sentence: str) -> QWidget:
        """The colleague's view when its module is there, else an empty state that says what will come."""
        try:
            view = getattr(importlib.import_module(module), cls_name)(self)
        except Exception:  # noqa: BLE001 - a missing or broken optional view must not stop the window
            if not sentence:
                return EmptyState("Merge Studio", "Drop checkpoints on the model list, or use File ▸ Open (Ctrl+O).", self)
            return EmptyState(f"{title}: nothing to show yet", sentence, self)
        self.extra_views[title] = view
        return view

    def _build_layout(self) -> None:
        left = QWidget(self)
        left.setObjectName("models_panel")
        header = QHBoxLayout()
        header.setContentsMargins(8, 6, 4, 0)
        title = QLabel("Models", left)
        title.setObjectName("panel_title")
        header.addWidget(title)
        header.addStretch(1)
        self.header_buttons: list[QToolButton] = []
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.setSpacing(4)
        ll.addLayout(header)
        ll.addWidget(self.model_list, 1)
        self._models_header = header

        self.h_split = QSplitter(Qt.Orientation.Horizontal, self)
        self.h_split.setObjectName("h_split")
        self.h_split.addWidget(left)
        self.h_split.addWidget(self.tabs)
        self.h_split.addWidget(self.method_panel)
        self.h_split.setStretchFactor(0, 3)
        self.h_split.setStretchFactor(1, 4)
        self.h_split.setStretchFactor(2, 0)
        self.h_split.setChildrenCollapsible(False)
        left.setMinimumWidth(320)
        self.tabs.setMinimumWidth(360)
        self.v_split = QSplitter(Qt.Orientation.Vertical, self)
        self.v_split.setObjectName("v_split")
        self.v_split.addWidget(self.h_split)
        self.v_split.addWidget(self.log_panel)
        self.v_split.setStretchFactor(0, 5)
        self.v_split.setStretchFactor(1, 1)
        self.v_split.setChildrenCollapsible(False)
        self.log_panel.setMinimumHeight(80)
        self.setCentralWidget(self.v_split)
        self.h_split.splitterMoved.connect(self._on_h_split_moved)
        self.tabs.tabBar().setUsesScrollButtons(False)
        self.tabs.tabBar().setElideMode(Qt.TextElideMode.ElideRight)
        status = self.statusBar()
        status.setSizeGripEnabled(True)
        status.addWidget(self.job_status, 1)
        status.addPermanentWidget(self.device_label)
        self.resize(1280, 800)
        self.h_split.setSizes([470, 470, 340])
        self.v_split.setSizes([640, 140])

    def add_header_button(self, button: QToolButton) -> None:
        """Put a small tool button next to the "Models" title (used by the menus module)."""
        self._models_header.addWidget(button)
        self.header_buttons.append(button)

    def _connect(self) -> None:
        self.model_list.sig_files_dropped.connect(self.open_paths)
        self.model_list.sig_remove_requested.connect(self.remove_models)
        self.model_list.sig_base_requested.connect(self.set_base)
        self.model_list.sig_current_changed.connect(self._on_model_list_current_changed)
        self.model_list.sig_reveal_requested.connect(self._on_model_list_reveal_requested)
        self.table_model.sig_reordered.connect(self._on_session_changed)
        self.method_panel.sig_changed.connect(self._schedule_problems)
        self.method_panel.sig_method_changed.connect(self._on_method_panel_method_changed)
        self.method_panel.sig_merge_requested.connect(self.start_merge)
        self.job_status.sig_cancel_requested.connect(self.cancel_jobs)
        for signal, slot in (("sig_open_files", self.ask_open_models), ("sig_open_recipe", self.ask_open_recipe),
                             ("sig_try_demo", self.load_demo), ("sig_open_recent", self.open_any)):
            if hasattr(self.welcome, signal):
                getattr(self.welcome, signal).connect(slot)

    def _restore_layout(self) -> None:
        if not self.remember_layout:
            return
        if (geometry := self.settings.geometry) is not None:
            self.restoreGeometry(geometry)
        if (state := self.settings.window_state) is not None:
            self.restoreState(state)
        for name, split in (("h", self.h_split), ("v", self.v_split)):
            if (value := self.settings.splitter_state(name)) is not None:
                split.restoreState(value)

    # --- models -----------------------------------------------------------------------
    def open_paths(self, paths: Iterable[str | Path]) -> list[int]:
        """Add rows for ``paths`` at once and read their headers on a worker thread."""
        items: list[tuple[int, Path]] = []
        for path in paths:
            p = Path(path).expanduser()
            if self.session.find_path(p) is not None:
                self.log_panel.log(f"{p.name} is already in the list", "warning")
                continue
            row = self.session.add_pending(p)
            items.append((row.id, row.path))
            self.settings.add_recent_model(p)
            self.settings.set_last_folder("models", p)
        if items:
            self._start_loading(items)
            self._on_session_changed()
            self.menus_refresh_recent()
        return [model_id for model_id, _ in items]

    def _start_loading(self, items: list[tuple[int, Path]]) -> None:
        worker = self.runner.start(lambda token, items=items: load_checkpoints(items, token), "load")
        worker.sig_partial.connect(self._on_loader_partial)
        worker.sig_failed.connect(self._on_loader_failed)
        worker.sig_done.connect(self._on_loader_done)
        self._loaders.add(worker)

    def _on_loader_partial(self, item: object) -> None:
        if isinstance(item, Loaded):
            self.session.set_loaded(item.model_id, item.checkpoint, item.summary)
            model = self.session.find(item.model_id)
            if model is not None:
                s = item.summary
                self.log_panel.log(f"Opened {model.name}: {s.format}, {s.tensor_count} tensors, {s.parameter_count:,} parameters")
                if not self.session.output.path:
                    self.method_panel.set_output_path(self.session.suggest_output())
        elif isinstance(item, LoadFailed):
            self.session.set_failed(item.model_id, item.message)
            self.log_panel.log(f"Could not open {item.path.name}: {item.message}", "error")
        self._on_session_changed()

    def _on_loader_failed(self, error: JobError) -> None:
        self.log_panel.log(f"Loading stopped: {error.message}", "error")

    def _on_loader_done(self) -> None:
        self._loaders = {w for w in self._loaders if not w.finished}
        for model in self.session.models:  # a crashed loader leaves no row "loading" forever
            if model.status == "loading" and not self._loaders:
                self.session.set_failed(model.id, "loading stopped before this file was read")
        self._on_session_changed()
        if not self.session.loading:
            self.sig_models_loaded.emit()

    def open_any(self, path: str | Path) -> None:
        """A recipe (``.yaml``) restores the window; anything else is loaded as a model."""
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            self.open_recipe(path)
        else:
            self.open_paths([path])

    def load_demo(self) -> JobWorker | None:
        """Train (once) and load the demo models on a worker thread."""
        try:
            from merge_studio.core.demo import iter_demo_models
        except ImportError:
            self.log_panel.log("The demo is not available in this version.", "warning")
            return None
        if self.runner.is_running("demo"):
            return None
        self.log_panel.log("Preparing the demo models (trained once, then cached)…")
        worker = self.runner.start(lambda token: iter_demo_models(cancel=token), "demo")
        worker.sig_progress.connect(self.job_status.update_progress)
        worker.sig_result.connect(lambda demo: self.open_paths(demo.paths()))
        worker.sig_failed.connect(lambda error: self.show_error(error, "The demo could not be prepared"))
        worker.sig_done.connect(lambda: self.job_status.finish("Ready"))
        self.job_status.start("Preparing the demo")
        return worker

    def is_loading(self) -> bool:
        return self.session.loading

    def remove_models(self, model_ids: Iterable[int] | None = None) -> None:
        ids = list(model_ids) if model_ids is not None else self.model_list.selected_ids()
        for model_id in ids:
            model = self.session.find(model_id)
            if model is not None:
                self.session.remove(model_id)
                self.log_panel.log(f"Removed {model.name}")
        if ids:
            self._on_session_changed()

    def set_base(self, model_id: int | None) -> None:
        self.session.set_base(model_id)
        model = self.session.base
        self.log_panel.log(f"Base model: {model.name}" if model else "No base model")
        self._on_session_changed()

    def _on_model_list_current_changed(self, model_id: object) -> None:
        self.inspector.set_model(self.session.find(model_id) if isinstance(model_id, int) else None)

    def _on_model_list_reveal_requested(self, model_id: object) -> None:
        model = self.session.find(model_id) if isinstance(model_id, int) else None
        if model is not None:
            folder = model.path if model.path.is_dir() else model.path.parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _on_method_panel_method_changed(self, name: str) -> None:
        self.log_panel.log(f"Method: {self.session.spec.label}")
        self._schedule_problems()

    # --- refresh ----------------------------------------------------------------------
    def _on_session_changed(self) -> None:
        self._refresh_all()

    def _refresh_all(self) -> None:
        self.inspector_stack.setCurrentIndex(1 if self.session.models else 0)
        if self._sized_panels and not self._user_sized and bool(self.session.models) != self._fitted_for_models:
            self.fit_panels()
        if not self.session.models and hasattr(self.welcome, "set_recent"):
            self.welcome.set_recent([*self.settings.recent_recipes[:3], *self.settings.recent_models[:5]])
        compat = check_models(self.session.models)
        self.table_model.refresh(compat)
        self.inspector.set_compatibility(compat, len(self.session.ready_models))
        current = self.model_list.current_id()
        self.inspector.set_model(self.session.find(current) if current is not None else None)
        self._schedule_problems()
        title = f"{self.recipe_path.name} — Merge Studio" if self.recipe_path else "Merge Studio"
        self.setWindowTitle(title)

    def _schedule_problems(self) -> None:
        self._problems_timer.start()

    def _refresh_problems(self) -> None:
        problems = [] if not self.session.models else self.session.problems()
        form_ok = self.method_panel.form is None or self.method_panel.form.is_valid()
        self.method_panel.set_problems(problems)
        running = self.merge_worker is not None
        can_merge = not problems and form_ok and not running and bool(self.session.models)
        self.method_panel.merge_button.setEnabled(can_merge)
        self.actions_by_name["merge"].setEnabled(can_merge)

    def _refresh_device(self) -> None:
        try:
            text = describe_device(self.session.output.device)
        except MergeStudioError as exc:
            text = str(exc)
        except Exception as exc:  # noqa: BLE001 - a driver problem must not stop the window
            text = f"device unavailable ({exc})"
        self.device_label.setText(f"Device: {text}")
        self.device_label.setToolTip("Where merges compute; change it under Output ▸ Device")

    # --- recipes ----------------------------------------------------------------------
    def open_recipe(self, path: str | Path) -> bool:
        """Restore the window from a recipe (or a mergekit config); ``False`` on errors (shown)."""
        path = Path(path)
        try:
            recipe = load_recipe(path)
        except MergeStudioError as exc:
            self.show_error(JobError.from_exception(exc), "Cannot open the recipe")
            self.log_panel.log(f"Cannot open recipe {path.name}: {exc}", "error")
            return False
        rows = self.session.apply_recipe(recipe)
        self.recipe_path = path
        self.settings.add_recent_recipe(path)
        self.settings.set_last_folder("recipes", path)
        self.method_panel.load_from_session()
        self.table_model.refresh()
        if rows:
            self._start_loading([(r.id, r.path) for r in rows])
        self.log_panel.log(f"Opened recipe {path} ({recipe.spec.label}, {len(recipe.models)} models)")
        self._refresh_device()
        self._on_session_changed()
        self.menus_refresh_recent()
        return True

    def save_recipe(self, path: str | Path | None = None) -> Path | None:
        """Write the window's state as a recipe; asks for a file when none is known yet."""
        if self.method_panel.form is not None:
            self.session.set_params(self.method_panel.form.values())
        if path is None:
            path = self.recipe_path
        if path is None:
            start = str(Path(self.settings.last_folder("recipes")) / "recipe.yaml")
            chosen, _ = QFileDialog.getSaveFileName(self, "Save recipe", start, RECIPE_FILTER)
            if not chosen:
                return None
            path = chosen
        try:
            recipe = self.session.to_recipe()
            written = recipe.save(path)
        except (MergeStudioError, OSError) as exc:
            self.show_error(JobError.from_exception(exc), "Cannot save the recipe")
            return None
        self.recipe_path = written
        self.settings.add_recent_recipe(written)
        self.settings.set_last_folder("recipes", written)
        self.log_panel.log(f"Saved recipe to {written}", "ok", folder=written.parent)
        self._refresh_all()
        self.menus_refresh_recent()
        return written

    # --- merging ----------------------------------------------------------------------
    def start_merge(self) -> JobWorker | None:
        """Start the merge the window describes; ``None`` when it cannot start (reason shown)."""
        if self.merge_worker is not None:
            return None
        if self.method_panel.form is not None:
            if not self.method_panel.form.is_valid():
                self.log_panel.log("Fix the highlighted parameters first", "warning")
                return None
            self.session.set_params(self.method_panel.form.values())
        if not self.session.output.path and self.session.ready_models:
            self.method_panel.set_output_path(self.session.suggest_output())
        try:
            recipe = self.session.to_recipe()
        except MergeStudioError as exc:
            self.show_error(JobError.from_exception(exc), "Cannot merge yet")
            return None
        self.log_panel.log(f"Merging {len(recipe.models)} models with {recipe.spec.label} into {recipe.output}")
        worker = self.runner.start(lambda token: iter_merge(recipe, token), "merge")
        worker.sig_progress.connect(self._on_merge_progress)
        worker.sig_result.connect(self._on_merge_result)
        worker.sig_failed.connect(self._on_merge_failed)
        worker.sig_cancelled.connect(self._on_merge_cancelled)
        worker.sig_done.connect(self._on_merge_done)
        self.merge_worker = worker
        self.job_status.start("Merging")
        self.method_panel.set_running(True)
        self.actions_by_name["cancel"].setEnabled(True)
        self._refresh_problems()
        return worker

    def cancel_jobs(self) -> None:
        """Cancel the merge (and any loading); returns at once, the job stops at its next check."""
        if self.merge_worker is not None:
            self.merge_worker.cancel()
            self.job_status.cancelling()
        for worker in list(self._loaders):
            worker.cancel()

    def _on_merge_progress(self, progress: Progress) -> None:
        self.job_status.update_progress(progress)

    def _on_merge_result(self, result: MergeResult) -> None:
        out = result.output
        folder = out if out.is_dir() else out.parent
        self.log_panel.log(
            f"Merged {result.tensor_count} tensors in {result.seconds:.1f} s; wrote {out}", "ok", folder=folder
        )
        for path in result.outputs:
            self.open_paths([path])
        self.sig_merge_finished.emit(result)

    def _on_merge_failed(self, error: JobError) -> None:
        self.log_panel.log(f"Merge failed: {error.message}", "error")
        self.show_error(error, "The merge failed")
        self.sig_merge_finished.emit(None)

    def _on_merge_cancelled(self) -> None:
        self.log_panel.log("Merge cancelled; nothing was written.", "warning")
        self.sig_merge_finished.emit(None)

    def _on_merge_done(self) -> None:
        worker = self.merge_worker
        self.merge_worker = None
        if worker is not None and not worker.cancelled:
            self.job_status.finish("Ready")
        else:
            self.job_status.finish("Cancelled")
        self.method_panel.set_running(False)
        self.actions_by_name["cancel"].setEnabled(False)
        self._refresh_problems()

    # --- errors -----------------------------------------------------------------------
    def show_error(self, error: JobError, title: str = "Something went wrong") -> ErrorDialog:
        """Open a non-blocking error dialog (the window stays usable)."""
        dialog = ErrorDialog(error, title, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.error_dialogs.append(dialog)
        dialog.finished.connect(lambda _r, d=dialog: self.error_dialogs.remove(d) if d in self.error_dialogs else None)
        dialog.open()
        return dialog

    # --- file dialogs (menus call these) ----------------------------------------------
    def ask_open_models(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open checkpoints", self.settings.last_folder("models"), MODEL_FILTER)
        if paths:
            self.open_paths(paths)

    def ask_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self.settings.last_folder("models"))
        if folder:
            self.open_paths([folder])

    def ask_open_recipe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", self.settings.last_folder("recipes"), RECIPE_FILTER)
        if path:
            self.open_recipe(path)

    def menus_refresh_recent(self) -> None:
        refresh = getattr(self, "_refresh_recent_menus", None)
        if refresh is not None:
            refresh()

    # --- window events ----------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802
        super().showEvent(event)
        if not self._sized_panels:
            self._sized_panels = True
            if not self.remember_layout or self.settings.splitter_state("h") is None:
                self.fit_panels()
            else:
                self._user_sized = True  # restored from the last session

    def fit_panels(self) -> None:
        """Default widths: an empty list gives the welcome page room; a full one gets room for its columns."""
        width = self.h_split.width() or self.width()
        right = 330 if width < 1600 else 400
        if not self.session.models:
            left = 300 if width < 1600 else 420
        elif width < 1600:
            left = max(490, int((width - right) * 0.5))
        else:
            left = int((width - right) * 0.45)
        self.h_split.setSizes([left, max(width - left - right, 360), right])
        height = self.v_split.height() or self.height()
        self.v_split.setSizes([height - 150, 150])
        self._fitted_for_models = bool(self.session.models)

    def _on_h_split_moved(self) -> None:
        self._user_sized = True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = paths_from_mime(event.mimeData())
        recipes = [p for p in paths if p.suffix.lower() in (".yaml", ".yml")]
        if recipes:
            self.open_recipe(recipes[0])
        models = [p for p in paths if p not in recipes]
        if models:
            self.open_paths(models)
        event.acceptProposedAction()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if self.remember_layout:
            self.settings.geometry = self.saveGeometry()
            self.settings.window_state = self.saveState()
            self.settings.set_splitter_state("h", self.h_split.saveState())
            self.settings.set_splitter_state("v", self.v_split.saveState())
        self.settings.sync()
        self.runner.shutdown(10_000)
        QCoreApplication.sendPostedEvents()
        self.session.close()
        super().closeEvent(event)
