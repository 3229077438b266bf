"""An error, said plainly, with the traceback behind "Details" for bug reports."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from merge_studio.gui.workers import JobError


class ErrorDialog(QDialog):
    """Message and hint up front; the traceback only when asked for."""

    def __init__(self, error: JobError, title: str = "Something went wrong", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("error_dialog")
        self.setWindowTitle(title)
        self.error = error
        icon = QLabel(self)
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(40, 40))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.message_label = QLabel(error.message, self)
        self.message_label.setObjectName("error_message")
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        text_col = QVBoxLayout()
        text_col.addWidget(self.message_label)
        if error.hint:
            hint = QLabel(f"What to do: {error.hint}", self)
            hint.setObjectName("muted")
            hint.setWordWrap(True)
            text_col.addWidget(hint)
        if not error.for_people:
            kind = QLabel(f"({error.type_name}; this looks like a bug; the details help to report it.)", self)
            kind.setObjectName("muted")
            kind.setWordWrap(True)
            text_col.addWidget(kind)
        text_col.addStretch(1)
        top = QHBoxLayout()
        top.addWidget(icon)
        top.addLayout(text_col, 1)

        self.details = QPlainTextEdit(error.traceback_text, self)
        self.details.setObjectName("error_details")
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setMinimumHeight(200)
        self.details.hide()

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.details_button = QPushButton("Details", self)
        self.details_button.setCheckable(True)
        self.details_button.toggled.connect(self._on_details_toggled)
        copy = QPushButton("Copy", self)
        copy.setToolTip("Copy the message and the traceback")
        copy.clicked.connect(self._on_copy_clicked)
        buttons.addButton(self.details_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.setMinimumWidth(480)

    def _on_details_toggled(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.details_button.setText("Hide details" if shown else "Details")
        self.adjustSize()

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(f"{self.error.type_name}: {self.error.message}\n\n{self.error.traceback_text}")
