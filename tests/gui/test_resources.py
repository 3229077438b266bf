"""Shipped assets: every icon loads for light and dark palettes, the style sheet applies cleanly."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QtMsgType, qInstallMessageHandler
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QPushButton, QStyle, QTabWidget, QVBoxLayout, QWidget

from merge_studio.gui import resources as res

WINDOW_ICONS = (
    "open", "open-recipe", "save", "merge", "cancel", "remove", "star", "graph", "barrier", "permutation",
    "inspector", "zoom-in", "zoom-out", "fit", "export", "folder", "warning", "error", "info", "demo",
)


@pytest.fixture
def qt_warnings():
    """Qt warnings printed while the test runs (the style sheet parser reports through them)."""
    seen: list[str] = []

    def handler(kind, _context, message) -> None:
        if kind != QtMsgType.QtDebugMsg:
            seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield seen
    qInstallMessageHandler(previous)


@pytest.fixture
def restore_style(qapp):
    previous_sheet, previous_style, previous_palette = qapp.styleSheet(), qapp.style().name(), qapp.palette()
    yield qapp
    qapp.setStyleSheet(previous_sheet)
    qapp.setStyle(previous_style)
    qapp.setPalette(previous_palette)


def test_assets_are_found_through_importlib_resources():
    root = resources.files("merge_studio.gui.assets")
    for name in ("app.qss", "app.svg", "app.png"):
        assert root.joinpath(name).is_file(), name
    assert set(WINDOW_ICONS) <= set(res.icon_names())


@pytest.mark.parametrize("name", WINDOW_ICONS)
def test_every_window_icon_loads_as_a_real_picture(qapp, name):
    picture = res.icon(name)
    assert not picture.isNull()
    image = picture.pixmap(24, 24).toImage()
    assert image.width() == 24
    assert any(image.pixelColor(x, y).alpha() > 0 for x in range(24) for y in range(24)), "nothing drawn"


def test_names_the_window_already_uses_resolve_through_aliases(qapp):
    for alias in ("recipe", "base", "app"):
        assert not res.icon(alias).isNull(), alias


def test_an_unknown_icon_falls_back_to_the_style_or_is_empty(qapp):
    assert res.icon("no-such-icon").isNull()
    assert not res.icon("no-such-icon", QStyle.StandardPixmap.SP_DialogOpenButton).isNull()


def test_icons_use_one_line_style():
    for name in res.icon_names():
        svg = res.icon_svg(name).decode()
        assert 'viewBox="0 0 24 24"' in svg, name
        assert 'stroke-width="1.75"' in svg and 'stroke-linecap="round"' in svg, name
        assert "currentColor" not in svg, name


def test_on_a_dark_palette_icons_are_drawn_in_light_ink(qapp, restore_style):
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor("#1f2329"))
    assert res.is_dark(dark)
    assert res.DARK_INK.encode() in res.icon_svg("merge", dark=True)
    assert res.INK.encode() not in res.icon_svg("merge", dark=True)
    qapp.setPalette(dark)
    image = res.icon("merge").pixmap(48, 48).toImage()
    darkest = min(image.pixelColor(x, y).lightness() for x in range(48) for y in range(48)
                  if image.pixelColor(x, y).alpha() > 200)
    assert darkest > 150  # light strokes, readable on the dark window


def test_status_icons_keep_their_colour_on_dark_palettes():
    assert res.icon_svg("error", dark=True) == res.icon_svg("error", dark=False)


def test_the_app_icon_offers_the_sizes_desktops_want(qapp):
    app_icon = res.app_icon()
    assert not app_icon.isNull()
    assert app_icon.pixmap(256, 256).width() == 256


@pytest.mark.parametrize("dark", [False, True])
def test_the_style_sheet_fills_every_colour_token(dark):
    sheet = res.stylesheet(dark=dark)
    assert not re.search(r"\$[a-z_]+", sheet), re.findall(r"\$[a-z_]+", sheet)
    assert (res.DARK if dark else res.LIGHT)["accent"] in sheet
    assert sheet.count("{") == sheet.count("}")


@pytest.mark.parametrize("dark", [False, True])
def test_the_style_sheet_applies_without_parser_warnings(qtbot, restore_style, qt_warnings, dark):
    qapp = restore_style
    qapp.setStyleSheet(res.stylesheet(dark=dark))
    window = QWidget()
    qtbot.addWidget(window)
    tabs = QTabWidget(window)
    tabs.addTab(QWidget(), "Inspector")
    button = QPushButton("Merge", window)
    button.setObjectName("merge_button")
    layout = QVBoxLayout(window)
    layout.addWidget(tabs)
    layout.addWidget(button)
    window.show()
    qtbot.waitExposed(window)
    window.grab()
    assert not [m for m in qt_warnings if "style" in m.lower() or "parse" in m.lower()], qt_warnings
    # The accent reached the merge button.
    colour = button.grab().toImage().pixelColor(button.width() // 2, 3)
    accent = QColor((res.DARK if dark else res.LIGHT)["accent"])
    assert abs(colour.hue() - accent.hue()) < 12


def test_apply_style_installs_the_sheet_for_the_palette(restore_style):
    qapp = restore_style
    res.apply_style(qapp)
    assert "QTabBar::tab" in qapp.styleSheet()
    assert res.LIGHT["accent"] in qapp.styleSheet()


@pytest.mark.parametrize("dark", [False, True])
def test_every_picture_the_style_sheet_names_is_shipped(dark):
    sheet = res.stylesheet(dark=dark)
    names = re.findall(r"url\(style:([^)]+)\)", sheet)
    assert names, "the spin box and combo box arrows come from the assets"
    folder = resources.files("merge_studio.gui.assets").joinpath("style")
    for name in names:
        assert folder.joinpath(name).is_file(), name



def test_the_packaged_app_icon_is_the_source_artwork():
    """resources/render_icons.py copies the SVG into the assets; the two must not drift apart."""
    root = Path(__file__).resolve().parents[2]
    source = (root / "resources" / "icons" / "app" / "merge-studio.svg").read_bytes()
    assert res.asset_bytes("app.svg") == source
    for size in (16, 32, 48, 64, 128, 256, 512):
        assert (root / "resources" / "icons" / "app" / f"merge-studio-{size}.png").is_file(), size


def test_a_desktop_switching_to_dark_gets_the_dark_sheet(restore_style):
    qapp = restore_style
    res.apply_style(qapp)
    assert res.scheme_is_dark(Qt.ColorScheme.Dark, qapp.palette())
    assert not res.scheme_is_dark(Qt.ColorScheme.Light, qapp.palette())
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor("#1f2329"))
    assert res.scheme_is_dark(Qt.ColorScheme.Unknown, dark)
    qapp.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert res.DARK["surface"] in qapp.styleSheet()
    qapp.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert res.LIGHT["surface"] in qapp.styleSheet()
