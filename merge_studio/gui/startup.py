"""Checks made before the ``QApplication`` exists, so start-up problems read as hints.

Without them Qt aborts the process (``qFatal``) when it cannot open a display or
load its platform plugin, printing a message that names plugins rather than what
to install. :func:`check_gui_environment` finds the usual causes first: no display,
a display socket that is not there, missing system libraries behind PySide6's
import, and the X11 libraries Qt's ``xcb`` plugin loads at run time.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# Platforms that need no window system (Qt's QPA plugins).
HEADLESS_PLATFORMS = {"offscreen", "minimal", "vnc", "eglfs", "linuxfb", "vkkhrdisplay"}
# Shared library stem (as named in an ImportError) -> Debian/Ubuntu package providing it.
DEBIAN_PACKAGES = {
    "libEGL": "libegl1",
    "libGL": "libgl1",
    "libOpenGL": "libopengl0",
    "libxkbcommon-x11": "libxkbcommon-x11-0",
    "libxkbcommon": "libxkbcommon0",
    "libfontconfig": "libfontconfig1",
    "libfreetype": "libfreetype6",
    "libdbus-1": "libdbus-1-3",
    "libglib-2.0": "libglib2.0-0",
    "libgthread-2.0": "libglib2.0-0",
    "libX11-xcb": "libx11-xcb1",
    "libX11": "libx11-6",
    "libxcb-cursor": "libxcb-cursor0",
    "libxcb-icccm": "libxcb-icccm4",
    "libxcb-keysyms": "libxcb-keysyms1",
    "libxcb-shape": "libxcb-shape0",
    "libxcb-xinerama": "libxcb-xinerama0",
    "libxcb-randr": "libxcb-randr0",
    "libxcb-render-util": "libxcb-render-util0",
    "libxcb-image": "libxcb-image0",
    "libxcb": "libxcb1",
}
# What Qt's xcb plugin dlopens besides what PySide6's own import needs (Qt >= 6.5).
XCB_RUNTIME_LIBRARIES = ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0", "libxcb-icccm.so.4")
ALL_QT_PACKAGES = "libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libxcb-cursor0"


def _import_qt() -> None:
    import PySide6.QtGui  # noqa: F401
    import PySide6.QtWidgets  # noqa: F401


def _debian_package_for(message: str) -> str | None:
    """The package that provides the library an import error names, if we know it."""
    match = re.search(r"(lib[\w.+-]+?)\.so", message)
    if not match:
        return None
    stem = match.group(1)
    for prefix in sorted(DEBIAN_PACKAGES, key=len, reverse=True):
        if stem == prefix or stem.startswith(prefix):
            return DEBIAN_PACKAGES[prefix]
    return None


def missing_qt_library_hint(error: BaseException) -> str:
    """A readable hint for an ImportError raised while importing PySide6."""
    message = str(error)
    if isinstance(error, ModuleNotFoundError) and "PySide6" in message:
        return (
            "merge-studio: the window needs PySide6, which is not installed in this environment.\n"
            "  Install it with: pip install PySide6-Essentials   (or run packaging/install.sh)\n"
            "  The command line works without it: merge-studio --help"
        )
    package = _debian_package_for(message)
    if package:
        need = f"sudo apt-get install {package}"
    else:
        need = f"sudo apt-get install {ALL_QT_PACKAGES}"
    return (
        f"merge-studio: Qt could not load a system library ({message}).\n"
        f"  On Debian/Ubuntu install it with: {need}\n"
        "  (packaging/install.sh installs every library the window needs.)\n"
        "  The command line works without the window: merge-studio --help"
    )


def _x11_socket_missing(display: str, socket_dir: Path, proc_unix: Path = Path("/proc/net/unix")) -> bool:
    """Whether a local X display (``:N``) has no server: no socket file and no abstract socket."""
    match = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display.strip())
    if not match:
        return False  # remote displays (host:N): let Qt try
    socket_name = f"X{match.group(1)}"
    if (socket_dir / socket_name).exists():
        return False
    try:  # Linux X servers may listen on an abstract socket only (@/tmp/.X11-unix/XN)
        listening = proc_unix.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return socket_dir.is_dir()  # cannot tell: trust the socket folder when there is one
    return f"/tmp/.X11-unix/{socket_name}" not in listening


def _no_display_hint(detail: str) -> str:
    return (
        f"merge-studio: {detail}\n"
        "  The window needs a desktop session. On a server, either\n"
        "    - use the command line: merge-studio --help (merge, inspect, graph, barrier, ...),\n"
        "    - take a screenshot headless: merge-studio --screenshot window.png,\n"
        "    - or start it on a virtual screen: xvfb-run merge-studio  (or QT_QPA_PLATFORM=offscreen)."
    )


def display_problem(environ: Mapping[str, str], platform: str = sys.platform,
                    x11_socket_dir: Path = Path("/tmp/.X11-unix"),
                    proc_unix: Path = Path("/proc/net/unix")) -> str | None:
    """Why no window could be opened with this environment, or ``None`` when it looks fine."""
    if platform in ("win32", "darwin", "cygwin"):
        return None
    qpa = environ.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip().lower()
    if qpa in HEADLESS_PLATFORMS:
        return None
    display = environ.get("DISPLAY", "")
    wayland = environ.get("WAYLAND_DISPLAY", "")
    if qpa == "wayland" and not wayland:
        return _no_display_hint("QT_QPA_PLATFORM is 'wayland' but WAYLAND_DISPLAY is not set.")
    if qpa in ("", "xcb") and not display and not (wayland and qpa == ""):
        return _no_display_hint("no display found (neither DISPLAY nor WAYLAND_DISPLAY is set).")
    if qpa in ("", "xcb") and display and not wayland and _x11_socket_missing(display, x11_socket_dir, proc_unix):
        return _no_display_hint(f"DISPLAY is {display!r} but no X server is listening there.")
    return None


def _load_library(name: str) -> None:
    ctypes.CDLL(name)


def xcb_library_problem(load_library: Callable[[str], object] = _load_library) -> str | None:
    """A hint when a library Qt's X11 plugin loads at run time is missing."""
    missing = []
    for name in XCB_RUNTIME_LIBRARIES:
        try:
            load_library(name)
        except OSError:
            missing.append(name)
    if not missing:
        return None
    packages = sorted({_debian_package_for(name) or name for name in missing})
    return (
        f"merge-studio: Qt's X11 support needs {', '.join(missing)}, which could not be loaded.\n"
        f"  On Debian/Ubuntu install: sudo apt-get install {' '.join(packages)}\n"
        "  (packaging/install.sh installs every library the window needs.)"
    )


def check_gui_environment(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    import_qt: Callable[[], None] = _import_qt,
    load_library: Callable[[str], object] = _load_library,
    x11_socket_dir: Path = Path("/tmp/.X11-unix"),
    proc_unix: Path = Path("/proc/net/unix"),
) -> str | None:
    """A readable hint when the window cannot start here, else ``None``.

    Call it before creating the ``QApplication``; print the hint to stderr and exit
    non-zero when it returns one. The parameters exist so tests can fake a machine.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    problem = display_problem(environ, platform, x11_socket_dir, proc_unix)
    if problem:
        return problem
    try:
        import_qt()
    except ImportError as exc:
        return missing_qt_library_hint(exc)
    qpa = environ.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip().lower()
    uses_xcb = qpa == "xcb" or (qpa == "" and bool(environ.get("DISPLAY")) and not environ.get("WAYLAND_DISPLAY"))
    if platform.startswith("linux") and uses_xcb:
        return xcb_library_problem(load_library)
    return None
