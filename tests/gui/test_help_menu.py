"""Help ▸ User guide opens the shipped guide; Help ▸ Keyboard shortcuts lists the actions' own shortcuts."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QApplication

from merge_studio.gui.help_menu import ShortcutsDialog


def test_user_guide_opens_the_guide_as_a_local_file(qtbot, window, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or True)
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    assert [a.text() for a in help_menu.actions() if a.text()][:2] == ["&User guide", "&Keyboard shortcuts"]
    window.actions_by_name["user_guide"].trigger()
    (url,) = opened
    path = Path(url.toLocalFile())
    assert url.isLocalFile() and path.name == "index.md" and path.parent.name == "docs"
    assert path.read_text().startswith("# Merge Studio user guide")


def test_keyboard_shortcuts_lists_every_action_with_a_shortcut(qtbot, window):
    window.actions_by_name["shortcuts"].trigger()
    dialog = next(w for w in QApplication.topLevelWidgets() if isinstance(w, ShortcutsDialog) and w.isVisible())
    qtbot.addWidget(dialog)
    table = dialog.table
    shown = {(table.item(r, 0).text(), table.item(r, 1).text()) for r in range(table.rowCount())}
    assert ("Merge ▸ Merge", "Ctrl+M") in shown and ("File ▸ Open models", "Ctrl+O") in shown
    assert ("Help ▸ User guide", "F1") in shown
    expected = {a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
                for a in window.findChildren(QAction) if not a.shortcut().isEmpty()}
    assert expected <= {keys.split(", ")[0] for _, keys in shown}
    assert ("View ▸ History", "Ctrl+H") in shown and ("View ▸ Permutations", "Ctrl+4") in shown
    dialog.close()
