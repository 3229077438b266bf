"""The Graph view's scene pieces: a clickable hit area per node, and a zooming, panning view."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QGraphicsScene, QGraphicsView

from merge_studio.graph.model import GraphNode

HOVER_PEN = QPen(QColor("#2f7fd1"), 2)
SELECT_PEN = QPen(QColor("#e8590c"), 3)


class NodeItem(QGraphicsRectItem):
    """A transparent hit area over one Graphviz node: hover outline, tooltip, click."""

    def __init__(self, node: GraphNode, rect: QRectF, on_click: Callable[[GraphNode], None], tooltip: str | None = None) -> None:
        super().__init__(rect)
        self.node = node
        self._on_click = on_click
        self.setPen(QPen(Qt.PenStyle.NoPen))
        self.setBrush(QBrush(Qt.BrushStyle.NoBrush))
        self.setAcceptHoverEvents(True)
        self.setToolTip(node.tooltip() if tooltip is None else tooltip)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setZValue(1)

    def hoverEnterEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        self.setPen(HOVER_PEN)
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event) -> None:  # noqa: ANN001, N802
        self.setPen(QPen(Qt.PenStyle.NoPen))
        super().hoverLeaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: ANN001, N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._on_click(self.node)
            event.accept()
        else:
            super().mousePressEvent(event)


class ZoomView(QGraphicsView):
    """Wheel zooms around the pointer; dragging the background pans."""

    def __init__(self, scene: QGraphicsScene) -> None:
        super().__init__(scene)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setBackgroundBrush(QColor("white"))

    def zoom(self, factor: float) -> None:
        current = self.transform().m11()
        factor = max(0.02 / current, min(factor, 8.0 / current))  # keep zoom within 2 %..800 %
        self.scale(factor, factor)

    def wheelEvent(self, event) -> None:  # noqa: ANN001, N802
        steps = event.angleDelta().y() / 120
        if steps:
            self.zoom(1.15**steps)
        event.accept()
