"""Menus, shortcuts and the model list's tool buttons, kept out of the main window's module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QApplication, QMenu, QMessageBox, QStyle, QToolButton

import merge_studio
from merge_studio.gui.resources import icon

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow

SP = QStyle.StandardPixmap


def _action(window: MainWindow, text: str, slot, shortcut: QKeySequence | str | None = None,
            pixmap: SP | None = None, tip: str = "", name: str = "") -> QAction:
    act = QAction(text, window)
    if pixmap is not None:
        act.setIcon(icon(name or text.lower(), pixmap))
    if shortcut is not None:
        act.setShortcut(QKeySequence(shortcut))
    if tip:
        act.setStatusTip(tip)
        act.setToolTip(tip)
    act.triggered.connect(lambda _checked=False: slot())
    return act


def build_menus(window: MainWindow) -> dict[str, QAction]:
    """Create the menu bar and return the actions by name (tests and the window use them)."""
    a: dict[str, QAction] = {}
    a["open"] = _action(window, "&Open models…", window.ask_open_models, QKeySequence.StandardKey.Open, SP.SP_DialogOpenButton,
                        "Open checkpoint files (.safetensors, .pt, .bin, .pt2)", "open")
    a["open_folder"] = _action(window, "Open model &folder…", window.ask_open_folder, "Ctrl+Shift+F", SP.SP_DirOpenIcon,
                               "Open a Hugging Face model folder or sharded checkpoint", "folder")
    a["open_recipe"] = _action(window, "Open &recipe…", window.ask_open_recipe, "Ctrl+Shift+O", SP.SP_FileDialogContentsView,
                               "Restore the window from a recipe or a mergekit config", "recipe")
    a["save_recipe"] = _action(window, "&Save recipe", lambda: window.save_recipe(), QKeySequence.StandardKey.Save,
                               SP.SP_DialogSaveButton, "Save models, method, parameters and output as YAML", "save")
    a["save_recipe_as"] = _action(window, "Save recipe &as…", lambda: _save_as(window), "Ctrl+Shift+S")
    a["quit"] = _action(window, "&Quit", window.close, "Ctrl+Q")
    a["remove"] = _action(window, "&Remove", lambda: window.remove_models(), QKeySequence.StandardKey.Delete, SP.SP_TrashIcon,
                          "Remove the selected models from the list", "remove")
    a["set_base"] = _action(window, "Use as &base", lambda: _toggle_base(window), "Ctrl+B", SP.SP_ArrowUp,
                            "Mark the selected model as the base model", "base")
    a["merge"] = _action(window, "&Merge", window.start_merge, "Ctrl+M", SP.SP_MediaPlay, "Run the merge", "merge")
    a["cancel"] = _action(window, "&Cancel", window.cancel_jobs, "Escape", SP.SP_MediaStop, "Stop the running job", "cancel")
    a["cancel"].setEnabled(False)
    a["stack_layers"] = _action(window, "&Stack layers…", window.open_slice_editor, "Ctrl+L", None,
                                "Pick layer ranges of the models to stack into a model of a new depth")
    a["test_merge"] = _action(window, "&Test merge in memory", lambda: _test_in_memory(window), "Ctrl+T", None,
                              "Merge the recipe into memory and evaluate it next to its models, writing nothing")
    a["moe"] = _action(window, "Assemble mi&xture of experts…", lambda: window.moe.ask(),
                       tip="Build a Mixtral or Qwen2-MoE from dense fine-tunes of one base (mergekit-moe's YAML)")
    a["about"] = _action(window, "&About Merge Studio", lambda: _about(window))
    # Delete works where the list has focus without stealing it from text fields.
    a["remove"].setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
    window.model_list.addAction(a["remove"])

    bar = window.menuBar()
    file_menu = bar.addMenu("&File")
    file_menu.addActions([a["open"], a["open_folder"]])
    recent_models = file_menu.addMenu("Recent models")
    file_menu.addSeparator()
    file_menu.addActions([a["open_recipe"]])
    recent_recipes = file_menu.addMenu("Recent recipes")
    file_menu.addActions([a["save_recipe"], a["save_recipe_as"]])
    file_menu.addSeparator()
    file_menu.addAction(a["quit"])
    edit_menu = bar.addMenu("&Edit")
    edit_menu.addActions([a["set_base"], a["remove"]])
    merge_menu = bar.addMenu("&Merge")
    merge_menu.addActions([a["merge"], a["test_merge"], a["cancel"]])
    merge_menu.addSeparator()
    merge_menu.addActions([a["stack_layers"], a["moe"]])
    merge_menu.addSeparator()
    from merge_studio.gui.threads_menu import build_threads_menu

    build_threads_menu(window, merge_menu)
    view_menu = bar.addMenu("&View")
    for i in range(window.tabs.count()):
        view_act = QAction(window.tabs.tabText(i), window)
        view_act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
        view_act.triggered.connect(lambda _c=False, i=i: window.tabs.setCurrentIndex(i))
        view_menu.addAction(view_act)
    help_menu = bar.addMenu("&Help")
    help_menu.addAction(a["about"])
    from merge_studio.gui.help_menu import add_help_actions

    a.update(add_help_actions(window, help_menu))

    def refresh_recent() -> None:
        _fill_recent(recent_models, window.settings.recent_models, lambda p: window.open_paths([p]))
        _fill_recent(recent_recipes, window.settings.recent_recipes, window.open_recipe)

    window._refresh_recent_menus = refresh_recent
    refresh_recent()

    for key in ("open", "remove", "set_base"):
        button = QToolButton(window)
        button.setDefaultAction(a[key])
        button.setAutoRaise(True)
        window.add_header_button(button)
    return a


def _fill_recent(menu: QMenu, paths: list[str], opener) -> None:
    menu.clear()
    for path in paths:
        act = menu.addAction(Path(path).name)
        act.setToolTip(path)
        act.setStatusTip(path)
        act.triggered.connect(lambda _c=False, p=path: opener(p))
    menu.setEnabled(bool(paths))


def _save_as(window: MainWindow) -> None:
    previous = window.recipe_path
    window.recipe_path = None
    if window.save_recipe() is None:
        window.recipe_path = previous


def _toggle_base(window: MainWindow) -> None:
    ids = window.model_list.selected_ids()
    if ids:
        window.set_base(None if window.session.base_id == ids[0] else ids[0])


def _test_in_memory(window: MainWindow) -> None:
    """Show the Barrier tab and evaluate the current recipe merged in memory there."""
    if window.show_tab("Barrier"):
        window.extra_views["Barrier"].test_in_memory()


def _about(window: MainWindow) -> None:
    QMessageBox.about(
        window,
        "About Merge Studio",
        f"<b>Merge Studio {merge_studio.__version__}</b><br>Merge neural-network checkpoints and see "
        f"whether the merge worked.<br><br>Qt {QApplication.instance().applicationVersion() or ''}",
    )
