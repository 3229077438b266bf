"""An overview of the whole graph in the corner of the view, for graphs larger than the window.

It shows the same scene scaled to fit, with a frame around the part on screen;
clicking or dragging in it moves the main view there. It hides itself while the
whole graph fits in the view.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGraphicsView, QWidget

SIZE = (170, 220)  # the largest the overview gets (width, height)
MARGIN = 10


class GraphMinimap(QGraphicsView):
    """A small, non-interactive copy of ``view``'s scene that steers ``view``."""

    def __init__(self, view: QGraphicsView, parent: QWidget | None = None) -> None:
        super().__init__(view.scene(), parent or view)
        self.view = view
        self.setObjectName("graph_minimap")
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setInteractive(False)
        self.setFrameShape(QFrame.Shape.Box)
        self.setStyleSheet("QGraphicsView#graph_minimap { background: rgba(255,255,255,230); border: 1px solid #9aa3ad; }")
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Overview: click or drag to move the view")
        view.viewport().installEventFilter(self)
        view.horizontalScrollBar().valueChanged.connect(self._on_view_moved)
        view.verticalScrollBar().valueChanged.connect(self._on_view_moved)
        self.hide()

    # --- keeping up with the main view -----------------------------------------------------
    def refresh(self) -> None:
        """Fit the scene, place the overview in the corner, show it only when the graph does not fit."""
        scene_rect = self.view.sceneRect()
        visible = self.visible_scene_rect()
        needed = scene_rect.isValid() and (visible.width() < 0.98 * scene_rect.width()
                                           or visible.height() < 0.98 * scene_rect.height())
        if not needed:
            self.hide()
            return
        ratio = scene_rect.width() / max(scene_rect.height(), 1.0)
        viewport = self.view.viewport()
        # at most a third of a small view's height, so it does not hide what it gives an overview of
        width, height = min(SIZE[0], viewport.width() // 3), min(SIZE[1], viewport.height() // 3)
        if ratio > width / height:
            height = max(60, int(width / ratio))
        else:
            width = max(60, int(height * ratio))
        self.setGeometry(viewport.width() - width - MARGIN, viewport.height() - height - MARGIN, width, height)
        self.fitInView(scene_rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.show()
        self.raise_()
        self.viewport().update()

    def visible_scene_rect(self) -> QRectF:
        return self.view.mapToScene(self.view.viewport().rect()).boundingRect()

    def _on_view_moved(self) -> None:
        if self.isVisible():
            self.viewport().update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            self.refresh()
        return False

    # --- drawing and steering -------------------------------------------------------------------
    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802 - Qt override
        painter.setPen(QPen(QColor("#1f6feb"), 0))
        painter.setBrush(QColor(31, 111, 235, 40))
        painter.drawRect(self.visible_scene_rect())

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._steer(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._steer(event.position())

    def wheelEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override: the overview does not scroll
        event.accept()

    def _steer(self, position: QPointF) -> None:
        self.view.centerOn(self.mapToScene(position.toPoint()))
        self.viewport().update()


__all__ = ["GraphMinimap"]
