"""The Graph view's fallback: the module tree of tensor names, coloured like the graph.

Shown when no architecture is known (or Graphviz is missing); each row carries its
module path so clicks and searches work as on graph nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel

from merge_studio.graph.jobs import Overlay
from merge_studio.graph.key_tree import KeyTreeNode
from merge_studio.graph.model import format_count, format_shape
from merge_studio.graph.overlay import font_for, format_value, layer_value, value_colors

PATH_ROLE = Qt.ItemDataRole.UserRole + 1
HEADERS = ["Module", "Shape", "Parameters", "Value"]


def fill_tree_model(
    model: QStandardItemModel,
    tree: KeyTreeNode,
    overlay: Overlay | None,
    marks: Mapping[str, str] | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
) -> None:
    """Replace ``model``'s rows with ``tree``: modules coloured by ``overlay``, marked ones in their colour."""
    model.clear()
    model.setHorizontalHeaderLabels(HEADERS)
    colors: dict[str, str] = {}
    if overlay is not None:
        paths = [n.path for n in tree.walk() if n.path]
        colors, _ = value_colors(paths, overlay.values, cmap=overlay.cmap, vmin=vmin, vmax=vmax)
        colors.update({p: marks[p] for p in paths if marks and p in marks})  # exact: the tree shows every layer

    def add(parent: QStandardItem, node: KeyTreeNode) -> None:
        for child in node.children.values():
            row = tree_row(child.name, child.path, "", child.param_count, colors, overlay)
            parent.appendRow(row)
            add(row[0], child)
        for leaf, shape in node.tensors:
            row = tree_row(leaf, node.path, format_shape(shape), 0, {}, None)
            row[0].setData(f"{node.path}.{leaf}" if node.path else leaf, Qt.ItemDataRole.ToolTipRole)
            parent.appendRow(row)

    add(model.invisibleRootItem(), tree)


def tree_row(
    name: str, path: str, shape: str, params: int, colors: Mapping[str, str], overlay: Overlay | None
) -> list[QStandardItem]:
    """One row: name, shape, parameter count and overlay value, the module path on every cell."""
    value = layer_value(path, overlay.values) if overlay is not None and params else None
    cells = [QStandardItem(name), QStandardItem(shape), QStandardItem(format_count(params) if params else ""),
             QStandardItem("" if value is None else format_value(value))]
    for cell in cells:
        cell.setEditable(False)
        cell.setData(path, PATH_ROLE)
    if path in colors:
        for cell in (cells[0], cells[3]):
            cell.setBackground(QColor(colors[path]))
            cell.setForeground(QColor(font_for(colors[path])))
    return cells
