"""A centred "nothing here yet" message, for tabs whose content has not arrived."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QStyle, QVBoxLayout, QWidget


class EmptyState(QWidget):
    """An icon, a title and one sentence saying what will appear here."""

    def __init__(self, title: str, text: str, parent: QWidget | None = None,
                 icon: QStyle.StandardPixmap = QStyle.StandardPixmap.SP_FileDialogInfoView) -> None:
        super().__init__(parent)
        self.setObjectName("empty_state")
        picture = QLabel(self)
        picture.setPixmap(self.style().standardIcon(icon).pixmap(48, 48))
        picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel(title, self)
        self.title.setObjectName("empty_title")
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel(text, self)
        self.text.setObjectName("empty_text")
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text.setWordWrap(True)
        self.text.setMaximumWidth(460)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(picture)
        layout.addWidget(self.title)
        layout.addWidget(self.text, 0, Qt.AlignmentFlag.AlignHCenter)
        layout.addStretch(2)
