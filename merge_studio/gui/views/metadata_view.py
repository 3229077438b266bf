"""A checkpoint's metadata in the Inspector: every key, and the whole value of the one selected.

Merged files carry their recipe, the tool's version, the sources' hashes and
permutations here; a tooltip could show a few lines of them, this shows them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QHeaderView, QLabel, QPlainTextEdit, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

PREVIEW_CHARS = 120
EMPTY_TEXT = "This checkpoint has no metadata."


def readable(value: str) -> str:
    """JSON values indented, others as they are."""
    text = value.strip()
    if text[:1] in "[{":
        try:
            return json.dumps(json.loads(text), indent=2)
        except (ValueError, RecursionError):  # metadata written by anyone: shown as it is
            pass
    return value


class MetadataView(QWidget):
    """Keys and one-line previews above, the selected value in full below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("metadata_view")
        self.metadata: dict[str, str] = {}
        self.empty = QLabel(EMPTY_TEXT, self)
        self.empty.setObjectName("empty_text")
        self.table = QTableWidget(0, 2, self)
        self.table.setObjectName("metadata_table")
        self.table.setHorizontalHeaderLabels(["key", "value"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.setWordWrap(False)
        self.value = QPlainTextEdit(self)
        self.value.setObjectName("metadata_value")
        self.value.setReadOnly(True)
        self.value.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.value.setPlaceholderText("Select a key to see its whole value.")
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.table)
        split.addWidget(self.value)
        split.setSizes([140, 160])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.empty)
        layout.addWidget(split, 1)
        self.table.currentCellChanged.connect(self._on_table_current_changed)
        self.set_metadata({})

    def set_metadata(self, metadata: Mapping[str, str]) -> None:
        # Sorted by key: a file's metadata has no order users can rely on (safetensors keeps a hash map).
        self.metadata = {str(k): str(v) for k, v in sorted(metadata.items(), key=lambda kv: str(kv[0]))}
        self.table.setRowCount(len(self.metadata))
        for row, (key, value) in enumerate(self.metadata.items()):
            first = value.strip().splitlines()[0] if value.strip() else ""
            preview = first[:PREVIEW_CHARS] + ("…" if len(first) > PREVIEW_CHARS or "\n" in value.strip() else "")
            self.table.setItem(row, 0, QTableWidgetItem(key))
            item = QTableWidgetItem(preview)
            item.setToolTip(value[:2000])
            self.table.setItem(row, 1, item)
        self.empty.setVisible(not self.metadata)
        self.value.clear()
        if self.metadata:
            self.table.selectRow(0)

    def _on_table_current_changed(self, row: int, _column: int, _prev_row: int, _prev_column: int) -> None:
        key = self.table.item(row, 0).text() if 0 <= row < self.table.rowCount() and self.table.item(row, 0) else None
        self.value.setPlainText(readable(self.metadata[key]) if key in self.metadata else "")


__all__ = ["MetadataView"]
