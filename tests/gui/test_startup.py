"""Start-up checks turn the usual Qt aborts into hints (the machine is faked, nothing is opened)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from merge_studio.gui.startup import check_gui_environment


def _qt_imports_fine() -> None:
    return None


def _all_libraries_load(name: str) -> None:
    return None


def _check(environ: dict[str, str], tmp_path: Path, **kwargs) -> str | None:
    kwargs.setdefault("import_qt", _qt_imports_fine)
    kwargs.setdefault("load_library", _all_libraries_load)
    kwargs.setdefault("platform", "linux")
    kwargs.setdefault("proc_unix", tmp_path / "no-proc-net-unix")
    return check_gui_environment(environ, x11_socket_dir=tmp_path, **kwargs)


def test_a_server_without_a_display_gets_a_hint_naming_the_alternatives(tmp_path):
    hint = _check({}, tmp_path)
    assert hint is not None
    assert "no display" in hint
    assert "xvfb-run" in hint and "--screenshot" in hint and "merge-studio --help" in hint


@pytest.mark.parametrize("platform", ["offscreen", "minimal", "offscreen:fontengine=freetype"])
def test_headless_qt_platforms_need_no_display(tmp_path, platform):
    assert _check({"QT_QPA_PLATFORM": platform}, tmp_path) is None


def test_a_desktop_with_a_running_x_server_passes(tmp_path):
    (tmp_path / "X0").touch()
    assert _check({"DISPLAY": ":0"}, tmp_path) is None


def test_a_display_variable_pointing_at_no_x_server_is_reported(tmp_path):
    (tmp_path / "X0").touch()
    hint = _check({"DISPLAY": ":7"}, tmp_path)
    assert hint is not None and "no X server" in hint and "':7'" in hint


def test_a_display_without_even_a_socket_folder_is_reported(tmp_path):
    proc_unix = tmp_path / "unix"
    proc_unix.write_text("Num RefCount Protocol Flags Type St Inode Path\n")
    hint = _check({"DISPLAY": ":99"}, tmp_path / "no-x11-folder", proc_unix=proc_unix)
    assert hint is not None and "no X server" in hint


def test_an_x_server_on_an_abstract_socket_only_passes(tmp_path):
    proc_unix = tmp_path / "unix"
    proc_unix.write_text("0000: 00000002 00000000 00010000 0001 01 1234 @/tmp/.X11-unix/X1\n")
    assert _check({"DISPLAY": ":1"}, tmp_path / "no-x11-folder", proc_unix=proc_unix) is None


def test_a_remote_display_is_left_for_qt_to_try(tmp_path):
    assert _check({"DISPLAY": "localhost:10.0"}, tmp_path) is None


def test_wayland_sessions_pass_without_x11(tmp_path):
    assert _check({"WAYLAND_DISPLAY": "wayland-0"}, tmp_path) is None
    hint = _check({"QT_QPA_PLATFORM": "wayland"}, tmp_path)
    assert hint is not None and "WAYLAND_DISPLAY" in hint


def test_windows_and_macos_are_not_second_guessed(tmp_path):
    assert _check({}, tmp_path, platform="win32") is None
    assert _check({}, tmp_path, platform="darwin") is None


@pytest.mark.parametrize(
    ("message", "package"),
    [
        ("libEGL.so.1: cannot open shared object file: No such file or directory", "libegl1"),
        ("libGL.so.1: cannot open shared object file", "libgl1"),
        ("libxkbcommon.so.0: cannot open shared object file", "libxkbcommon0"),
        ("libfontconfig.so.1: cannot open shared object file", "libfontconfig1"),
    ],
)
def test_a_missing_system_library_names_the_debian_package(tmp_path, message, package):
    def broken_import() -> None:
        raise ImportError(message)

    hint = _check({"QT_QPA_PLATFORM": "offscreen"}, tmp_path, import_qt=broken_import)
    assert hint is not None
    assert f"apt-get install {package}" in hint
    assert message in hint


def test_an_unknown_library_error_lists_every_qt_package(tmp_path):
    def broken_import() -> None:
        raise ImportError("undefined symbol: _ZN7QString")

    hint = _check({"QT_QPA_PLATFORM": "offscreen"}, tmp_path, import_qt=broken_import)
    assert hint is not None and "libegl1" in hint and "libxkbcommon0" in hint


def test_pyside6_not_installed_says_how_to_install_it(tmp_path):
    def no_pyside() -> None:
        raise ModuleNotFoundError("No module named 'PySide6'", name="PySide6")

    hint = _check({"QT_QPA_PLATFORM": "offscreen"}, tmp_path, import_qt=no_pyside)
    assert hint is not None and "pip install PySide6-Essentials" in hint


def test_x11_without_libxcb_cursor_names_the_package(tmp_path):
    (tmp_path / "X0").touch()

    def loader(name: str) -> None:
        if "xcb-cursor" in name:
            raise OSError(f"{name}: cannot open shared object file")

    hint = _check({"DISPLAY": ":0"}, tmp_path, load_library=loader)
    assert hint is not None and "libxcb-cursor0" in hint


def test_the_real_machine_passes_offscreen():
    """Offscreen on this very machine: PySide6 imports, so no hint."""
    assert check_gui_environment({"QT_QPA_PLATFORM": "offscreen"}) is None


@pytest.mark.parametrize(("display", "says"), [(None, "no display"), (":4242", "no X server")])
def test_the_window_command_without_a_display_prints_the_hint_instead_of_aborting(display, says):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    if display:
        env["DISPLAY"] = display
    code = "import sys; from merge_studio.gui.app import main; sys.exit(main([]))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode not in (0, -6, 134), done.stderr  # 134/-6: Qt's abort
    assert says in done.stderr
