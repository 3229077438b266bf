"""matplotlib's plot toolbar with icons drawn once instead of at every paint.

matplotlib (3.10+) gives each toolbar button an icon engine that reads and renders its
SVG again whenever the button is painted: 2-4 ms an icon, about 20 ms for a toolbar,
on the GUI thread, at every repaint of the plot's panel. Here each icon is rendered
once per size and screen scale; a palette change (dark mode) renders them again.
"""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import NavigationToolbar2QT
from PySide6.QtCore import QEvent
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QWidget

SCALES = (1.0, 2.0)  # ordinary and high-DPI screens; Qt scales between them


class PlotToolbar(NavigationToolbar2QT):
    """``NavigationToolbar2QT`` whose icons are pixmaps, re-rendered only when the palette changes."""

    def __init__(self, canvas: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(canvas, parent)
        self._drawn_icons = {action: action.icon() for action in self.actions() if not action.icon().isNull()}
        self._render_icons()

    def setIconSize(self, size) -> None:  # noqa: ANN001, N802 - Qt override: the pixmaps follow the size
        super().setIconSize(size)
        if hasattr(self, "_drawn_icons"):
            self._render_icons()

    def _render_icons(self) -> None:
        size = self.iconSize()
        for action, live in self._drawn_icons.items():
            icon = QIcon()
            for scale in SCALES:
                icon.addPixmap(live.pixmap(size, scale))
            action.setIcon(icon)

    def event(self, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "_drawn_icons"):
            self._render_icons()  # the icons are drawn dark or light to match the palette
        return super().event(event)
