"""A label that takes the width it is given instead of asking for the width of its text.

A file path has no spaces to wrap at: as a plain ``QLabel`` the Inspector's path made
the whole page as wide as the path, and at 1024×768 the tensor table's Dtype and
Parameters columns slid off screen. Each line too long for the label is cut in the
middle (a path keeps its file name), and the full text is in the tooltip.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget


class ElidedLabel(QLabel):
    """``QLabel`` for one or a few lines that elides each line in the middle to fit."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt override
        self._full = text
        self._fit()

    def text(self) -> str:  # the whole text to Python callers; Qt paints the fitted one
        return self._full

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt override: any width, the lines' height
        return QSize(0, super().minimumSizeHint().height())

    def resizeEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt override
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        metrics, width = self.fontMetrics(), max(self.contentsRect().width(), 1)
        shown = "\n".join(metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, width) for line in self._full.split("\n"))
        self.setToolTip(self._full if shown != self._full else "")
        super().setText(shown)
