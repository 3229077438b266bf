"""The inspector: one checkpoint's summary, tensors and module tree, and the list's compatibility."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableView,
    QTabWidget,
    QTextBrowser,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from merge_studio.gui.compat import CompatSummary
from merge_studio.gui.family import model_family
from merge_studio.gui.session import LoadedModel
from merge_studio.gui.views.checkpoint_model import human_bytes, human_count
from merge_studio.gui.views.elided_label import ElidedLabel

if TYPE_CHECKING:
    from merge_studio.core.checkpoints import TensorInfo
    from merge_studio.core.checkpoints.keys import KeyNode

TENSOR_COLUMNS = ("Name", "Shape", "Dtype", "Parameters")
NUMERIC_ROLE = Qt.ItemDataRole.UserRole + 1


def _natural(name: str) -> str:
    """``layers.2.w`` -> ``layers.00000002.w``: sorts block numbers as numbers."""
    return re.sub(r"\d+", lambda m: m.group().zfill(8), name)


class TensorTableModel(QAbstractTableModel):
    """Rows of (name, shape, dtype, parameters); sorts numerically on parameters."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[TensorInfo] = []
        self._sort_names: list[str] | None = None  # made on the first sort: a sort asks ~n log n times

    def set_infos(self, infos: Sequence[TensorInfo]) -> None:
        self.beginResetModel()
        self._rows = list(infos)
        self._sort_names = None
        self.endResetModel()

    def _sort_name(self, row: int) -> str:
        if self._sort_names is None:
            self._sort_names = [_natural(info.name) for info in self._rows]
        return self._sort_names[row]

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(TENSOR_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return TENSOR_COLUMNS[section]
        return None

    def data(self, index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        info = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (info.name, " × ".join(map(str, info.shape)) or "scalar", info.dtype_name, f"{info.numel:,}")[col]
        if role == NUMERIC_ROLE:  # sort keys: layers.2 before layers.10, sizes as numbers
            return self._sort_name(index.row()) if col == 0 else (info.numel, info.dtype_name, info.numel)[col - 1]
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole and col == 0:
            return f"{info.name}\n{tuple(info.shape)} {info.dtype_name}, {human_bytes(info.nbytes)}"
        return None


def _align_numbers(item: QTreeWidgetItem) -> None:
    for col in (1, 2):
        item.setTextAlignment(col, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


class Inspector(QWidget):
    """Shows what is inside the selected checkpoint and how the list fits together."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.title = ElidedLabel("No model selected", self)
        self.title.setObjectName("inspector_title")
        self.subtitle = ElidedLabel("Select a model in the list to see what is inside it.", self)
        self.subtitle.setObjectName("muted")
        self.subtitle.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.facts = QGridLayout()
        self.facts.setHorizontalSpacing(24)
        self.facts.setVerticalSpacing(2)
        self._fact_labels: dict[str, QLabel] = {}
        for i, key in enumerate(("Format", "Tensors", "Parameters", "Size on disk", "Dtypes", "Metadata", "Values")):
            name = QLabel(key, self)
            name.setObjectName("fact_name")
            value = QLabel("–", self)
            value.setObjectName("fact_value")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            row, col = divmod(i, 3)
            self.facts.addWidget(name, row * 2, col)
            self.facts.addWidget(value, row * 2 + 1, col)
            self._fact_labels[key] = value

        # tensors
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setObjectName("tensor_filter")
        self.filter_edit.setPlaceholderText("Filter tensors by name (e.g. attn, layers.3, weight$)")
        self.filter_edit.setClearButtonEnabled(True)
        self.tensor_model = TensorTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.tensor_model)
        self.proxy.setFilterKeyColumn(0)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setSortRole(NUMERIC_ROLE)
        self.filter_edit.textChanged.connect(self._on_filter_edit_changed)
        self.tensor_table = QTableView(self)
        self.tensor_table.setObjectName("tensor_table")
        self.tensor_table.setModel(self.proxy)
        self.tensor_table.setSortingEnabled(True)
        self.tensor_table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.tensor_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tensor_table.setAlternatingRowColors(True)
        self.tensor_table.setShowGrid(False)
        self.tensor_table.setWordWrap(False)
        self.tensor_table.verticalHeader().hide()
        self.tensor_table.verticalHeader().setDefaultSectionSize(24)
        header = self.tensor_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.filter_count = QLabel("", self)
        self.filter_count.setObjectName("muted")
        tensors_page = QWidget(self)
        tl = QVBoxLayout(tensors_page)
        tl.setContentsMargins(0, 6, 0, 0)
        tl.addWidget(self.filter_edit)
        tl.addWidget(self.tensor_table, 1)
        tl.addWidget(self.filter_count)

        # modules
        self._module_tree = QTreeWidget(self)
        self._module_tree.setObjectName("module_tree")
        self._module_tree.setHeaderLabels(["Module", "Tensors", "Parameters"])
        self._module_tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self._module_tree.header().setStretchLastSection(False)
        self._module_tree.setAlternatingRowColors(True)

        # compatibility
        self.compat_view = QTextBrowser(self)
        self.compat_view.setObjectName("compat_view")

        self.tabs = QTabWidget(self)
        self.tabs.setObjectName("inspector_tabs")
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(tensors_page, "Tensors")
        self.tabs.addTab(self._module_tree, "Modules")
        self._pending_tree: list[TensorInfo] | None = None  # filled when the Modules tab is shown
        self.tabs.currentChanged.connect(lambda _index: self._fill_pending_tree())
        self.tabs.addTab(self.compat_view, "Compatibility")
        from merge_studio.gui.views.metadata_view import MetadataView

        self.metadata_view = MetadataView(self)
        self.tabs.addTab(self.metadata_view, "Metadata")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 8)
        layout.setSpacing(6)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addLayout(self.facts)
        layout.addWidget(self.tabs, 1)
        self.set_model(None)
        self.set_compatibility(CompatSummary(), 0)

    # --- content ----------------------------------------------------------------------
    def set_model(self, model: LoadedModel | None) -> None:
        """Show ``model`` (or the empty state for ``None``/a failed file).

        Rebuilding the tensor table and module tree of a model already shown took up to
        80 ms on the GUI thread at every session change; only the facts are refreshed then.
        """
        previous, self._shown = getattr(self, "_shown", None), None  # (model id, checkpoint) whose tables are up
        for label in self._fact_labels.values():
            label.setText("–")
            label.setToolTip("")
        if model is None:
            self.title.setText("No model selected")
            self.subtitle.setText("Select a model in the list to see what is inside it.")
            self.tensor_model.set_infos([])
            self._pending_tree = None
            self._module_tree.clear()
            self.metadata_view.set_metadata({})
            self._update_count()
            return
        self.title.setText(model.name)
        if model.status != "ready" or model.summary is None or model.checkpoint is None:
            self.subtitle.setText(str(model.path) + ("\nCannot open: " + model.error if model.error else "\nLoading…"))
            self.metadata_view.set_metadata({})
            self.tensor_model.set_infos([])
            self._pending_tree = None
            self._module_tree.clear()
            self._update_count()
            return
        s = model.summary
        self.subtitle.setText(str(model.path))
        self._fact_labels["Format"].setText(s.format)
        family = model_family(model.checkpoint)
        if family:
            if family[0] not in s.format:  # an adapter's format already says what it is
                self._fact_labels["Format"].setText(f"{s.format} · {family[0]}")
            self._fact_labels["Format"].setToolTip(family[1])
        self._fact_labels["Tensors"].setText(f"{s.tensor_count:,}")
        self._fact_labels["Parameters"].setText(f"{human_count(s.parameter_count)} ({s.parameter_count:,})")
        self._fact_labels["Size on disk"].setText(human_bytes(s.file_bytes))
        self._fact_labels["Dtypes"].setText(", ".join(f"{k} ×{v}" for k, v in s.dtypes.items()) or "–")
        meta = s.metadata
        self._fact_labels["Metadata"].setText(f"{len(meta)} entr{'y' if len(meta) == 1 else 'ies'}" if meta else "none")
        self._fact_labels["Metadata"].setToolTip("Every entry in full: the Metadata tab below")
        self._show_values_check(model)
        shown = (model.id, id(model.checkpoint))
        if shown == previous:  # the same file again (a value scan finished, a list change): the tables stand
            self._shown = shown
            return
        self.metadata_view.set_metadata(meta)
        infos = list(model.checkpoint.infos.values())
        self.tensor_model.set_infos(infos)
        # the module tree is a few thousand Qt calls (10-25 ms): built when its tab is shown
        self._pending_tree = infos
        if self.tabs.currentWidget() is self._module_tree:
            self._fill_pending_tree()
        self._update_count()
        self._shown = shown

    def _show_values_check(self, model: LoadedModel) -> None:
        """NaN/infinity found by the background value scan (or why it has not run)."""
        label = self._fact_labels["Values"]
        bad = model.non_finite
        if bad is None:
            label.setText("not checked yet" if model.summary and model.summary.total_bytes <= (1 << 30)
                          else "checked when merged")
            label.setToolTip("Merges stop on NaN or infinite values and name the tensor.")
        elif not bad:
            label.setText("all finite")
        else:
            label.setText(f"⚠ NaN or infinite in {len(bad)} tensor{'s' * (len(bad) != 1)}")
            label.setToolTip("\n".join(b.describe() for b in bad[:30]))

    @property
    def module_tree(self) -> QTreeWidget:
        """The Modules tab's tree (filled first when it was left for the tab's first showing)."""
        self._fill_pending_tree()
        return self._module_tree

    def _fill_pending_tree(self) -> None:
        infos, self._pending_tree = self._pending_tree, None
        if infos is not None:
            self._fill_tree(infos)

    def _fill_tree(self, infos: Sequence[TensorInfo]) -> None:
        from merge_studio.core.checkpoints.keys import build_key_tree  # the package imports torch
        from merge_studio.core.naming.base import naming_for
        from merge_studio.core.naming.tree import group_tree

        root = group_tree(build_key_tree({i.name: i for i in infos}), naming_for({i.name: i.shape for i in infos}))
        self._module_tree.clear()
        self._module_tree.setUpdatesEnabled(False)

        def add(parent: QTreeWidgetItem | QTreeWidget, node: KeyNode) -> None:
            for child in node.children.values():
                item = QTreeWidgetItem(parent, [child.name, str(child.tensor_count), human_count(child.parameter_count)])
                item.setToolTip(0, f"{child.path}\n{human_bytes(child.nbytes)}")
                _align_numbers(item)
                add(item, child)
            for short, info in node.tensors.items():
                shape = " × ".join(map(str, info.shape)) or "scalar"
                item = QTreeWidgetItem(parent, [f"{short}  [{shape}]", "1", human_count(info.numel)])
                item.setToolTip(0, f"{node.child_path(short)}\n{info.dtype_name}, {human_bytes(info.nbytes)}")
                item.setForeground(0, self.palette().placeholderText())
                _align_numbers(item)

        add(self._module_tree, root)
        self._module_tree.expandToDepth(0)
        self._module_tree.resizeColumnToContents(1)
        self._module_tree.resizeColumnToContents(2)
        self._module_tree.setUpdatesEnabled(True)

    def set_compatibility(self, compat: CompatSummary, ready_count: int) -> None:
        """Show the report for the whole list, problems first."""
        title = "Compatibility of the loaded models"
        if ready_count < 2:
            status = "<p style='color:#7f8c8d'>Load two or more models to compare their tensors.</p>"
        elif compat.ok:
            status = "<p style='color:#1e8449'><b>✓ These models can be merged tensor by tensor.</b></p>"
        else:
            status = (
                "<p style='color:#c0392b'><b>Some tensors do not line up.</b> Choose what to do with them "
                "under <i>Output ▸ Mismatched tensors</i>, or remove the odd model.</p>"
            )
        items = "".join(f"<li>{html.escape(line)}</li>" for line in compat.lines if ready_count >= 2)
        self.compat_view.setHtml(f"<h3>{title}</h3>{status}<ul>{items}</ul>")
        index = self.tabs.indexOf(self.compat_view)
        self.tabs.setTabText(index, "Compatibility" if compat.ok else "Compatibility ⚠")

    # --- filtering --------------------------------------------------------------------
    def show_layer(self, layer: str) -> int:
        """Filter the tensor table to one layer's tensors and select the first (a graph click); the count shown."""
        self.filter_edit.setText(f"^{re.escape(layer)}\\." if layer else "")
        if self.proxy.rowCount():
            self.tensor_table.selectRow(0)
            self.tensor_table.scrollTo(self.proxy.index(0, 0))
        return self.proxy.rowCount()

    def _on_filter_edit_changed(self, text: str) -> None:
        self.proxy.setFilterRegularExpression(text.strip())
        self._update_count()

    def _update_count(self) -> None:
        total = self.tensor_model.rowCount()
        shown = self.proxy.rowCount()
        self.filter_count.setText(f"{total} tensors" if shown == total else f"{shown} of {total} tensors match")
