"""Merge ▸ Threads: how many cores a merge may use (all by default), remembered in settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

from merge_studio.core.pool import default_threads

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow


def thread_choices(cores: int) -> list[int]:
    """0 (all cores) then 1, 2, 4, ... below the core count."""
    choices, n = [0], 1
    while n < cores:
        choices.append(n)
        n *= 2
    return choices


def build_threads_menu(window: MainWindow, parent: QMenu) -> QMenu:
    cores = default_threads()
    menu = parent.addMenu("&Threads")
    menu.setObjectName("threads_menu")
    menu.setToolTipsVisible(True)
    group = QActionGroup(menu)
    current = window.settings.merge_threads
    for n in thread_choices(cores):
        text = f"All cores ({cores})" if n == 0 else f"{n} thread{'s' * (n != 1)}"
        act = QAction(text, menu)
        act.setCheckable(True)
        act.setChecked(n == current or (n == 0 and current not in thread_choices(cores)))
        act.setToolTip("The output is the same whatever the number; fewer threads leave cores for other work.")
        act.triggered.connect(lambda _c=False, n=n: window.settings.set_merge_threads(n))
        group.addAction(act)
        menu.addAction(act)
    return menu
