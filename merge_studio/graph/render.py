"""Graphviz layout and rendering (``dot`` → SVG or PNG), with a clear message when it is missing."""

from __future__ import annotations

import shutil
import subprocess

from merge_studio.errors import MergeStudioError

INSTALL_HINT = (
    "install Graphviz: sudo apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS), "
    "or conda install graphviz; then restart Merge Studio"
)


class GraphvizUnavailable(MergeStudioError):
    """Graphviz's ``dot`` program is not installed, so graphs cannot be laid out."""

    def __init__(self, message: str = "Graphviz (the 'dot' program) is not installed", *, hint: str | None = INSTALL_HINT) -> None:
        super().__init__(message, hint=hint)


def dot_available() -> bool:
    """Whether ``dot`` is on PATH (checked each time: PATH may change while running)."""
    return shutil.which("dot") is not None


def _run_dot(dot: str, fmt: str, extra: list[str], timeout: float) -> bytes:
    executable = shutil.which("dot")
    if executable is None:
        raise GraphvizUnavailable()
    try:
        done = subprocess.run(
            [executable, f"-T{fmt}", *extra],
            input=dot.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GraphvizUnavailable() from exc
    except subprocess.TimeoutExpired as exc:
        raise MergeStudioError(
            f"graph layout took longer than {timeout:.0f} s", hint="lower the depth to draw fewer nodes"
        ) from exc
    if done.returncode != 0 or not done.stdout:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise MergeStudioError(
            f"Graphviz could not lay out the graph: {detail[-1] if detail else 'no output'}",
            hint="lower the depth, or report this graph as a bug",
        )
    return done.stdout


def render_svg(dot: str, *, timeout: float = 60.0) -> bytes:
    """Lay out ``dot`` source and return SVG bytes (node ``id``s preserved)."""
    return _run_dot(dot, "svg", [], timeout)


def render_png(dot: str, dpi: int = 96, *, timeout: float = 60.0) -> bytes:
    """Lay out ``dot`` source and return PNG bytes at ``dpi``."""
    return _run_dot(dot, "png", [f"-Gdpi={int(dpi)}"], timeout)


def render(dot: str, fmt: str, dpi: int = 96) -> bytes:
    """SVG or PNG by name (``"svg"``/``"png"``), for file export."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "svg":
        return render_svg(dot)
    if fmt == "png":
        return render_png(dot, dpi=dpi)
    raise MergeStudioError(f"cannot export a graph as .{fmt}", hint="use .svg or .png")
