"""What the Graph tab needs to show a picture, made on the layout job's thread.

Parsing Graphviz's SVG and finding every node's rectangle in it took 15-30 ms for a
ResNet-sized graph; on the GUI thread that was a stall of the window. The parsed
renderer is handed to the GUI thread (``moveToThread``) with the rectangles and
tooltips, so the GUI thread only adds items to the scene.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QByteArray, QCoreApplication, QPointF, QRectF, QSizeF
from PySide6.QtSvg import QSvgRenderer

from merge_studio.core.progress import CancelToken
from merge_studio.graph.jobs import GraphPicture


@dataclass
class SceneParts:
    """A parsed picture: its renderer, its size, and each node's hit area and tooltip."""

    renderer: QSvgRenderer
    size: QSizeF  # the whole drawing, in the item's coordinates
    nodes: dict[str, tuple[QRectF, str]]  # node id -> (rectangle in scene coordinates, tooltip)


@dataclass(frozen=True)
class PreparedPicture:
    """A layout job's result: the picture and, when it has an SVG, its parsed scene."""

    picture: GraphPicture
    parts: SceneParts | None


def prepare_scene(picture: GraphPicture) -> SceneParts | None:
    """Parse the picture's SVG and place its nodes (any thread; the renderer ends on the GUI's)."""
    if not picture.svg:
        return None
    renderer = QSvgRenderer(QByteArray(picture.svg))
    box = renderer.viewBoxF()
    size = QSizeF(renderer.defaultSize())
    sx = size.width() / box.width() if box.width() else 1.0
    sy = size.height() / box.height() if box.height() else 1.0
    nodes: dict[str, tuple[QRectF, str]] = {}
    for node in picture.graph.nodes:
        if not renderer.elementExists(node.node_id):
            continue
        rect = renderer.transformForElement(node.node_id).mapRect(renderer.boundsOnElement(node.node_id))
        scene_rect = QRectF((rect.x() - box.x()) * sx, (rect.y() - box.y()) * sy, rect.width() * sx, rect.height() * sy)
        nodes[node.node_id] = (scene_rect, picture.graph.describe(node))
    app = QCoreApplication.instance()
    if app is not None and renderer.thread() is not app.thread():
        renderer.moveToThread(app.thread())  # only the thread it lives on may hand it over
    return SceneParts(renderer, size, nodes)


def item_rect(parts: SceneParts) -> QRectF:
    """The drawing's rectangle as a ``QGraphicsSvgItem`` of the whole document has it."""
    return QRectF(QPointF(0, 0), parts.size)


PictureJob = Callable[[CancelToken], Generator[Any, None, GraphPicture]]


def with_scene(job: PictureJob) -> Callable[[CancelToken], Generator[Any, None, PreparedPicture]]:
    """Run ``job`` and parse its picture on the same (worker) thread."""

    def run(cancel: CancelToken) -> Generator[Any, None, PreparedPicture]:
        picture = yield from job(cancel)
        return PreparedPicture(picture, prepare_scene(picture))

    return run
