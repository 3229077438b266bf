"""The Graph tab's properties panel: what the selected node is, without leaving the graph.

Module name and type, its tensors with shape and dtype, the value the overlay
gives it, and statistics of each tensor (mean, std, min, max, norm, share of
zeros) in every loaded model. The statistics read tensors from disk, so they are
computed by a job (:func:`merge_studio.core.tensor_stats.iter_layer_stats`) on
the window's job runner, never on the GUI thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from merge_studio.graph.model import GraphNode, format_count, format_shape
from merge_studio.graph.overlay import format_value, layer_value

MAX_TENSORS = 24  # a block's tensors beyond this are counted, not listed (its statistics would take long)
STAT_COLUMNS = ("tensor", "model", "mean", "std", "min", "max", "norm", "zeros")
EMPTY_TEXT = "Click a layer to see its tensors and their statistics here."

ModelsProvider = Callable[[], Sequence[tuple[str, Path]]]


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return format_value(value)


class GraphProperties(QWidget):
    """Module, tensors, overlay value and per-model statistics of one graph node."""

    def __init__(self, runner: Any | None = None, models_provider: ModelsProvider | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("graph_properties")
        self.runner = runner
        self.models_provider = models_provider
        self.node: GraphNode | None = None
        self.tensor_names: list[str] = []
        self.stats: dict[str, dict[str, Any]] = {}
        self._worker: Any = None

        self.title = QLabel(EMPTY_TEXT, self)
        self.title.setObjectName("properties_title")
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QLabel(self)
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.overlay_label = QLabel(self)
        self.overlay_label.setObjectName("properties_overlay")
        self.overlay_label.setWordWrap(True)
        self.tensors = self._table(("tensor", "shape", "dtype"))
        self.stats_label = QLabel("Statistics in each loaded model", self)
        self.stats_label.setObjectName("panel_title")
        self.stats_table = self._table(STAT_COLUMNS)
        self.status = QLabel(self)
        self.status.setStyleSheet("color:#5a6470;")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 4, 4)
        for widget in (self.title, self.details, self.overlay_label):
            layout.addWidget(widget)
        layout.addWidget(self.tensors, 1)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.stats_table, 2)
        layout.addWidget(self.status)
        self.clear()

    def _table(self, columns: Sequence[str]) -> QTableWidget:
        table = QTableWidget(0, len(columns), self)
        table.setHorizontalHeaderLabels(list(columns))
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # headers never cut
        header.setStretchLastSection(True)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        table.setWordWrap(False)
        return table

    # --- what to show -----------------------------------------------------------------
    def clear(self) -> None:
        self._cancel()
        self.node = None
        self.tensor_names = []
        self.stats = {}
        self.title.setText(EMPTY_TEXT)
        self.details.clear()
        self.overlay_label.clear()
        self.tensors.setRowCount(0)
        self.stats_table.setRowCount(0)
        self.status.clear()
        self._set_tables_shown(False)

    def _set_tables_shown(self, shown: bool) -> None:
        """Until a node is chosen the panel is one line of help, so the graph keeps the room."""
        for widget in (self.tensors, self.stats_label, self.stats_table):
            widget.setVisible(shown)

    def show_node(self, node: GraphNode, checkpoint: Any = None, overlay: Any = None, legend: Any = None) -> None:
        """Describe ``node``; its tensors come from ``checkpoint`` (the one the graph shows)."""
        self._cancel()
        self.node = node
        self._set_tables_shown(True)
        self.title.setText(f"<b>{node.module_path or node.label}</b>")
        facts = [node.module_type] if node.module_type else []
        if node.param_count:
            facts.append(f"{format_count(node.param_count)} parameters")
        if node.input_shapes:
            facts.append("in " + ", ".join(format_shape(s) for s in node.input_shapes))
        if node.output_shapes:
            facts.append("out " + ", ".join(format_shape(s) for s in node.output_shapes))
        self.details.setText(" · ".join(facts))
        self.set_overlay(overlay, legend)
        infos = dict(getattr(checkpoint, "infos", {}) or {})
        from merge_studio.core.tensor_stats import layer_tensors

        names = layer_tensors(list(infos), node.module_path) if node.module_path else []
        shown = names[:MAX_TENSORS]
        self.tensor_names = shown
        self.tensors.setRowCount(len(shown))
        for row, name in enumerate(shown):
            info = infos[name]
            self.tensors.setItem(row, 0, QTableWidgetItem(name))
            self.tensors.setItem(row, 1, QTableWidgetItem(format_shape(tuple(info.shape))))
            self.tensors.setItem(row, 2, QTableWidgetItem(getattr(info, "dtype_name", str(getattr(info, "dtype", "")))))
        more = len(names) - len(shown)
        self.stats = {}
        self.stats_table.setRowCount(0)
        if not names:
            self.status.setText("This node holds no tensors of the checkpoint." if node.module_path else "")
            return
        self.status.setText(f"… and {more} more tensors inside" if more > 0 else "")
        self._start_stats(shown)

    def set_overlay(self, overlay: Any = None, legend: Any = None) -> None:
        """Say what the overlay on screen gives this node (and what that value means)."""
        if overlay is None or self.node is None:
            self.overlay_label.clear()
            return
        value = layer_value(self.node.module_path, overlay.values)
        meaning = getattr(legend, "title", "") or overlay.title
        if value is None:
            self.overlay_label.setText(f"{overlay.title}: no value for this layer")
        else:
            self.overlay_label.setText(f"{overlay.title}: <b>{format_value(value)}</b>"
                                       + (f"<br><span style='color:#5a6470'>{meaning}</span>" if meaning != overlay.title else ""))

    # --- statistics ------------------------------------------------------------------------
    def _models(self) -> list[tuple[str, Path]]:
        return list(self.models_provider()) if self.models_provider is not None else []

    def _start_stats(self, names: list[str]) -> None:
        models = self._models()
        if self.runner is None or not models:
            self.status.setText("Load models to see their statistics.")
            return
        from merge_studio.core.tensor_stats import iter_layer_stats

        self.stats_label.setText(f"Statistics in each loaded model ({len(models)})")
        self.status.setText("Computing statistics…")
        worker = self.runner.start(lambda cancel: iter_layer_stats(models, names, cancel), "layer-stats")
        worker.sig_result.connect(self._on_worker_result)
        worker.sig_failed.connect(self._on_worker_failed)
        self._worker = worker

    def _cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None

    @Slot(object)
    def _on_worker_result(self, stats: dict[str, dict[str, Any]]) -> None:
        if self.sender() is not self._worker:
            return  # another node was chosen since
        self._worker = None
        self.stats = stats
        rows = [(tensor, model, stats[model][tensor]) for tensor in self.tensor_names for model in stats if tensor in stats[model]]
        self.stats_table.setRowCount(len(rows))
        for r, (tensor, model, s) in enumerate(rows):
            short = tensor[len(self.node.module_path) + 1:] if self.node and tensor.startswith(self.node.module_path + ".") else tensor
            cells = (short, model, _number(s.mean), _number(s.std), _number(s.min), _number(s.max), _number(s.norm),
                     f"{s.zeros:.1%}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setToolTip(tensor if c == 0 else text)
                self.stats_table.setItem(r, c, item)
        self.status.setText("")

    @Slot(object)
    def _on_worker_failed(self, error: Any) -> None:
        if self.sender() is self._worker:
            self._worker = None
        self.status.setText(f"Statistics not available: {getattr(error, 'message', error)}")

    def shutdown(self) -> None:
        self._cancel()


__all__ = ["GraphProperties"]
