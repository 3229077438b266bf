"""The slice editor: build a stacked model by picking layer ranges of the loaded models.

Left, each model as a column of its layers (:mod:`merge_studio.gui.views.layer_columns`);
right, the output stack: one row per slice, dragged in from the columns (or added with
a button), reordered by dragging, and given parameters. A second source added to a slice
makes it a merged slice (its layers are merged by the recipe's method, as mergekit
allows). The output's depth and parameter count follow every edit. The slices read and
write the same YAML as mergekit (``slices:`` with ``sources`` and ``layer_range``).

The dialog only edits a list of slices; the window puts them into the recipe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDragMoveEvent, QDropEvent, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.checkpoints.base import TensorInfo
from merge_studio.core.recipe_slices import SliceEntry
from merge_studio.core.safe_yaml import load_yaml
from merge_studio.core.stacking import layer_count, summarize_stack
from merge_studio.gui.views.layer_columns import SLICE_MIME, LayerColumns, ModelColumn, colour_of

SLICE_ROLE = Qt.ItemDataRole.UserRole + 1
HINT = ("Press and drag down a column to pick layers, then drag the range onto the stack (or press Add slice). "
        "Drag rows to reorder them. Add a second source to a slice to merge the two ranges with the method.")


class StackList(QListWidget):
    """The output stack: rows reorder by dragging; a range dragged from the columns adds a slice."""

    sig_slice_dropped = Signal(dict, int)
    """A source dict and the row it was dropped at."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("stack_list")
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.setWordWrap(True)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if event.mimeData().hasFormat(SLICE_MIME):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:  # noqa: N802
        if event.mimeData().hasFormat(SLICE_MIME):
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        mime = event.mimeData()
        if mime.hasFormat(SLICE_MIME):
            source = json.loads(bytes(mime.data(SLICE_MIME)).decode())
            target = self.indexAt(event.position().toPoint())
            self.sig_slice_dropped.emit(source, target.row() if target.isValid() else self.count())
            event.acceptProposedAction()
            return
        super().dropEvent(event)


class SliceEditorDialog(QDialog):
    """Edit the recipe's slices (see the module docstring)."""

    def __init__(
        self,
        models: Sequence[tuple[str, str, Mapping[str, TensorInfo]]],
        slices: Sequence[Mapping[str, Any]] | None = None,
        *,
        method: str = "passthrough",
        parent: QWidget | None = None,
    ) -> None:
        """``models``: (path, display name, tensor infos) of each loaded model; ``slices`` the recipe's;
        ``method`` the recipe's method (it merges slices with several sources)."""
        from merge_studio.core.methods.registry import get_method

        super().__init__(parent)
        self.setWindowTitle("Stack layers")
        self.setObjectName("slice_editor")
        self.infos = {path: infos for path, _, infos in models}
        self.names = {path: name for path, name, _ in models}
        stackable = [(p, n, layer_count(list(i))) for p, n, i in models]
        self.order = [p for p, _, depth in stackable if depth > 0]
        self.method = method
        self.method_label = get_method(method).label
        self._slices: list[dict[str, Any]] = []

        self.columns = LayerColumns(self)
        self.columns.set_models([ModelColumn(p, n, d) for p, n, d in stackable if d > 0])
        self.columns.sig_selection_changed.connect(self._update_buttons)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.columns)
        hint = QLabel(HINT, self)
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        left = QWidget(self)
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(hint)
        ll.addWidget(scroll, 1)

        self.stack = StackList(self)
        self.stack.sig_slice_dropped.connect(self._on_stack_slice_dropped)
        self.stack.model().rowsMoved.connect(self._on_stack_rows_moved)
        self.stack.currentRowChanged.connect(self._on_stack_current_row_changed)
        self.add_button = QPushButton("Add slice", self, toolTip="Add the picked layers as a new slice at the end")
        self.add_button.clicked.connect(lambda: self._insert_slice(self.columns.picked(), self.stack.count()))
        self.merge_button = QPushButton("Add as source", self,
                                        toolTip="Merge the picked layers into the selected slice (same number of layers)")
        self.merge_button.clicked.connect(self._on_merge_button_clicked)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self._on_remove_button_clicked)
        self.up_button = QPushButton("Up", self)
        self.up_button.clicked.connect(lambda: self._move_current(-1))
        self.down_button = QPushButton("Down", self)
        self.down_button.clicked.connect(lambda: self._move_current(1))
        buttons = QHBoxLayout()
        for b in (self.add_button, self.merge_button, self.remove_button, self.up_button, self.down_button):
            buttons.addWidget(b)
        self.params_edit = QLineEdit(self)
        self.params_edit.setObjectName("slice_params")
        self.params_edit.setPlaceholderText("slice parameters, e.g. {t: 0.3}")
        self.params_edit.setToolTip("Parameters for the selected slice in YAML (a merged slice's method "
                                    "parameters, or scale for passthrough)")
        self.params_edit.editingFinished.connect(self._on_params_edit_finished)
        self.summary = QLabel(self)
        self.summary.setObjectName("stack_summary")
        self.summary.setWordWrap(True)
        self.problem = QLabel(self)
        self.problem.setObjectName("problems")
        self.problem.setWordWrap(True)
        right = QWidget(self)
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("<b>Output stack</b> (first slice at the top)", self))
        rl.addWidget(self.stack, 1)
        rl.addLayout(buttons)
        rl.addWidget(self.params_edit)
        rl.addWidget(self.summary)
        rl.addWidget(self.problem)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setChildrenCollapsible(False)

        self.import_button = QPushButton("Import YAML…", self)
        self.import_button.clicked.connect(self._on_import_button_clicked)
        self.export_button = QPushButton("Export YAML…", self)
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self.box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        self.box.button(QDialogButtonBox.StandardButton.Ok).setText("Use these slices")
        self.box.accepted.connect(self.accept)
        self.box.rejected.connect(self.reject)
        bottom = QHBoxLayout()
        bottom.addWidget(self.import_button)
        bottom.addWidget(self.export_button)
        bottom.addStretch(1)
        bottom.addWidget(self.box)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)
        self.resize(960, 620)
        self.set_slices(slices or [])

    # --- the slices -----------------------------------------------------------------------
    def slices(self) -> list[dict[str, Any]]:
        """The stack as recipe slices (``sources`` with ``model``/``layer_range``/``params``, ``params``)."""
        return [json.loads(json.dumps(sl)) for sl in self._slices]

    def set_slices(self, slices: Sequence[Mapping[str, Any]]) -> None:
        self._slices = [
            {"sources": [{"model": str(s["model"]), "layer_range": list(s["layer_range"]),
                          "params": dict(s.get("params") or {})} for s in sl["sources"]],
             "params": dict(sl.get("params") or {})}
            for sl in slices
        ]
        self._refresh()

    def _insert_slice(self, source: Mapping[str, Any] | None, row: int) -> None:
        if source is None:
            return
        self._slices.insert(row, {"sources": [{"model": source["model"], "layer_range": list(source["layer_range"]),
                                                "params": {}}], "params": {}})
        self._refresh(row)

    def _on_stack_slice_dropped(self, source: dict, row: int) -> None:
        self._insert_slice(source, row)

    def _on_merge_button_clicked(self) -> None:
        row, picked = self.stack.currentRow(), self.columns.picked()
        if row < 0 or picked is None:
            return
        sl = self._slices[row]
        first = sl["sources"][0]["layer_range"]
        length = picked["layer_range"][1] - picked["layer_range"][0]
        if length != first[1] - first[0]:
            self.problem.setText(f"A merged slice needs the same number of layers in each source: the slice has "
                                 f"{first[1] - first[0]}, the picked range {length}.")
            return
        sl["sources"].append({"model": picked["model"], "layer_range": list(picked["layer_range"]), "params": {}})
        self._refresh(row)

    def _on_remove_button_clicked(self) -> None:
        row = self.stack.currentRow()
        if row >= 0:
            del self._slices[row]
            self._refresh(min(row, len(self._slices) - 1))

    def _move_current(self, step: int) -> None:
        row = self.stack.currentRow()
        to = row + step
        if 0 <= row < len(self._slices) and 0 <= to < len(self._slices):
            self._slices.insert(to, self._slices.pop(row))
            self._refresh(to)

    def _on_stack_rows_moved(self, *_args: Any) -> None:
        """Rows were dragged into a new order: read it back from the rows."""
        self._slices = [self.stack.item(i).data(SLICE_ROLE) for i in range(self.stack.count())]
        self._refresh(self.stack.currentRow())

    def _on_stack_current_row_changed(self, row: int) -> None:
        params = self._slices[row]["params"] if 0 <= row < len(self._slices) else {}
        self.params_edit.setText(yaml.safe_dump(params, default_flow_style=True).strip() if params else "")
        self._update_buttons()

    def _on_params_edit_finished(self) -> None:
        row = self.stack.currentRow()
        if not 0 <= row < len(self._slices):
            return
        text = self.params_edit.text().strip()
        try:
            value = load_yaml(text) if text else {}
        except yaml.YAMLError as exc:
            self.problem.setText(f"Slice parameters are not YAML: {exc}")
            return
        if not isinstance(value, dict):
            self.problem.setText("Slice parameters are a mapping, e.g. {t: 0.3}")
            return
        self._slices[row]["params"] = value
        self._refresh(row)

    # --- showing it -----------------------------------------------------------------------
    def _row_text(self, index: int, sl: Mapping[str, Any], start: int) -> str:
        length = sl["sources"][0]["layer_range"][1] - sl["sources"][0]["layer_range"][0]
        parts = [f"{self.names.get(s['model'], Path(s['model']).name)} {s['layer_range'][0]}–{s['layer_range'][1] - 1}"
                 for s in sl["sources"]]
        how = " + ".join(parts) + (f"  (merged: {self.method_label})" if len(parts) > 1 and self.method_label else "")
        params = f"  {yaml.safe_dump(sl['params'], default_flow_style=True).strip()}" if sl["params"] else ""
        return f"{index + 1}. layers {start}–{start + length - 1} ← {how}{params}"

    def _icon(self, sl: Mapping[str, Any]) -> QIcon:
        pixmap = QPixmap(14, 14)
        model = sl["sources"][0]["model"]
        pixmap.fill(QColor(colour_of(self.order.index(model)) if model in self.order else "#999999"))
        return QIcon(pixmap)

    def _refresh(self, current: int | None = None) -> None:
        self.stack.blockSignals(True)
        self.stack.clear()
        start = 0
        for i, sl in enumerate(self._slices):
            item = QListWidgetItem(self._icon(sl), self._row_text(i, sl, start))
            item.setData(SLICE_ROLE, sl)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsDragEnabled)
            self.stack.addItem(item)
            start += sl["sources"][0]["layer_range"][1] - sl["sources"][0]["layer_range"][0]
        self.stack.blockSignals(False)
        if current is not None and 0 <= current < self.stack.count():
            self.stack.setCurrentRow(current)
        self._show_summary()
        self._update_buttons()
        used: dict[tuple[int, int], int] = {}
        for sl in self._slices:
            for src in sl["sources"]:
                if src["model"] in self.order:
                    column = self.order.index(src["model"])
                    for layer in range(*src["layer_range"]):
                        used[(column, layer)] = used.get((column, layer), 0) + 1
        self.columns.set_used(used)

    def _show_summary(self) -> None:
        self.problem.clear()
        if not self._slices:
            self.summary.setText("No slices: the merge keeps the models' layers.")
            return
        try:
            entries = [SliceEntry.model_validate(sl) for sl in self._slices]
            missing = sorted({s.model for sl in entries for s in sl.sources if s.model not in self.infos})
            if missing:
                raise ValueError(f"not loaded: {', '.join(Path(m).name for m in missing)}")
            summary = summarize_stack(entries, self.infos)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the dialog stays open
            self.summary.setText("")
            self.problem.setText(f"These slices cannot be stacked: {exc}")
            return
        merged = (f"; {summary.merged_slices} merged slice{'s' if summary.merged_slices != 1 else ''}"
                  if summary.merged_slices else "")
        self.summary.setText(f"Output: <b>{summary.depth} layers</b>, {_count(summary.parameters)} parameters{merged}")

    def _update_buttons(self) -> None:
        picked, row = self.columns.picked() is not None, self.stack.currentRow()
        self.add_button.setEnabled(picked)
        self.merge_button.setEnabled(picked and row >= 0)
        self.remove_button.setEnabled(row >= 0)
        self.up_button.setEnabled(row > 0)
        self.down_button.setEnabled(0 <= row < self.stack.count() - 1)
        self.params_edit.setEnabled(row >= 0)

    # --- YAML -------------------------------------------------------------------------------
    def _on_import_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import slices", "", "YAML (*.yml *.yaml);;All files (*)")
        if path:
            self.import_yaml(Path(path))

    def import_yaml(self, path: Path) -> bool:
        """Take the slices of a mergekit config or a recipe; models not loaded are named, not guessed."""
        from merge_studio.core.mergekit_config import is_mergekit_config, recipe_from_mergekit
        from merge_studio.core.recipe import Recipe

        try:
            data = load_yaml(path.read_text(encoding="utf-8"))
            recipe = (recipe_from_mergekit(data, source=path.name, base_dir=path.parent)
                      if isinstance(data, dict) and is_mergekit_config(data) else Recipe.from_mapping(data, source=path.name))
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, the stack is kept
            QMessageBox.warning(self, "Import slices", f"{path.name} cannot be read: {exc}")
            return False
        slices = [sl.model_dump() for sl in recipe.slices or []]
        known = {str(Path(p).resolve()): p for p in self.infos}
        for sl in slices:
            for src in sl["sources"]:
                src["model"] = known.get(str(Path(src["model"]).resolve()), src["model"])
        self.set_slices(slices)
        return True

    def _on_export_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export slices as mergekit YAML", "stack.yml", "YAML (*.yml *.yaml)")
        if path:
            self.export_yaml(Path(path), self.method)

    def mergekit_config(self, method: str = "passthrough") -> dict[str, Any]:
        """The stack as a mergekit config (passthrough unless a slice is merged)."""
        from merge_studio.core.mergekit_config import mergekit_from_recipe
        from merge_studio.core.recipe import Recipe

        models = list(dict.fromkeys(s["model"] for sl in self._slices for s in sl["sources"]))
        merged = any(len(sl["sources"]) > 1 for sl in self._slices)
        recipe = Recipe.from_mapping({"method": method if merged else "passthrough",
                                      "models": [{"path": m} for m in models], "slices": self.slices()})
        return mergekit_from_recipe(recipe)

    def export_yaml(self, path: Path, method: str = "passthrough") -> bool:
        from merge_studio.core.recipe import write_text_atomic

        try:
            write_text_atomic(path, yaml.safe_dump(self.mergekit_config(method), sort_keys=False))
        except Exception as exc:  # noqa: BLE001 - said, nothing half-written (atomic)
            QMessageBox.warning(self, "Export slices", f"{path.name} was not written: {exc}")
            return False
        return True


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return str(n)
