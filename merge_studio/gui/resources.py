"""Style sheet and icons from ``merge_studio.gui.assets`` (importlib.resources, no paths to guess)."""

from __future__ import annotations

from importlib import resources

from PySide6.QtCore import QDir
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QStyle

ASSETS = "merge_studio.gui.assets"


def asset_text(name: str) -> str:
    """Text of a shipped asset, or ``""`` when it is not there."""
    try:
        return resources.files(ASSETS).joinpath(name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return ""


def register_search_path() -> None:
    """Let the style sheet say ``url(icons:merge.svg)``."""
    try:
        folder = resources.files(ASSETS)
        QDir.addSearchPath("icons", str(folder))
        QDir.addSearchPath("icons", str(folder.joinpath("icons")))
    except (ModuleNotFoundError, TypeError):
        pass


def icon(name: str, fallback: QStyle.StandardPixmap | None = None) -> QIcon:
    """An SVG icon from the assets (``icons/NAME.svg`` or ``NAME.svg``), else a Qt standard icon."""
    try:
        root = resources.files(ASSETS)
        for candidate in (root.joinpath("icons", f"{name}.svg"), root.joinpath(f"{name}.svg")):
            if candidate.is_file():
                return QIcon(str(candidate))
    except (ModuleNotFoundError, TypeError, OSError):
        pass
    if fallback is not None:
        return QApplication.style().standardIcon(fallback)
    return QIcon()


def apply_style(app: QApplication) -> None:
    """Install the shipped style sheet (Fusion underneath so it looks the same everywhere)."""
    register_search_path()
    app.setStyle("Fusion")
    app.setStyleSheet(asset_text("app.qss"))
