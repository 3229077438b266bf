"""The Barrier tab: loss and accuracy along the line between two models, and per-model scores.

The panel computes nothing. Run builds a :class:`BarrierRequest` (or an
:class:`EvaluateRequest`) and emits ``sig_run_requested``; whoever runs jobs
(the window's ``JobRunner``, attached with :meth:`attach_runner`) runs
``request.job`` on a thread and feeds the results back through ``add_point``,
``set_progress``, ``set_result`` and ``set_scores``. Tests drive those directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.evaluate.barrier import CURVE_LABELS, BarrierReport
from merge_studio.core.evaluate.curves import BarrierPoint
from merge_studio.core.evaluate.data import DataSpec
from merge_studio.core.evaluate.jobs import MEMORY_MERGE_NAME, BarrierRequest, EvaluateRequest
from merge_studio.core.evaluate.loop import ModelScores
from merge_studio.core.progress import Progress
from merge_studio.errors import MergeStudioError
from merge_studio.gui.flow_layout import FlowLayout
from merge_studio.gui.plot_canvas import BackgroundCanvas
from merge_studio.gui.plot_toolbar import PlotToolbar
from merge_studio.gui.views.status_panel import EtaClock
from merge_studio.plots.barrier import BarrierPlotter, draw_barrier_report
from merge_studio.plots.evaluation import draw_model_scores

EMPTY_SENTENCE = "Choose models A and B, then press Run to plot loss and accuracy along the straight line between them."
BARRIER_COLUMNS = ("curve", "split", "loss at A", "loss at B", "highest loss", "loss barrier", "accuracy drop")
SCORE_COLUMNS = ("model", "split", "loss", "accuracy", "examples")
NO_MERGED = "(none)"
IN_MEMORY = "memory:"  # the merged-model choice "the current recipe, merged in memory"
IN_MEMORY_TEXT = "Current recipe, merged in memory (not saved)"


NARROW_PLOT_WIDTH = 760  # beside the model list at 1280 px the plots get ~600 px
FOLD_OPTIONS_BELOW = 900  # window height under which the options start folded
STACK_WIDTH = 640  # narrower than this, loss and accuracy are drawn one above the other
MIN_AXES_SIZE = (260, 140)  # the smallest plot (pixels) whose labels, ticks and legend stay readable


def _compact_bars(figure: Any) -> None:
    """Smaller value labels, and the legend above the bars, when the chart is narrow."""
    for ax in figure.axes:
        for text in ax.texts:
            text.set_fontsize(6)
        ax.yaxis.label.set_fontsize(8)
        ax.tick_params(labelsize=7)
        handles, labels = ax.get_legend_handles_labels()
        if ax.get_legend() is not None and handles:
            ax.get_legend().remove()
            ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(labels),
                      fontsize=7, frameon=False)


def _row_widget(layout: QHBoxLayout, parent: QWidget) -> QWidget:
    """A few widgets kept together on one line of a :class:`FlowLayout` (a label and its field)."""
    holder = QWidget(parent)
    layout.setContentsMargins(0, 0, 0, 0)
    holder.setLayout(layout)
    return holder


def _flow_widget(layout: FlowLayout, parent: QWidget) -> QWidget:
    holder = QWidget(parent)
    holder.setLayout(layout)
    return holder


def _short_name(name: str) -> str:
    """``model.safetensors`` -> ``model`` for combo boxes, tables and plot labels."""
    for suffix in (".safetensors", ".pt", ".pth", ".bin", ".pt2", ".ckpt"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _perplexities(scores: ModelScores, split: str) -> str:
    """`` Perplexity: a 20.5 · b 35.4`` for language models, else nothing."""
    values = [(n, r.perplexity) for n, r in zip(scores.names, scores.results[split], strict=True) if r.perplexity]
    return (" Perplexity: " + " · ".join(f"{n} {p:.2f}" for n, p in values) + ".") if values else ""


def _number_item(value: float | None, fmt: str = "{:.4f}") -> QTableWidgetItem:
    item = QTableWidgetItem("–" if value is None else fmt.format(value))
    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    if value is not None:
        item.setData(Qt.ItemDataRole.UserRole, float(value))
    return item


class _PlotPage(QWidget):
    """A figure with matplotlib's navigation toolbar (zoom, pan, save as PNG/SVG/PDF) over a table,
    and an empty-state sentence until there is something to draw.

    The figure draws on a helper thread (:class:`BackgroundCanvas`); the table sits
    under a splitter handle so the plot can take the height, and its columns are as
    wide as their headers (a horizontal scroll bar rather than cut words).
    """

    def __init__(self, empty_text: str, columns: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figure = Figure(figsize=(9, 3.6), layout="constrained")
        self.canvas = BackgroundCanvas(self.figure)
        self.canvas.setMinimumSize(*MIN_AXES_SIZE)
        self.toolbar = PlotToolbar(self.canvas, self)
        self.toolbar.setIconSize(QSize(18, 18))
        self.empty = QLabel(empty_text, self)
        self.empty.setObjectName("empty_text")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.stack = QStackedWidget(self)
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.canvas)
        self.table = QTableWidget(0, len(columns), self)
        self.table.setHorizontalHeaderLabels(list(columns))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(False)
        self.table.setMinimumHeight(48)
        self.save_button = QPushButton("Save numbers…", self)
        self.save_button.setToolTip("Write the numbers behind the plot as CSV or JSON")
        self.save_button.setEnabled(False)
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip("The plot as a PNG or SVG picture, or its numbers as CSV")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.export_name = "plot"  # suggested file name (without suffix)
        self.export_rows: Callable[[], Sequence[Sequence[Any]] | None] | None = None  # CSV rows; else read from the figure
        top = QHBoxLayout()
        top.addWidget(self.toolbar, 1)
        top.addWidget(self.export_button)
        top.addWidget(self.save_button)
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        self.splitter.setObjectName("plot_table_split")
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.table)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setCollapsible(0, False)
        self.splitter.setSizes([400, 110])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.splitter, 1)

    def show_plot(self, shown: bool = True) -> None:
        self.stack.setCurrentIndex(1 if shown else 0)
        self.toolbar.setEnabled(shown)
        self.export_button.setEnabled(shown)
        if not shown:
            self.save_button.setEnabled(False)

    def _on_export_button_clicked(self) -> None:
        from merge_studio.gui.plot_export import ask_export

        try:
            ask_export(self, self.figure, f"{self.export_name}.png", rows=self.export_rows, canvas=self.canvas)
        except MergeStudioError as exc:
            QMessageBox.warning(self, "Export failed", str(exc))

    @property
    def plot_visible(self) -> bool:
        return self.stack.currentIndex() == 1


class BarrierPanel(QWidget):
    """Controls, a live barrier plot with its table, and an "evaluate models" bar chart."""

    sig_run_requested = Signal(object)
    """A :class:`BarrierRequest` or :class:`EvaluateRequest` to run."""
    sig_cancel_requested = Signal()
    sig_finished = Signal(object)
    """The report or scores that were just shown, or ``None`` after a failure or cancel."""

    def __init__(self, parent: QWidget | None = None, *, runner: Any | None = None,
                 models_provider: Callable[[], Sequence[tuple[str, Path]]] | None = None,
                 recipe_provider: Callable[[], Any] | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("barrier_panel")
        self.runner = None
        self.worker: Any | None = None
        self.report: BarrierReport | None = None
        self.scores: ModelScores | None = None
        self.aligned_state: dict[str, Any] | None = None
        self._aligned_pair: tuple[Any, Any] | None = None
        self._models: list[tuple[str, Path]] = []
        self._models_provider = models_provider
        self._recipe_provider = recipe_provider  # the window's recipe, for a test merge in memory
        self._result_inputs: list[str] = []  # the files the results on screen were computed from
        self._data_file: str | None = None
        self._running = False
        self._live_points: list[BarrierPoint] = []  # replayed when the plots change between side by side and stacked
        self._rows = 1  # 2: loss above accuracy (a narrow tab)
        self._options_folded: bool | None = None
        self.eta = EtaClock()
        self._build_ui()
        self._connect()
        self._adopt_window(parent, runner)
        self.set_running(False)

    # --- construction -------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.model_a = QComboBox(self)
        self.model_b = QComboBox(self)
        self.merged = QComboBox(self)
        self.arch = QLineEdit(self)
        self.arch.setPlaceholderText("detected from the file")
        self.arch.setToolTip("Architecture spec, e.g. zoo:mlp, zoo:resnet20?width=1, my_model.py:build or "
                             "hf:model_folder (Hugging Face folders are detected from their config.json)")
        self.data_source = QComboBox(self)
        self.data_source.addItem("digits (built in)", "digits")
        self.data_source.addItem("File…", "file")
        self.data_source.addItem("Text folder…", "text_folder")
        self.data_source.setItemData(1, "Tensors (.safetensors/.pt/.npz), a dataset factory (.py), or text for "
                                        "language models (.txt, .jsonl)", Qt.ItemDataRole.ToolTipRole)
        self.steps = QSpinBox(self)
        self.steps.setRange(2, 401)
        self.steps.setValue(25)
        self.steps.setToolTip("Points along the line from A to B")
        self.split_train = QCheckBox("train", self)
        self.split_test = QCheckBox("test", self)
        self.split_train.setChecked(True)
        self.split_test.setChecked(True)
        self.curve_checks: dict[str, QCheckBox] = {}
        for kind, label in CURVE_LABELS.items():
            box = QCheckBox(label, self)
            box.setChecked(kind in ("naive", "bn_reset", "merged"))
            self.curve_checks[kind] = box
        self.curve_checks["bn_reset"].setToolTip("Only drawn for models with BatchNorm")
        self.curve_checks["aligned"].setToolTip("A → B aligned to A (the better of weight and activation matching runs "
                                                "first unless an alignment from the Permutations tab is given)")
        self.curve_checks["repaired"].setToolTip("A → aligned B, every hidden unit's mean and spread reset to the "
                                                 "interpolation of the endpoints' at each point (REPAIR)")
        self.reset_bn = QCheckBox("Re-estimate BN statistics", self)
        self.reset_bn.setChecked(True)
        self.reset_bn.setToolTip("For models with BatchNorm: recompute running statistics on training data at "
                                 "every point (interpolated statistics are otherwise meaningless)")
        self.run_button = QPushButton("Run", self)
        self.run_button.setObjectName("barrier_run")
        self.evaluate_button = QPushButton("Evaluate models", self)
        self.evaluate_button.setToolTip("Loss and accuracy of A, B and the merged model on the chosen data")
        self.cancel_button = QPushButton("Cancel", self)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(True)
        self.status = QLabel("", self)
        self.status.setObjectName("barrier_status")
        self.status.setWordWrap(True)

        form = QFormLayout()
        pair = QHBoxLayout()
        pair.addWidget(self.model_a, 1)
        pair.addWidget(QLabel("↔", self))
        pair.addWidget(self.model_b, 1)
        form.addRow("Models A ↔ B", pair)
        form.addRow("Merged model", self.merged)
        options = FlowLayout()
        steps = QHBoxLayout()
        steps.addWidget(QLabel("Steps", self))
        steps.addWidget(self.steps)
        arch = QHBoxLayout()
        arch.addWidget(QLabel("Arch", self))
        arch.addWidget(self.arch, 1)
        self.arch.setMinimumWidth(140)
        for widget in (self.data_source, _row_widget(steps, self), self.split_train, self.split_test, _row_widget(arch, self)):
            options.addWidget(widget)
        curves = FlowLayout()
        for box in self.curve_checks.values():
            curves.addWidget(box)
        curves.addWidget(self.reset_bn)
        # data and curve options fold into one summary line, so a laptop screen keeps room for the plots
        self.options_toggle = QToolButton(self)
        self.options_toggle.setObjectName("barrier_options_toggle")
        self.options_toggle.setCheckable(True)
        self.options_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.options_toggle.setAutoRaise(True)
        self.options_summary = QLabel(self)
        self.options_summary.setObjectName("barrier_options_summary")
        self.options_summary.setWordWrap(True)
        self.options_summary.setStyleSheet("color:#5a6470;")
        summary_row = QHBoxLayout()
        summary_row.addWidget(self.options_toggle)
        summary_row.addWidget(self.options_summary, 1)
        self.options_box = QWidget(self)
        options_form = QFormLayout(self.options_box)
        options_form.setContentsMargins(0, 0, 0, 0)
        options_form.addRow("Data", _flow_widget(options, self.options_box))
        options_form.addRow("Curves", _flow_widget(curves, self.options_box))
        form.addRow("Options", summary_row)
        form.addRow(self.options_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.evaluate_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        form.addRow(buttons)

        self.barrier_page = _PlotPage(EMPTY_SENTENCE, BARRIER_COLUMNS, self)
        self.scores_page = _PlotPage("Press “Evaluate models” to compare the loss and accuracy of A, B and the "
                                     "merged model.", SCORE_COLUMNS, self)
        self.barrier_page.export_name, self.scores_page.export_name = "barrier", "scores"
        self.barrier_page.export_rows = self._barrier_rows
        self.scores_page.export_rows = self._score_rows
        figure = self.barrier_page.figure
        self.loss_plotter = BarrierPlotter(figure.add_subplot(1, 2, 1), metric="loss", splits=("test", "train"))
        self.accuracy_plotter = BarrierPlotter(figure.add_subplot(1, 2, 2), metric="accuracy", splits=("test", "train"))
        self.scores_page.canvas.setMinimumSize(MIN_AXES_SIZE[0], 2 * MIN_AXES_SIZE[1])
        self.pages = QTabWidget(self)
        self.pages.setDocumentMode(True)
        self.pages.addTab(self.barrier_page, "Barrier")
        self.pages.addTab(self.scores_page, "Evaluate models")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.status)
        layout.addWidget(self.pages, 1)

    def _connect(self) -> None:
        self.run_button.clicked.connect(self._on_run_button_clicked)
        self.evaluate_button.clicked.connect(self._on_evaluate_button_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        self.barrier_page.save_button.clicked.connect(self._on_save_barrier_clicked)
        self.scores_page.save_button.clicked.connect(self._on_save_scores_clicked)
        self.data_source.activated.connect(self._on_data_source_activated)
        self.options_toggle.toggled.connect(lambda shown: self.set_options_folded(not shown))
        for box in (*self.curve_checks.values(), self.reset_bn, self.split_train, self.split_test):
            box.toggled.connect(self._refresh_options_summary)
        self.steps.valueChanged.connect(self._refresh_options_summary)
        self.data_source.currentIndexChanged.connect(self._refresh_options_summary)
        for combo in (self.model_a, self.model_b):
            combo.currentIndexChanged.connect(self._refresh_buttons)

    def _adopt_window(self, parent: QWidget | None, runner: Any | None) -> None:
        """Inside the main window: use its job runner, its model list and its merge results."""
        if runner is None and parent is not None:
            runner = getattr(parent, "runner", None)
        if runner is not None and hasattr(runner, "start"):
            self.attach_runner(runner)
        session = getattr(parent, "session", None)
        if self._models_provider is None and session is not None and hasattr(session, "ready_models"):
            self._models_provider = lambda: [(m.name, Path(m.path)) for m in session.ready_models]
        if self._recipe_provider is None and session is not None and hasattr(session, "to_recipe"):
            self._recipe_provider = session.to_recipe
        merged_signal = getattr(parent, "sig_merge_finished", None)
        if merged_signal is not None:
            merged_signal.connect(self._on_window_merge_finished)

    # --- inputs -------------------------------------------------------------------------
    def set_models(self, models: Sequence[tuple[str, str | Path]]) -> None:
        """The models to choose A and B (and the merged model) from, as (name, path)."""
        previous = (self.model_a.currentData(), self.model_b.currentData(), self.merged.currentData())
        self._models = [(name, Path(path)) for name, path in models]
        shown = [_short_name(name) for name, _ in self._models]
        for combo in (self.model_a, self.model_b):
            combo.blockSignals(True)
            combo.clear()
            for name, (_, path) in zip(shown, self._models, strict=True):
                combo.addItem(name, str(path))
            combo.blockSignals(False)
        self.merged.clear()
        self.merged.addItem(NO_MERGED, None)
        if self._recipe_provider is not None:
            self.merged.addItem(IN_MEMORY_TEXT, IN_MEMORY)
            self.merged.setItemData(1, "Merge the recipe in the method panel into memory first, then draw and "
                                       "evaluate it like a merged file: a test before anything is written",
                                    Qt.ItemDataRole.ToolTipRole)
        for name, (_, path) in zip(shown, self._models, strict=True):
            self.merged.addItem(name, str(path))
        self._select(self.model_a, previous[0], 0)
        self._select(self.model_b, previous[1], 1)
        self._select(self.merged, previous[2], 0)
        self._refresh_buttons()

    def set_merged(self, path: str | Path, name: str | None = None) -> None:
        """Offer (and choose) a freshly merged model for the A → merged → B path and the evaluation."""
        path = Path(path)
        index = self.merged.findData(str(path))
        if index < 0:
            self.merged.addItem(name or path.stem, str(path))
            index = self.merged.count() - 1
        self.merged.setCurrentIndex(index)

    def select_pair(self, path_a: str | Path, path_b: str | Path) -> None:
        """Choose A and B (e.g. the pair just aligned in the Permutations tab)."""
        self._refresh_models()
        self._select(self.model_a, str(path_a), 0)
        self._select(self.model_b, str(path_b), 1)

    def set_aligned(self, state_dict: dict[str, Any] | None) -> None:
        """B aligned to A (from the Permutations tab): the "aligned" curve then uses it instead of aligning again.

        It belongs to the A and B chosen now; choosing another pair aligns inside the job again.
        """
        self.aligned_state = state_dict
        self._aligned_pair = (self.model_a.currentData(), self.model_b.currentData()) if state_dict is not None else None
        self.curve_checks["aligned"].setChecked(state_dict is not None)
        self.curve_checks["repaired"].setChecked(state_dict is not None)
        self._refresh_buttons()

    def set_data_source(self, source: str) -> None:
        """``digits`` or a path to a tensors file / ``file.py:make_dataset``."""
        if source == "digits":
            self.data_source.setCurrentIndex(0)
            return
        self._data_file = source
        index = self.data_source.findData(source)
        if index < 0:
            self.data_source.insertItem(1, Path(source.split(":")[0]).name, source)
            index = 1
        self.data_source.setCurrentIndex(index)

    @staticmethod
    def _select(combo: QComboBox, data: object, fallback: int) -> None:
        index = combo.findData(data) if data is not None else -1
        combo.setCurrentIndex(index if index >= 0 else min(fallback, combo.count() - 1))

    def _refresh_models(self) -> None:
        if self._models_provider is not None:
            models = list(self._models_provider())
            if models != self._models:
                self.set_models(models)

    def _refresh_buttons(self) -> None:
        running = self._running
        ready = self.model_a.count() >= 2
        self.run_button.setEnabled(ready and not running)
        self.evaluate_button.setEnabled(ready and not running)
        if self.model_a.count() < 2 and not running:
            self.status.setText("Load two models of the same architecture to compare them.")

    def showEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        self._refresh_models()
        if self._options_folded is None:  # first show: fold on laptop screens
            self.set_options_folded(self.window().height() < FOLD_OPTIONS_BELOW)
        super().showEvent(event)

    def set_options_folded(self, folded: bool) -> None:
        """Show the data and curve options, or only a line that sums them up."""
        self._options_folded = folded
        self.options_box.setVisible(not folded)
        self.options_toggle.blockSignals(True)
        self.options_toggle.setChecked(not folded)
        self.options_toggle.blockSignals(False)
        self.options_toggle.setArrowType(Qt.ArrowType.RightArrow if folded else Qt.ArrowType.DownArrow)
        self._refresh_options_summary()

    def _refresh_options_summary(self) -> None:
        curves = [box.text() for box in self.curve_checks.values() if box.isChecked()]
        text = f"{self.data_source.currentText()} · {self.steps.value()} steps · {' + '.join(self.splits())}"
        text += f" · curves: {', '.join(curves) or 'none'}"
        self.options_toggle.setText("Show" if self._options_folded else "Hide")
        self.options_toggle.setToolTip("Show or hide the data and curve options")
        self.options_summary.setText(text if self._options_folded else "")

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        """Narrow: loss above accuracy, so each plot keeps a readable width."""
        super().resizeEvent(event)
        rows = 2 if self.barrier_page.width() < STACK_WIDTH else 1
        if rows != self._rows:
            self._rows = rows
            self.barrier_page.canvas.setMinimumSize(MIN_AXES_SIZE[0], rows * MIN_AXES_SIZE[1])
            if self.report is not None:
                self._draw_report(self.report)
            else:
                self._reset_live_axes(replay=True)

    # --- requests -----------------------------------------------------------------------
    def data_spec(self) -> DataSpec:
        return DataSpec(source=self.data_source.currentData() or "digits")

    def splits(self) -> tuple[str, ...]:
        chosen = tuple(s for s, box in (("train", self.split_train), ("test", self.split_test)) if box.isChecked())
        return chosen or ("test",)

    def evaluate_pair(self, path_a: str | Path, path_b: str | Path) -> None:
        """Score two models side by side (no merged model), e.g. two merges being compared."""
        if self._running:
            return
        self.select_pair(path_a, path_b)
        self.merged.setCurrentIndex(0)
        self._on_evaluate_button_clicked()

    def test_in_memory(self) -> None:
        """Evaluate the window's recipe merged in memory next to A and B (Merge ▸ Test merge in memory)."""
        self._refresh_models()
        index = self.merged.findData(IN_MEMORY)
        if index >= 0:
            self.merged.setCurrentIndex(index)
            self._on_evaluate_button_clicked()

    def _merged_choice(self) -> tuple[str | None, Any]:
        """(merged file, recipe to merge in memory): at most one of them is set."""
        merged = self.merged.currentData()
        if merged != IN_MEMORY:
            return merged, None
        return None, self._recipe_provider() if self._recipe_provider is not None else None

    def build_request(self) -> BarrierRequest:
        merged, recipe = self._merged_choice()
        curves = [k for k, box in self.curve_checks.items() if box.isChecked() and box.isEnabled()]
        if merged is None and recipe is None and "merged" in curves:
            curves.remove("merged")
        if not self.reset_bn.isChecked() and "bn_reset" in curves:
            curves.remove("bn_reset")
        return BarrierRequest(
            model_a=self.model_a.currentData(), model_b=self.model_b.currentData(), arch=self.arch.text().strip() or None,
            data=self.data_spec(), steps=self.steps.value(), splits=self.splits(),
            curves=tuple(curves), merged=merged, merged_recipe=recipe, aligned_state=self.current_aligned_state(),
            reset_bn="auto" if self.reset_bn.isChecked() else "off",
        )

    def current_aligned_state(self) -> dict[str, Any] | None:
        """The aligned B handed over, when it was aligned for the A and B chosen now."""
        pair = (self.model_a.currentData(), self.model_b.currentData())
        return self.aligned_state if self.aligned_state is not None and pair == self._aligned_pair else None

    def build_evaluate_request(self) -> EvaluateRequest:
        merged, recipe = self._merged_choice()
        paths = [self.model_a.currentData(), self.model_b.currentData()]
        if merged is not None:
            paths.append(merged)
        unique = tuple(dict.fromkeys(p for p in paths if p))
        names = tuple(self._name_for(p) for p in unique)
        return EvaluateRequest(models=unique, names=names, arch=self.arch.text().strip() or None,
                               data=self.data_spec(), splits=self.splits(),
                               reset_bn="auto" if self.reset_bn.isChecked() else "off", merged_recipe=recipe)

    def _name_for(self, path: str) -> str:
        for combo in (self.merged, self.model_a):
            index = combo.findData(path)
            if index >= 0 and combo.itemText(index) != NO_MERGED:
                return combo.itemText(index)
        return Path(path).stem

    def _on_run_button_clicked(self) -> None:
        self._refresh_models()
        if self.model_a.count() == 0:
            return
        request = self._built(self.build_request)
        if request is None:
            return
        self.report = None
        self._reset_live_axes()
        self.barrier_page.table.setRowCount(0)
        self.barrier_page.show_plot(False)
        self.pages.setCurrentWidget(self.barrier_page)
        self._emit(request)

    def _built(self, build: Callable[[], Any]) -> Any:
        """A request, or None with the reason in the status line (the recipe to merge in memory is not valid)."""
        try:
            return build()
        except MergeStudioError as exc:
            self.status.setText(f"Cannot merge the recipe in memory: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
            return None

    def _reset_live_axes(self, *, replay: bool = False) -> None:
        """Fresh loss and accuracy axes for live points (a finished report may have replaced them).

        ``replay`` draws the points already received again (after a change of layout).
        """
        if not replay:
            self._live_points = []
        points = list(self._live_points)
        rows, splits = self._rows, tuple(s for s in ("test", "train") if s in self.splits())

        def reset(figure: Figure) -> None:
            figure.clear()
            self.loss_plotter.ax = figure.add_subplot(rows, 3 - rows, 1)
            self.accuracy_plotter.ax = figure.add_subplot(rows, 3 - rows, 2)
            for plotter in (self.loss_plotter, self.accuracy_plotter):
                plotter.splits = splits
                plotter.clear()
            for point in points:
                self.loss_plotter.add_point(point)
                self.accuracy_plotter.add_point(point)

        self.barrier_page.canvas.edit(reset)

    def _on_evaluate_button_clicked(self) -> None:
        self._refresh_models()
        if self.model_a.count() == 0:
            return
        request = self._built(self.build_evaluate_request)
        if request is None:
            return
        self.pages.setCurrentWidget(self.scores_page)
        self._emit(request)

    def _barrier_rows(self) -> list[list[str]] | None:
        """The finished report's long table (curve, split, λ, loss, accuracy), else the figure's points."""
        if self.report is None:
            return None
        import csv as csv_module

        return list(csv_module.reader(self.report.to_csv().splitlines()))

    def _score_rows(self) -> list[list[Any]] | None:
        if self.scores is None:
            return None
        rows: list[list[Any]] = [["model", "split", "loss", "accuracy", "perplexity", "examples"]]
        for split, results in self.scores.results.items():
            rows += [[name, split, r.loss, r.accuracy, r.perplexity, r.n] for name, r in zip(self.scores.names, results, strict=True)]
        return rows

    def kept_results(self) -> tuple[BarrierReport | None, ModelScores | None, list[str]]:
        """The curves and scores on screen and the files they were computed from (to keep with a recipe)."""
        return self.report, self.scores, list(self._result_inputs)

    def show_saved(self, saved: Any, source: str) -> None:
        """Show curves and scores kept with a recipe, saying where they come from (and when they are stale)."""
        if saved.barrier is not None:
            self.set_result(saved.barrier)
        if saved.scores is not None:
            self.set_scores(saved.scores)
        note = f"Shown from {source}, saved with the recipe"
        if saved.stale:
            note += f"; {', '.join(saved.stale)} changed since, so run again to update them"
        self.status.setText(note + ".")

    def _emit(self, request: BarrierRequest | EvaluateRequest) -> None:
        self.status.setText("Starting…")
        if isinstance(request, BarrierRequest):
            self._result_inputs = [p for p in (request.model_a, request.model_b, request.merged) if p]
        else:
            self._result_inputs = list(request.models)
        self.sig_run_requested.emit(request)
        if self.runner is not None:
            self._start_job(request)

    def _on_cancel_button_clicked(self) -> None:
        self.status.setText("Cancelling…")
        self.sig_cancel_requested.emit()
        if self.worker is not None:
            self.worker.cancel()

    def _on_data_source_activated(self, index: int) -> None:
        kind = self.data_source.itemData(index)
        if kind == "text_folder":
            folder = QFileDialog.getExistingDirectory(self, "Folder of .txt files for language models")
            if folder:
                self.set_data_source(folder)
            else:
                self.data_source.setCurrentIndex(0)
            return
        if kind != "file":
            return
        chosen, _ = QFileDialog.getOpenFileName(
            self, "Evaluation data", str(Path(self._data_file).parent) if self._data_file else "",
            "Data (*.safetensors *.pt *.pth *.npz *.py *.txt *.jsonl);;Text for language models (*.txt *.jsonl);;"
            "All files (*)")
        if chosen:
            self.set_data_source(chosen + (":make_dataset" if chosen.endswith(".py") else ""))
        else:
            self.data_source.setCurrentIndex(0)

    def _on_save_barrier_clicked(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Save barrier numbers", "barrier.csv", "CSV (*.csv);;JSON (*.json)")
        if chosen:
            self.save_numbers(chosen)

    def _on_save_scores_clicked(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Save model scores", "scores.json", "JSON (*.json)")
        if chosen:
            self.save_numbers(chosen, scores=True)

    def save_numbers(self, path: str | Path, *, scores: bool = False) -> Path | None:
        """Write the barrier report (``.csv`` or ``.json``) or the model scores (``.json``)."""
        import json

        target = Path(path)
        try:
            if scores:
                if self.scores is None:
                    return None
                target.write_text(json.dumps(self.scores.to_json(), indent=2), encoding="utf-8")
            else:
                if self.report is None:
                    return None
                is_json = target.suffix.lower() == ".json"
                self.report.save(json_path=target if is_json else None, csv_path=None if is_json else target)
        except (OSError, MergeStudioError) as exc:
            self.status.setText(f"Could not save {target.name}: {exc}")
            return None
        self.status.setText(f"Saved {target}")
        return target

    def _on_window_merge_finished(self, result: object) -> None:
        outputs = getattr(result, "outputs", None)
        if outputs:
            self.set_merged(outputs[0])

    # --- running through a JobRunner ----------------------------------------------------
    def attach_runner(self, runner: Any) -> None:
        """Run requests on ``runner`` (a :class:`~merge_studio.gui.workers.JobRunner`) and show their results."""
        self.runner = runner

    def _start_job(self, request: BarrierRequest | EvaluateRequest) -> None:
        name = "barrier" if isinstance(request, BarrierRequest) else "evaluate"
        worker = self.runner.start(request.job, name)
        self.worker = worker
        worker.sig_progress.connect(self.set_progress)
        worker.sig_partial.connect(self._on_worker_partial)
        worker.sig_result.connect(self._on_worker_result)
        worker.sig_failed.connect(self._on_worker_failed)  # a bound method: queued to the GUI thread
        worker.sig_cancelled.connect(self.set_cancelled)
        worker.sig_done.connect(self._on_worker_done)
        self.set_running(True)

    def _on_worker_partial(self, item: object) -> None:
        if isinstance(item, BarrierPoint):
            self.add_point(item)

    def _on_worker_failed(self, error: object) -> None:
        self.set_failed(getattr(error, "message", str(error)), getattr(error, "hint", None))

    def _on_worker_result(self, result: object) -> None:
        if isinstance(result, BarrierReport):
            self.set_result(result)
        elif isinstance(result, ModelScores):
            self.set_scores(result)

    def _on_worker_done(self) -> None:
        self.worker = None
        self.set_running(False)

    # --- outputs ------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        """Lock the inputs and show Cancel and the progress bar while a job runs."""
        self._running = running
        self.cancel_button.setEnabled(running)
        self.cancel_button.setVisible(running)
        self.progress.setVisible(running)
        for widget in (self.model_a, self.model_b, self.merged, self.data_source, self.steps, self.arch):
            widget.setEnabled(not running)
        if running:
            self.eta.start()
            self.progress.setRange(0, 0)
            self.run_button.setEnabled(False)
            self.evaluate_button.setEnabled(False)
        else:
            self._refresh_buttons()

    def set_progress(self, progress: Progress) -> None:
        eta = self.eta.update(progress)
        if progress.total:
            self.progress.setRange(0, progress.total)
            self.progress.setValue(progress.done)
            self.progress.setFormat(f"{progress.done}/{progress.total} {progress.unit}" + (f" · {eta}" if eta else ""))
        self.status.setText(progress.message or progress.current or progress.stage)

    def add_point(self, point: BarrierPoint) -> None:
        """Extend the live curves with one evaluated point."""
        if not self.barrier_page.plot_visible:
            self.barrier_page.show_plot(True)
        self._live_points.append(point)

        def add(_figure: Figure) -> None:
            self.loss_plotter.add_point(point)
            self.accuracy_plotter.add_point(point)

        self.barrier_page.canvas.edit(add)

    def set_result(self, report: BarrierReport) -> None:
        """Show the finished curves with their barriers, and their numbers in the table."""
        self.report = report
        self._draw_report(report)
        self.barrier_page.show_plot(True)
        self.barrier_page.save_button.setEnabled(True)
        table = self.barrier_page.table
        rows = report.summary_rows()
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(str(row["curve"])))
            table.setItem(r, 1, QTableWidgetItem(str(row["split"])))
            for c, key in enumerate(("loss_at_A", "loss_at_B", "loss_max", "loss_barrier"), start=2):
                table.setItem(r, c, _number_item(row[key]))
            drop = row["accuracy_barrier"]
            table.setItem(r, 6, _number_item(None if drop is None else 100 * drop, "{:.1f} pts"))
        best = min(rows, key=lambda row: row["loss_barrier"]) if rows else None
        self.status.setText(f"Done: {len(report.curves)} curve(s) × {report.steps} points on {report.data}."
                            + (f" Lowest loss barrier: {best['curve']} ({best['loss_barrier']:.3g})." if best else ""))
        self.sig_finished.emit(report)

    def _draw_report(self, report: BarrierReport) -> None:
        splits = tuple(s for s in ("test", "train") if s in report.splits) or report.splits
        rows = self._rows

        def draw(figure: Figure) -> None:
            axes = draw_barrier_report(figure, report.curves, splits=splits, compact=True, rows=rows, task=report.task)
            self.loss_plotter.ax = axes[0]
            if len(axes) > 1:
                self.accuracy_plotter.ax = axes[1]

        self.barrier_page.canvas.edit(draw)

    def set_scores(self, scores: ModelScores) -> None:
        """Show per-model loss and accuracy (bar chart and table)."""
        self.scores = scores
        merged_name = self.merged.currentText() if self.merged.currentData() is not None else None
        if self.merged.currentData() == IN_MEMORY:
            merged_name = MEMORY_MERGE_NAME
        narrow = self.width() < NARROW_PLOT_WIDTH

        def draw(figure: Figure) -> None:
            draw_model_scores(figure, scores.names, scores.results,
                              highlight=merged_name if merged_name in scores.names else None)
            if narrow:
                _compact_bars(figure)

        self.scores_page.canvas.edit(draw)
        self.scores_page.show_plot(True)
        self.scores_page.save_button.setEnabled(True)
        table = self.scores_page.table
        rows = [(name, split, scores.results[split][i]) for i, name in enumerate(scores.names) for split in scores.results]
        table.setRowCount(len(rows))
        for r, (name, split, result) in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(name))
            table.setItem(r, 1, QTableWidgetItem(split))
            table.setItem(r, 2, _number_item(result.loss))
            table.setItem(r, 3, _number_item(None if result.accuracy is None else 100 * result.accuracy, "{:.2f}%"))
            table.setItem(r, 4, _number_item(result.n, "{:.0f}"))
        split = "test" if "test" in scores.results else next(iter(scores.results))
        self.status.setText(f"Best {split} loss: {scores.best(split)}." + _perplexities(scores, split))
        self.pages.setCurrentWidget(self.scores_page)
        self.sig_finished.emit(scores)

    def set_failed(self, message: str, hint: str | None = None) -> None:
        self.status.setText(f"Failed: {message}" + (f" ({hint})" if hint else ""))
        self.sig_finished.emit(None)

    def set_cancelled(self) -> None:
        self.status.setText("Cancelled.")
        self.sig_finished.emit(None)

    def shutdown(self) -> None:
        """Ask a running job to stop (the window's runner waits for the thread)."""
        if self.worker is not None:
            self.worker.cancel()
