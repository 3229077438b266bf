"""Each input model drawn as a column of its layers; press and drag down a column to pick a range.

The slice editor's source side. A picked range can be dragged out (onto the output
stack) as a slice: the drag carries ``{"model": path, "layer_range": [start, end]}``
under :data:`SLICE_MIME`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from PySide6.QtCore import QMimeData, QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QDrag, QFontMetrics, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QApplication, QSizePolicy, QToolTip, QWidget

from merge_studio.gui.views.graph_marks import SOURCE_COLOURS

SLICE_MIME = "application/x-merge-studio-slice"
HEADER = 38
COLUMN_WIDTH = 104
GAP = 12
MARGIN = 8


@dataclass(frozen=True)
class ModelColumn:
    """One model as the editor shows it: its path (the recipe's key), name and depth."""

    path: str
    name: str
    layers: int


@dataclass(frozen=True)
class LayerRange:
    column: int
    start: int
    end: int  # exclusive, as mergekit's layer_range


def colour_of(index: int) -> str:
    return SOURCE_COLOURS[index % len(SOURCE_COLOURS)]


class LayerColumns(QWidget):
    """Columns of layer cells with one picked range (see the module docstring)."""

    sig_selection_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("layer_columns")
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.columns: list[ModelColumn] = []
        self.selection: LayerRange | None = None
        self._anchor: tuple[int, int] | None = None
        self._press: QPoint | None = None
        self._dragging_out = False
        self.used: dict[tuple[int, int], int] = {}  # (column, layer) -> how many times the stack takes it

    # --- data -----------------------------------------------------------------------------
    def set_models(self, columns: list[ModelColumn]) -> None:
        self.columns = list(columns)
        self.selection = None
        self.updateGeometry()
        self.update()
        self.sig_selection_changed.emit()

    def set_used(self, used: dict[tuple[int, int], int]) -> None:
        """Mark the layers the output stack takes (a bar beside each; ×2 when taken twice)."""
        self.used = dict(used)
        self.update()

    def select(self, column: int, start: int, end: int) -> None:
        """Pick layers ``start`` to ``end - 1`` of a column (clamped to its layers)."""
        layers = self.columns[column].layers
        start, end = max(0, min(start, layers - 1)), max(1, min(end, layers))
        self.selection = LayerRange(column, min(start, end - 1), max(end, start + 1))
        self.update()
        self.sig_selection_changed.emit()

    def picked(self) -> dict | None:
        """The picked range as a slice source: ``{"model": path, "layer_range": [start, end]}``."""
        if self.selection is None:
            return None
        sel = self.selection
        return {"model": self.columns[sel.column].path, "layer_range": [sel.start, sel.end]}

    # --- geometry -------------------------------------------------------------------------
    def _deepest(self) -> int:
        return max((c.layers for c in self.columns), default=1) or 1

    def _cell_height(self) -> float:
        room = self.height() - HEADER - 2 * MARGIN
        return max(3.0, min(20.0, room / self._deepest()))

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(MARGIN * 2 + len(self.columns) * (COLUMN_WIDTH + GAP), HEADER + 2 * MARGIN + 16 * self._deepest())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(MARGIN * 2 + len(self.columns) * (COLUMN_WIDTH + GAP), HEADER + 2 * MARGIN + 3 * self._deepest())

    def _column_rect(self, index: int) -> QRect:
        return QRect(MARGIN + index * (COLUMN_WIDTH + GAP), MARGIN, COLUMN_WIDTH, self.height() - 2 * MARGIN)

    def _cell_rect(self, column: int, layer: int) -> QRect:
        h = self._cell_height()
        x = self._column_rect(column).x()
        top = MARGIN + HEADER + layer * h
        return QRect(x, round(top), COLUMN_WIDTH, max(2, round(top + h) - round(top) - (1 if h >= 6 else 0)))

    def cell_at(self, pos: QPoint) -> tuple[int, int] | None:
        """(column, layer) under a point, or ``None``."""
        for c, col in enumerate(self.columns):
            rect = self._column_rect(c)
            if rect.left() <= pos.x() <= rect.right():
                layer = int((pos.y() - MARGIN - HEADER) // self._cell_height())
                if 0 <= layer < col.layers:
                    return c, layer
        return None

    def cell_centre(self, column: int, layer: int) -> QPoint:
        return self._cell_rect(column, layer).center()

    # --- painting -------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        palette = self.palette()
        metrics = QFontMetrics(self.font())
        h = self._cell_height()
        label_every = 1 if h >= metrics.height() else max(1, int(metrics.height() * 2 // h))
        for c, col in enumerate(self.columns):
            rect = self._column_rect(c)
            painter.setPen(palette.text().color())
            name = metrics.elidedText(col.name, Qt.TextElideMode.ElideMiddle, rect.width())
            painter.drawText(QRect(rect.x(), rect.y(), rect.width(), 18), Qt.AlignmentFlag.AlignHCenter, name)
            painter.setPen(palette.placeholderText().color())
            painter.drawText(QRect(rect.x(), rect.y() + 18, rect.width(), 16), Qt.AlignmentFlag.AlignHCenter,
                             f"{col.layers} layers")
            base = QColor(colour_of(c))
            for layer in range(col.layers):
                cell = self._cell_rect(c, layer)
                chosen = self.selection is not None and self.selection.column == c and \
                    self.selection.start <= layer < self.selection.end
                fill = base if chosen else base.lighter(165)
                painter.fillRect(cell, fill)
                times = self.used.get((c, layer), 0)
                if times:
                    painter.fillRect(QRect(cell.x(), cell.y(), 5, cell.height()), QColor("#1f2328"))
                if cell.height() >= metrics.height() - 2 and layer % label_every == 0:
                    painter.setPen(QColor("white") if chosen else QColor("#1f2328"))
                    painter.drawText(cell, Qt.AlignmentFlag.AlignCenter, str(layer))
                    if times > 1:
                        painter.drawText(cell.adjusted(0, 0, -4, 0), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                                         f"×{times}")
            if self.selection is not None and self.selection.column == c:
                top = self._cell_rect(c, self.selection.start)
                bottom = self._cell_rect(c, self.selection.end - 1)
                painter.setPen(QPen(palette.highlight().color(), 2))
                painter.drawRect(top.united(bottom).adjusted(1, 1, -1, -1))
        if not self.columns:
            painter.setPen(palette.placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             "Load models with numbered layers to stack them")

    # --- mouse ----------------------------------------------------------------------------
    def _in_selection(self, cell: tuple[int, int] | None) -> bool:
        sel = self.selection
        return cell is not None and sel is not None and cell[0] == sel.column and sel.start <= cell[1] < sel.end

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() != Qt.MouseButton.LeftButton:
            return super().mousePressEvent(event)
        pos = event.position().toPoint()
        cell = self.cell_at(pos)
        self._press = pos
        self._dragging_out = self._in_selection(cell) and (self.selection.end - self.selection.start) > 0
        if cell is not None and not self._dragging_out:
            self._anchor = cell
            self.select(cell[0], cell[1], cell[1] + 1)
        return None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position().toPoint()
        cell = self.cell_at(pos)
        if cell is not None:
            col = self.columns[cell[0]]
            self.setToolTip(f"{col.name} · layer {cell[1]}")
        if not event.buttons() & Qt.MouseButton.LeftButton or self._press is None:
            return
        if self._dragging_out:
            if (pos - self._press).manhattanLength() >= QApplication.startDragDistance():
                self._start_drag()
            return
        if self._anchor is not None and cell is not None and cell[0] == self._anchor[0]:
            low, high = sorted((self._anchor[1], cell[1]))
            if self.selection != LayerRange(cell[0], low, high + 1):
                self.select(cell[0], low, high + 1)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._dragging_out and self._press is not None:  # a click inside the range, no drag: pick that layer
            cell = self.cell_at(self._press)
            if cell is not None:
                self.select(cell[0], cell[1], cell[1] + 1)
        self._anchor, self._press, self._dragging_out = None, None, False
        super().mouseReleaseEvent(event)

    def _start_drag(self) -> None:
        picked = self.picked()
        self._press, self._dragging_out = None, False
        if picked is None:
            return
        mime = QMimeData()
        mime.setData(SLICE_MIME, json.dumps(picked).encode())
        sel = self.selection
        mime.setText(f"{self.columns[sel.column].name} layers {sel.start}–{sel.end - 1}")
        drag = QDrag(self)
        drag.setMimeData(mime)
        QToolTip.hideText()
        drag.exec(Qt.DropAction.CopyAction)
