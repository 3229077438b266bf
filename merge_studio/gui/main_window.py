"""The main window: assembles the panels and connects them to the session and the job runner.

It holds no merge logic: models load through :mod:`merge_studio.gui.loading`,
merges run ``iter_merge`` on a :class:`JobRunner`, and recipes come from the
:class:`Session`. The menus live in :mod:`merge_studio.gui.menus`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.device import describe_device
from merge_studio.errors import MergeStudioError
from merge_studio.gui.compat import check_models
from merge_studio.gui.deferred_startup import OPTIONAL_TABS, DeferredStartup
from merge_studio.gui.dialogs.error_dialog import ErrorDialog
from merge_studio.gui.menus import build_menus
from merge_studio.gui.edit_history import EditHistory
from merge_studio.gui.merge_estimate import MergeEstimateLabel
from merge_studio.gui.merge_history import MergeHistory
from merge_studio.gui import gc_guard, kernel_warmup, output_guard
from merge_studio.gui.output_guard import confirm_stop_merge
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
from merge_studio.gui.views.scrolling_tabs import CurrentPageStack, ScrollingTabs
from merge_studio.gui.views.status_panel import JobStatus
from merge_studio.gui.lora_actions import LoraActions
from merge_studio.gui.moe_actions import MoeActions
from merge_studio.gui.view_wiring import ViewWiring
from merge_studio.gui.window_actions import WindowActions
from merge_studio.gui.window_layout import PanelLayout
from merge_studio.gui.workers import JobError, JobRunner, JobWorker

GIL_SWITCH_S = 0.001  # how long a thread holding the GIL runs before a waiting one (the GUI's) may take it


class MainWindow(WindowActions, DeferredStartup, QMainWindow):
    """Model list | tabs | method panel, a log below and a status bar."""

    sig_models_loaded = Signal()
    """No model is loading any more (after a drop, an open or a recipe)."""
    sig_merge_finished = Signal(object)
    """A :class:`MergeResult`, or ``None`` when the merge failed or was cancelled."""

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None, *,
                 remember_layout: bool = True, defer_startup: bool = False) -> None:
        """``defer_startup=True`` (the app) paints first, then builds the Graph, Barrier and
        Permutations views and asks torch for GPUs: those imports take over a second.
        Anything that asks for :attr:`extra_views` earlier gets them built on the spot."""
        protect_none()  # before the many Qt calls a session makes (see qt_compat)
        # The GUI thread shares the GIL with job and render threads; at Python's default 5 ms switch
        # interval it could wait several turns in a row (gaps of 60-150 ms during an alignment).
        sys.setswitchinterval(GIL_SWITCH_S)
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
        self._graph_shows = None  # the model the Graph tab last drew
        self._user_sized = False  # once the user drags a splitter, the layout is theirs
        self._fitted_for_models = False
        self.remember_layout = remember_layout  # screenshots use the default layout and leave settings alone
        # Scripted windows (screenshots, benchmarks: they leave settings alone) ask no questions:
        # outputs are replaced, running merges cancelled and edits dropped on close.
        self.interactive = remember_layout

        self.table_model = CheckpointTableModel(self.session, self)
        self.model_list = CheckpointList(self.table_model, self)
        self.inspector = Inspector(self)
        self.method_panel = MethodPicker(self.session, self.table_model, self, probe_devices=not defer_startup)
        self.log_panel = LogPanel(self)
        self.job_status = JobStatus(self)
        self.device_label = QLabel(self)
        self.device_label.setObjectName("device_label")

        self._extra_views: dict[str, QWidget] = {}
        self._view_slots: dict[str, QWidget] = {}  # placeholder tabs while the views are deferred
        self._startup_pending = defer_startup
        self.welcome = self._optional_view("Welcome", "merge_studio.gui.views.welcome", "WelcomeView", "")
        self.inspector_stack = CurrentPageStack(self)
        self.inspector_stack.setObjectName("inspector_stack")
        self.inspector_stack.addWidget(self.welcome)
        self.inspector_stack.addWidget(self.inspector)
        self.tabs = ScrollingTabs(self)
        self.tabs.setObjectName("central_tabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.inspector_stack, icon("inspector"), "Inspector")
        for title, module, cls_name, sentence in OPTIONAL_TABS:
            if defer_startup:
                view = self._view_slots[title] = QWidget(self)
            else:
                view = self._optional_view(title, module, cls_name, sentence)
            self.tabs.addTab(view, icon(title.lower()), title)

        self._build_layout()
        self.actions_by_name = build_menus(self)
        self.panel_layout = PanelLayout(self)
        self._connect()
        self.wiring = ViewWiring(self)
        self.lora = LoraActions(self)
        self.moe = MoeActions(self)
        self.merge_history = MergeHistory(self)
        self.merge_estimate = MergeEstimateLabel(self)
        self.edit_history = EditHistory(self)
        edit_menu = next(a.menu() for a in self.menuBar().actions() if a.text() == "&Edit")
        edit_menu.insertActions(edit_menu.actions()[0], [self.edit_history.undo_action, self.edit_history.redo_action])
        edit_menu.insertSeparator(edit_menu.actions()[2])
        self.actions_by_name.update(undo=self.edit_history.undo_action, redo=self.edit_history.redo_action)
        if not defer_startup:
            self.wiring.attach_views(self._extra_views)
        self._problems_timer = QTimer(self)
        self._problems_timer.setSingleShot(True)
        self._problems_timer.setInterval(150)
        self._problems_timer.timeout.connect(self._refresh_problems)
        self._device_timer = QTimer(self)  # free GPU memory changes; CPU needs no refresh
        self._device_timer.setInterval(5000)
        self._device_timer.timeout.connect(self._refresh_device)
        self._startup_timer = QTimer(self)
        self._startup_timer.setSingleShot(True)
        self._startup_timer.timeout.connect(self._finish_startup)
        if defer_startup:
            self.device_label.setText("Device: …")
        else:
            self._probe_devices()
        self._refresh_all()
        self._restore_layout()
        self.log_panel.log("Ready. Drop checkpoints on the list, or use File ▸ Open (Ctrl+O).")
        if not defer_startup:
            gc_guard.settle()  # the window is built: later full collections skip all of it
            kernel_warmup.start()  # numba and LLVM before the first merge needs them

    # --- construction -----------------------------------------------------------------
    def _optional_view(self, title: str, module: str, cls_name: str, sentence: str) -> QWidget:
        """The colleague's view when its module is there, else an empty state that says what will come."""
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            accepted = inspect.signature(cls).parameters
            kwargs: dict[str, object] = {"parent": self} if "parent" in accepted else {}
            if "runner" in accepted:
                kwargs["runner"] = self.runner
            if "models_provider" in accepted:
                kwargs["models_provider"] = self._ready_model_paths
            if "recipe_provider" in accepted:
                kwargs["recipe_provider"] = self.session.to_recipe
            view = cls(**kwargs) if kwargs else cls(self)
        except Exception:  # noqa: BLE001 - a missing or broken optional view must not stop the window
            if not sentence:
                return EmptyState("Merge Studio", "Drop checkpoints on the model list, or use File ▸ Open (Ctrl+O).", self)
            return EmptyState(f"{title}: nothing to show yet", sentence, self)
        self._extra_views[title] = view
        return view

    def _ready_model_paths(self) -> list[tuple[str, Path]]:
        return [(m.name, m.path) for m in self.session.ready_models]

    def _update_extra_views(self) -> None:
        """Show the selected checkpoint in the Graph tab when it is on screen (the Barrier tab pulls its models)."""
        graph = self._extra_views.get("Graph")
        if graph is not None and self.tabs.currentWidget() is graph and hasattr(graph, "show_checkpoint"):
            current = self.session.find(self.model_list.current_id() or -1)
            if current is not None and current.checkpoint is not None and current is not self._graph_shows:
                self._graph_shows = current
                graph.show_checkpoint(current.checkpoint, self.session.arch_for(current))

    def open_slice_editor(self) -> None:
        """Stack layers: pick layer ranges of the loaded models (see :mod:`slice_actions`)."""
        from merge_studio.gui.slice_actions import open_slice_editor

        self._slice_editor = open_slice_editor(self)

    def show_tab(self, title: str) -> bool:
        """Bring a central tab to the front by its title (any case)."""
        for i in range(self.tabs.count()):
            if self.tabs.tabText(i).lower() == title.lower():
                self.tabs.setCurrentIndex(i)
                return True
        return False

    def graph_model(self):  # noqa: ANN201 - a LoadedModel or None
        """The model the Graph tab shows (its architecture choice is remembered for it)."""
        shown = self._graph_shows
        return shown if shown is not None and shown in self.session.models else None

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
        self.v_split = QSplitter(Qt.Orientation.Vertical, self)
        self.v_split.setObjectName("v_split")
        self.v_split.addWidget(self.h_split)
        self.v_split.addWidget(self.log_panel)
        self.v_split.setStretchFactor(0, 5)
        self.v_split.setStretchFactor(1, 1)
        self.setCentralWidget(self.v_split)
        self.h_split.splitterMoved.connect(self._on_h_split_moved)
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
        self.model_list.sig_inputs_requested.connect(self.set_inputs)
        self.model_list.sig_current_changed.connect(self._on_model_list_current_changed)
        self.model_list.sig_reveal_requested.connect(self._on_model_list_reveal_requested)
        self.table_model.sig_reordered.connect(self._on_session_changed)
        self.method_panel.sig_changed.connect(self._schedule_problems)
        self.method_panel.sig_method_changed.connect(self._on_method_panel_method_changed)
        self.method_panel.sig_merge_requested.connect(self.start_merge)
        self.method_panel.sig_slices_requested.connect(self.open_slice_editor)
        self.job_status.sig_cancel_requested.connect(self.cancel_jobs)
        self.tabs.currentChanged.connect(self._update_extra_views)
        self.tabs.currentChanged.connect(self._on_tabs_current_changed)
        self.method_panel.device_combo.currentIndexChanged.connect(self._refresh_device)
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
        self.panel_layout.restore()

    # --- refresh ----------------------------------------------------------------------
    def _on_session_changed(self) -> None:
        self._refresh_all()
        if (history := getattr(self, "edit_history", None)) is not None:
            history.schedule()

    def _refresh_all(self) -> None:
        self.inspector_stack.setCurrentIndex(1 if self.session.models else 0)
        if self._sized_panels and not self._user_sized and bool(self.session.models) != self._fitted_for_models:
            self.fit_panels()
        if not self.session.models and hasattr(self.welcome, "set_recent"):
            self.welcome.set_recent([*self.settings.recent_recipes[:3], *self.settings.recent_models[:5]])
        compat = check_models(self.session.models, self.session.base_id)
        self._compat = compat
        self.table_model.refresh(compat)
        self.inspector.set_compatibility(compat, len(self.session.ready_models))
        current = self.model_list.current_id()
        self.inspector.set_model(self.session.find(current) if current is not None else None)
        self._update_extra_views()
        self.wiring.refresh_models()
        self.method_panel.refresh_tokenizer_choices()
        self._schedule_problems()
        title = f"{self.recipe_path.name}[*] — Merge Studio" if self.recipe_path else "Merge Studio[*]"
        self.setWindowTitle(title)  # [*]: Qt shows "*" there while there are unsaved changes

    def _schedule_problems(self) -> None:
        self._problems_timer.start()

    def _refresh_problems(self) -> None:
        problems = [] if not self.session.models else self.session.problems()
        compat = getattr(self, "_compat", None)
        if not problems and compat is not None and not compat.ok and self.session.output.on_mismatch == "error":
            problems.append("the models' tensors do not line up (Inspector ▸ Compatibility): set Output ▸ "
                            "Mismatched to copy or leave them out, or remove the odd model")
        form_ok = self.method_panel.form is None or self.method_panel.form.is_valid()
        self.method_panel.set_problems(problems, self.session.warnings())
        self.method_panel.coefficients.set_problem(self.session.weight_problem() if self.session.models else None)
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

    # --- errors -----------------------------------------------------------------------
    def show_error(self, error: JobError, title: str = "Something went wrong") -> ErrorDialog:
        """Open a non-blocking error dialog (the window stays usable)."""
        dialog = ErrorDialog(error, title, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.error_dialogs.append(dialog)
        dialog.finished.connect(lambda _r, d=dialog: self.error_dialogs.remove(d) if d in self.error_dialogs else None)
        dialog.open()
        return dialog

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
        """Default sizes for this window size (see :mod:`merge_studio.gui.window_layout`): the list gets
        room for its columns while the Inspector shows, otherwise the tabs get the width."""
        wide_list = bool(self.session.models) and self.tabs.currentWidget() is self.inspector_stack
        self.panel_layout.fit(wide_list=wide_list)
        self._fitted_for_models = bool(self.session.models)

    def _on_tabs_current_changed(self, _index: int) -> None:
        if self._sized_panels and not self._user_sized:
            self.fit_panels()

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
        running = self.merge_worker is not None and not self.merge_worker.finished
        if self.interactive and running and not confirm_stop_merge(self):
            event.ignore()  # the merge goes on
            return
        if (self.interactive and self.session.models and self.edit_history.dirty
                and not output_guard.confirm_discard_changes(self)):
            event.ignore()
            return
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
