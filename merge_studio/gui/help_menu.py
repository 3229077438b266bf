"""Help ▸ User guide (the guide shipped with the app) and Help ▸ Keyboard shortcuts (read from the actions)."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QMenu,
    QMessageBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

import merge_studio

GUIDE = Path("docs") / "index.md"


def guide_path() -> Path | None:
    """The user guide: next to a frozen app (PyInstaller's folder), else in the source checkout."""
    roots = [Path(getattr(sys, "_MEIPASS", "")) if hasattr(sys, "_MEIPASS") else None,
             Path(merge_studio.__file__).resolve().parents[1]]
    for root in roots:
        if root is not None and (root / GUIDE).is_file():
            return root / GUIDE
    return None


def open_user_guide(parent: QWidget) -> bool:
    """Open the guide in the system's viewer for Markdown; say where it lives when it is not here."""
    path = guide_path()
    if path is not None and QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
        return True
    where = f"The guide is {path}, but no program here opens it." if path else (
        "The user guide is not installed with this copy (it is docs/index.md in the source repository).")
    QMessageBox.information(parent, "User guide", where)
    return False


def shortcut_rows(window: QWidget) -> list[tuple[str, str]]:
    """("Menu ▸ action", keys) for every action of the window and its children that has a shortcut."""
    rows: dict[str, tuple[str, str]] = {}
    for action in window.findChildren(QAction):
        keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts() if not k.isEmpty()]
        if not keys:
            continue
        text = _plain(action.text())
        menus = [o for o in action.associatedObjects() if isinstance(o, QMenu) and o.title()]
        if menus:
            text = f"{_plain(menus[0].title())} ▸ {text}"
        rows.setdefault(f"{text}|{keys[0]}", (text, ", ".join(keys)))
    return sorted(rows.values(), key=lambda r: r[0].lower())


def _plain(text: str) -> str:
    """Menu text without its mnemonic ampersands and trailing dots."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip(".…")


class ShortcutsDialog(QDialog):
    """A table of the window's keyboard shortcuts, as the actions define them now."""

    def __init__(self, window: QWidget) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(window)
        self.table = QTableWidget(len(rows), 2, self)
        self.table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        for i, (text, keys) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(text))
            self.table.setItem(i, 1, QTableWidgetItem(keys))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(440, min(720, 90 + 30 * len(rows)))


def add_help_actions(window: QWidget, menu: QMenu) -> dict[str, QAction]:
    """Put User guide (F1) and Keyboard shortcuts at the top of the Help menu."""
    from merge_studio.gui.resources import icon

    guide = QAction(icon("help"), "&User guide", window)
    guide.setShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents))
    guide.setStatusTip("Open the Merge Studio user guide")
    guide.triggered.connect(lambda _c=False: open_user_guide(window))
    keys = QAction("&Keyboard shortcuts", window)
    keys.setShortcut(QKeySequence("Ctrl+/"))
    keys.setStatusTip("List every keyboard shortcut")
    keys.triggered.connect(lambda _c=False: ShortcutsDialog(window).open())
    first = menu.actions()[0] if menu.actions() else None
    menu.insertActions(first, [guide, keys])
    if first is not None:
        menu.insertSeparator(first)
    return {"user_guide": guide, "shortcuts": keys}
