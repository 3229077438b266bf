"""A graph larger than the view gets an overview in the corner that steers the view."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from merge_studio.graph.render import dot_available
from tests.gui.test_graph_view import _show

pytestmark = [pytest.mark.gui, pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")]


def test_a_tall_graph_shows_an_overview_that_moves_the_view(qtbot, view):  # noqa: F811
    _show(qtbot, view, "zoo:resnet20")
    minimap = view.minimap
    assert minimap.isVisible(), "the ResNet graph is taller than the view"
    before = view.graphics.mapToScene(view.graphics.viewport().rect().center())
    bottom = QPoint(minimap.width() // 2, minimap.height() - 4)
    qtbot.mouseClick(minimap.viewport(), Qt.MouseButton.LeftButton, pos=bottom)
    after = view.graphics.mapToScene(view.graphics.viewport().rect().center())
    assert after.y() > before.y() + 100
    assert minimap.visible_scene_rect().contains(after)
    view.fit()
    assert not minimap.isVisible(), "the whole graph fits: no overview"
