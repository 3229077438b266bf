"""The log at the bottom of the window: what happened, with links to what was written."""

from __future__ import annotations

import html
import time
from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

LEVEL_COLORS = {"info": "", "ok": "#1e8449", "warning": "#b9770e", "error": "#c0392b"}
MAX_BLOCKS = 5000


class LogPanel(QWidget):
    """Time-stamped lines; folder links open the file manager."""

    sig_link_activated = Signal(str)
    """A local path whose link was clicked (after the file manager was asked to open it)."""
    sig_logged = Signal(str, str)
    """(level, text) of each new line (the folded log shows the latest)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("log_panel")
        self.view = QTextBrowser(self)
        self.view.setObjectName("log_view")
        self.view.setOpenLinks(False)
        self.view.setOpenExternalLinks(False)
        self.view.anchorClicked.connect(self._on_view_anchor_clicked)
        self.view.document().setMaximumBlockCount(MAX_BLOCKS)
        title = QLabel("Log", self)
        title.setObjectName("panel_title")
        clear = QPushButton("Clear", self)
        clear.setObjectName("flat_button")
        clear.clicked.connect(self.clear)
        top = QHBoxLayout()
        top.setContentsMargins(8, 4, 8, 0)
        top.addWidget(title)
        top.addStretch(1)
        top.addWidget(clear)
        self._header = top
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.view)
        self.lines: list[tuple[str, str]] = []  # (level, plain text), for tests and copying

    def log(self, text: str, level: str = "info", *, folder: str | Path | None = None) -> None:
        """Append a line; ``folder`` adds an "Open folder" link."""
        self.lines.append((level, text))
        stamp = time.strftime("%H:%M:%S")
        color = LEVEL_COLORS.get(level, "")
        body = html.escape(text)
        if color:
            body = f'<span style="color:{color}">{body}</span>'
        link = ""
        if folder is not None:
            url = QUrl.fromLocalFile(str(folder)).toString()
            link = f' &nbsp;<a href="{url}">Open folder</a>'
        self.view.append(f'<span style="color:#95a5a6">{stamp}</span>&nbsp; {body}{link}')
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())
        self.sig_logged.emit(level, text)

    def add_header_widget(self, widget: QWidget, stretch: int = 0) -> None:
        """Put a widget in the header line: a stretching one after the title, others before Clear."""
        self._header.insertWidget(1 if stretch else self._header.count() - 1, widget, stretch)

    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)

    def clear(self) -> None:
        self.lines.clear()
        self.view.clear()

    def _on_view_anchor_clicked(self, url: QUrl) -> None:
        if url.isLocalFile():
            QDesktopServices.openUrl(url)
            self.sig_link_activated.emit(url.toLocalFile())
