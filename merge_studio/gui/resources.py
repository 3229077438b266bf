"""Icons, the application icon and the style sheet, read from ``merge_studio.gui.assets``.

Everything goes through ``importlib.resources`` so the same code works from a
checkout, an installed wheel and a PyInstaller folder, with no paths to guess.

The toolbar icons are drawn in one ink colour (``INK``) that is swapped for a light
one when the palette is dark, so a single SVG set serves both themes; status icons
(warning, error, info) keep their own colours. The style sheet is written with
``$name`` colour tokens, filled from a light or a dark table for the same reason.
"""

from __future__ import annotations

import functools
from importlib import resources
from string import Template

from PySide6.QtCore import QByteArray, QDir, QRectF, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QImage, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication, QStyle

ASSETS = "merge_studio.gui.assets"
INK = "#3b4754"
"""The stroke colour the toolbar SVGs are drawn in (recoloured for dark themes)."""
DARK_INK = "#d5dbe1"
ICON_SIZES = (16, 20, 24, 32, 48, 64)
APP_ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
# Names the window's code uses that are spelled differently from the files.
ALIASES = {
    "recipe": "open-recipe",
    "base": "star",
    "delete": "remove",
    "stop": "cancel",
    "layers": "inspector",
    "alignment": "permutation",
    "permutations": "permutation",
}

LIGHT = {
    "window": "#f6f7f9", "surface": "#ffffff", "alt": "#f8f9fb", "header": "#f1f3f5",
    "hover": "#eaeef2", "pressed": "#dde3e9", "border": "#dde1e6", "border_strong": "#c9d1d9",
    "text": "#1f2933", "heading": "#34495e", "muted": "#6b7785",
    "accent": "#2e86de", "accent_hover": "#1f6fbf", "accent_soft": "#e3f0fc", "accent_disabled": "#a9c8e8",
    "selection": "#d6e9fb", "selection_text": "#1b2631",
    "error": "#c0392b", "error_bg": "#fdecea", "on_accent": "#ffffff", "warning": "#9a6700",
    "chevron_up": "chevron-up.svg", "chevron_down": "chevron-down.svg",
}
DARK = {
    "window": "#1f2329", "surface": "#262b32", "alt": "#2a3038", "header": "#2d333b",
    "hover": "#323942", "pressed": "#3b434d", "border": "#3a414b", "border_strong": "#4a535e",
    "text": "#e3e7eb", "heading": "#cfd8e3", "muted": "#9aa5b1",
    "accent": "#4ea1f3", "accent_hover": "#6cb3f7", "accent_soft": "#1e3a56", "accent_disabled": "#35506b",
    "selection": "#1f4466", "selection_text": "#ffffff",
    "error": "#ef6b5e", "error_bg": "#4a2523", "on_accent": "#ffffff", "warning": "#e3b341",
    "chevron_up": "chevron-up-dark.svg", "chevron_down": "chevron-down-dark.svg",
}


def _root():
    return resources.files(ASSETS)


def asset_bytes(name: str) -> bytes:
    """Bytes of a shipped asset (``name`` may contain ``/``); raises FileNotFoundError."""
    node = _root()
    for part in name.split("/"):
        node = node.joinpath(part)
    return node.read_bytes()


def asset_text(name: str) -> str:
    """Text of a shipped asset, or ``""`` when it is not there."""
    try:
        return asset_bytes(name).decode("utf-8")
    except (FileNotFoundError, OSError, ModuleNotFoundError):
        return ""


def icon_names() -> list[str]:
    """Every toolbar/menu icon shipped, by name (file name without ``.svg``)."""
    folder = _root().joinpath("icons")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".svg"))


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether the window background is dark (then icons and the style sheet use light ink)."""
    if palette is None:
        if QGuiApplication.instance() is None:
            return False
        palette = QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def icon_svg(name: str, dark: bool = False) -> bytes:
    """The SVG of an icon, with its ink recoloured for a dark background when asked."""
    svg = asset_bytes(f"icons/{ALIASES.get(name, name)}.svg")
    return svg.replace(INK.encode(), DARK_INK.encode()) if dark else svg


def _render(svg: bytes, size: int) -> QImage:
    renderer = QSvgRenderer(QByteArray(svg))
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image


@functools.lru_cache(maxsize=256)
def _icon_from_svg(svg: bytes, sizes: tuple[int, ...] = ICON_SIZES) -> QIcon:
    result = QIcon()
    for size in sizes:
        result.addPixmap(QPixmap.fromImage(_render(svg, size)))
    return result


def has_icon(name: str) -> bool:
    """Whether an SVG icon of that name (or alias) is shipped."""
    try:
        return _root().joinpath("icons", f"{ALIASES.get(name, name)}.svg").is_file()
    except (ModuleNotFoundError, OSError):
        return False


def icon(name: str, fallback: QStyle.StandardPixmap | None = None) -> QIcon:
    """A shipped icon drawn for the current palette, else the style's ``fallback``, else empty.

    ``icon("app")`` is the application icon. Needs a ``QGuiApplication``.
    """
    if name == "app":
        return app_icon()
    if has_icon(name):
        return _icon_from_svg(icon_svg(name, dark=is_dark()))
    if fallback is not None and QApplication.instance() is not None:
        return QApplication.style().standardIcon(fallback)
    return QIcon()


def app_icon() -> QIcon:
    """The application icon: the SVG at every size, with the shipped PNG as a fallback."""
    try:
        svg = asset_bytes("app.svg")
    except (FileNotFoundError, OSError):
        svg = b""
    result = QIcon(_icon_from_svg(svg, APP_ICON_SIZES)) if svg and QSvgRenderer(QByteArray(svg)).isValid() else QIcon()
    if result.isNull():
        pixmap = QPixmap()
        if pixmap.loadFromData(asset_bytes("app.png"), "PNG"):
            result.addPixmap(pixmap)
    return result


def stylesheet(dark: bool | None = None) -> str:
    """The application style sheet with its colour tokens filled for a light or dark palette."""
    if dark is None:
        dark = is_dark()
    return Template(asset_text("app.qss")).safe_substitute(DARK if dark else LIGHT)


def register_search_path() -> None:
    """Let the style sheet say ``url(icons:merge.svg)`` and ``url(style:chevron-down.svg)``."""
    try:
        folder = _root()
        for prefix, path in (("icons", folder), ("icons", folder.joinpath("icons")),
                             ("style", folder.joinpath("style"))):
            if str(path) not in QDir.searchPaths(prefix):
                QDir.addSearchPath(prefix, str(path))
    except (ModuleNotFoundError, TypeError):
        pass


def scheme_is_dark(scheme: Qt.ColorScheme, palette: QPalette) -> bool:
    """Dark when the desktop says so; when it does not know, judge by the palette."""
    if scheme == Qt.ColorScheme.Unknown:
        return is_dark(palette)
    return scheme == Qt.ColorScheme.Dark


def apply_style(app: QApplication) -> None:
    """Install Fusion (the same look everywhere) and the shipped style sheet for its palette.

    The sheet follows the desktop when it switches between light and dark while the
    window is open (icons made afterwards follow too).
    """
    register_search_path()
    app.setStyle("Fusion")
    app.setStyleSheet(stylesheet(is_dark(app.palette())))
    if not app.property("merge_studio_follows_scheme"):
        app.setProperty("merge_studio_follows_scheme", True)
        app.styleHints().colorSchemeChanged.connect(
            lambda scheme: app.setStyleSheet(stylesheet(scheme_is_dark(scheme, app.palette()))))
