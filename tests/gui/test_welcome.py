"""The welcome view: three ways to start and the recent files, each one click away."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt

from merge_studio.gui.resources import apply_style
from merge_studio.gui.views.welcome import WelcomeView


def _view(qtbot) -> WelcomeView:
    view = WelcomeView()
    qtbot.addWidget(view)
    view.resize(1000, 640)
    view.show()
    qtbot.waitExposed(view)
    return view


def test_each_big_button_asks_for_its_action(qtbot):
    view = _view(qtbot)
    for button, signal in (
        (view.open_files_button, view.sig_open_files),
        (view.open_recipe_button, view.sig_open_recipe),
        (view.demo_button, view.sig_try_demo),
    ):
        with qtbot.waitSignal(signal, timeout=1000):
            qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_buttons_say_what_they_do(qtbot):
    view = _view(qtbot)
    assert view.open_files_button.title.text() == "Open checkpoints…"
    assert view.open_recipe_button.title.text() == "Open recipe…"
    assert view.demo_button.title.text() == "Try the demo"
    assert ".safetensors" in view.open_files_button.text.text()


def test_clicking_a_recent_file_opens_it(qtbot, tiny_models, tmp_path):
    view = _view(qtbot)
    recipe = tmp_path / "soup.yaml"
    recipe.write_text("method: simple_average\n")
    view.set_recent([str(recipe), str(tiny_models[0])])
    assert view.recent_paths() == [str(recipe), str(tiny_models[0])]
    assert view.recent_list.isVisible() and not view.recent_empty.isVisible()
    rect = view.recent_list.visualItemRect(view.recent_list.item(1))
    with qtbot.waitSignal(view.sig_open_recent, timeout=1000) as blocker:
        qtbot.mouseClick(view.recent_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert blocker.args == [str(tiny_models[0])]


def test_enter_on_a_recent_file_opens_it_once(qtbot, tiny_models):
    view = _view(qtbot)
    view.set_recent([str(tiny_models[1])])
    view.recent_list.setCurrentRow(0)
    opened: list[str] = []
    view.sig_open_recent.connect(opened.append)
    view.recent_list.setFocus()
    qtbot.keyClick(view.recent_list, Qt.Key.Key_Return)
    assert opened == [str(tiny_models[1])]


def test_without_recent_files_a_sentence_replaces_the_empty_list(qtbot):
    view = _view(qtbot)
    view.set_recent([])
    assert not view.recent_list.isVisible()
    assert view.recent_empty.isVisible() and "listed here" in view.recent_empty.text()


def test_a_moved_file_stays_listed_but_says_it_is_missing(qtbot, tmp_path):
    view = _view(qtbot)
    gone = tmp_path / "deleted.safetensors"
    view.set_recent([str(gone)])
    item = view.recent_list.item(0)
    assert item.font().italic()
    assert "not found" in item.toolTip()
    assert item.text().startswith("deleted.safetensors")


@pytest.fixture
def styled_app(qapp):
    """The application with the shipped style, restored afterwards for the other tests."""
    previous_sheet, previous_style = qapp.styleSheet(), qapp.style().name()
    apply_style(qapp)
    yield qapp
    qapp.setStyleSheet(previous_sheet)
    qapp.setStyle(previous_style)


def test_the_view_renders_with_the_style_sheet(qtbot, styled_app, tmp_path):
    view = _view(qtbot)
    view.set_recent([str(tmp_path)])
    image = view.grab().toImage()
    assert image.width() == 1000 and image.height() == 640
    # Not a blank picture: the logo and the cards put several colours on it.
    colours = {image.pixel(x, y) for x in range(0, 1000, 25) for y in range(0, 640, 25)}
    assert len(colours) > 3
    assert view.demo_button.mapTo(view, QPoint(0, 0)).y() > view.open_files_button.mapTo(view, QPoint(0, 0)).y()


def test_in_a_narrow_window_the_recent_files_move_under_the_buttons(qtbot):
    view = _view(qtbot)
    assert not view.is_stacked()
    view.resize(600, 700)
    qtbot.waitUntil(view.is_stacked, timeout=1000)

    def recent_is_below_the_buttons() -> bool:
        buttons_bottom = view.demo_button.mapTo(view, QPoint(0, view.demo_button.height())).y()
        return view.recent_empty.mapTo(view, QPoint(0, 0)).y() >= buttons_bottom

    qtbot.waitUntil(recent_is_below_the_buttons, timeout=1000)
    view.resize(1100, 700)
    qtbot.waitUntil(lambda: not view.is_stacked(), timeout=1000)
