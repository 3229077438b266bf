"""Pieces of the mixture-of-experts dialog: a model path picker and the one-prompt-a-line editor's text."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from merge_studio.errors import MergeStudioError


def prompts_to_text(prompts: list[str] | None) -> str:
    """One prompt a line; a line break inside a prompt is written ``\\n``."""
    return "\n".join(p.replace("\\", "\\\\").replace("\n", "\\n") for p in prompts or [])


def text_to_prompts(text: str) -> list[str]:
    """The prompts of an editor's text: blank lines skipped, ``\\n`` and ``\\\\`` read back."""
    return [_unescape(line) for line in text.splitlines() if line.strip()]


def _unescape(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line) and line[i + 1] in "n\\":
            out.append("\n" if line[i + 1] == "n" else "\\")
            i += 2
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


class PathPicker(QWidget):
    """An editable model path with a browse button and the window's models to choose from."""

    sig_changed = Signal()

    def __init__(self, models: list[tuple[Path, str]], parent: QWidget | None = None, *, optional: bool = False) -> None:
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(28)
        if optional:
            self.combo.addItem("", "")
        for path, name in models:
            self.combo.addItem(str(path), str(path))
            self.combo.setItemData(self.combo.count() - 1, name, Qt.ItemDataRole.ToolTipRole)
        browse = QPushButton("…", self)
        browse.setToolTip("Choose a model folder")
        browse.setMaximumWidth(browse.fontMetrics().horizontalAdvance("…") + 24)
        browse.clicked.connect(self._browse)
        self.combo.currentTextChanged.connect(lambda _t: self.sig_changed.emit())
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(browse)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder", self.path())
        if path:
            self.set_path(path)

    def path(self) -> str:
        return self.combo.currentText().strip()

    def set_path(self, path: str) -> None:
        self.combo.setCurrentText(path)


def model_type(path: str) -> str | None:
    """The base's model_type from its config.json (standard library only), or None when unreadable."""
    from merge_studio.core.hf.config import model_folder, read_config

    folder = model_folder(path) if path else None
    if folder is None:
        return None
    try:
        value = read_config(folder).get("model_type")
    except MergeStudioError:
        return None
    return value if isinstance(value, str) else None
