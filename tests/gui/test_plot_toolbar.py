"""The plot toolbar draws its icons once, not at every paint."""

from __future__ import annotations

import pytest
from matplotlib.backends import backend_qt
from matplotlib.figure import Figure
from PySide6.QtCore import QSize
from PySide6.QtGui import QPalette

from merge_studio.gui.plot_canvas import BackgroundCanvas
from merge_studio.gui.plot_toolbar import PlotToolbar


@pytest.fixture
def renders(monkeypatch):
    """How often matplotlib's icon engine renders an icon."""
    engine = getattr(backend_qt, "_IconEngine", None)
    if engine is None:
        pytest.skip("this matplotlib draws its toolbar icons as plain pixmaps")
    calls: list[QSize] = []
    real = engine.pixmap
    monkeypatch.setattr(engine, "pixmap", lambda self, size, mode, state: calls.append(size) or real(self, size, mode, state))
    return calls


def test_painting_the_toolbar_does_not_render_its_icons_again(qtbot, renders):
    toolbar = PlotToolbar(BackgroundCanvas(Figure()))
    qtbot.addWidget(toolbar)
    toolbar.setIconSize(QSize(18, 18))
    toolbar.show()
    assert renders, "the icons are rendered once, when the toolbar is made"
    assert all(not a.icon().isNull() for a in toolbar.actions() if a.text() in ("Home", "Pan", "Save"))
    renders.clear()
    for _ in range(3):
        toolbar.grab()
    assert renders == []  # matplotlib's own toolbar rendered 7 SVGs at each of these paints


def test_a_palette_change_renders_the_icons_again_to_match_it(qtbot, renders):
    toolbar = PlotToolbar(BackgroundCanvas(Figure()))
    qtbot.addWidget(toolbar)
    renders.clear()
    palette = toolbar.palette()
    palette.setColor(QPalette.ColorRole.Window, palette.color(QPalette.ColorRole.WindowText))
    toolbar.setPalette(palette)
    assert renders  # dark or light icons to suit the new background
