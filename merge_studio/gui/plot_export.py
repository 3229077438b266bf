"""Export… for every plot: the picture as PNG or SVG, or the plotted numbers as CSV.

The CSV is read back from the figure itself (each labelled line's points, each
bar's height), so any plot of the app exports its data without a writer of its
own; a view with a better table (the barrier report's long format) passes its
own rows. Files are written beside the target under a temporary name and renamed
into place, and the file dialog asks before an existing file is replaced.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PySide6.QtWidgets import QFileDialog, QWidget

from merge_studio.errors import OutputError

FILTERS = {"png": "PNG picture (*.png)", "svg": "SVG picture (*.svg)", "csv": "CSV numbers (*.csv)"}
Rows = Sequence[Sequence[Any]]


def _axes_name(ax: Any, index: int) -> str:
    return ax.get_title() or ax.get_ylabel().split("\n")[0] or f"plot {index + 1}"


def figure_rows(figure: Figure) -> list[list[Any]]:
    """The numbers a figure shows: one row per point of each labelled line and per bar."""
    rows: list[list[Any]] = [["plot", "series", "x", "y"]]
    for i, ax in enumerate(figure.axes):
        name = _axes_name(ax, i)
        bars = set()
        for container in ax.containers:
            if isinstance(container, BarContainer):
                labels = [t.get_text() for t in ax.get_xticklabels()]
                for j, patch in enumerate(container.patches):
                    bars.add(id(patch))
                    x = patch.get_x() + patch.get_width() / 2
                    tick = min(range(len(labels)), key=lambda k: abs(ax.get_xticks()[k] - x)) if labels else None
                    rows.append([name, container.get_label() or "bars",
                                 labels[tick] if tick is not None else x, patch.get_height()])
        for line in ax.get_lines():
            label = line.get_label()
            if label.startswith("_"):
                continue
            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=False):
                rows.append([name, label, x, y])
    return rows


def _atomic_write(target: Path, write: Callable[[Path], None]) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}", hint="choose a folder you can write to") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def export_figure(figure: Figure, path: str | Path, rows: Rows | None = None, *, dpi: int = 150) -> Path:
    """Write ``figure`` as PNG or SVG, or its numbers (``rows``, else :func:`figure_rows`) as CSV."""
    target = Path(path)
    kind = target.suffix.lower().lstrip(".")
    if kind not in FILTERS:
        raise OutputError(f"cannot export a plot as .{kind}", hint="use .png, .svg or .csv")
    if kind == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows if rows is not None else figure_rows(figure))
        return _atomic_write(target, lambda tmp: tmp.write_text(out.getvalue(), encoding="utf-8"))
    return _atomic_write(target, lambda tmp: figure.savefig(tmp, format=kind, dpi=dpi, bbox_inches="tight"))


def ask_export(parent: QWidget, figure: Figure, suggested: str | Path,
               rows: Callable[[], Rows | None] | None = None, canvas: Any = None) -> Path | None:
    """Ask where (PNG, SVG or CSV; the dialog confirms replacing a file), then export; None when cancelled."""
    path, chosen = QFileDialog.getSaveFileName(parent, "Export plot", str(suggested), ";;".join(FILTERS.values()))
    if not path:
        return None
    target = Path(path)
    if target.suffix.lower().lstrip(".") not in FILTERS:
        kind = next((k for k, f in FILTERS.items() if f == chosen), "png")
        target = target.with_name(f"{target.name}.{kind}")
    if canvas is not None and hasattr(canvas, "hold"):
        with canvas.hold():  # no render thread draws the figure while it is saved
            return export_figure(figure, target, rows() if rows is not None else None)
    return export_figure(figure, target, rows() if rows is not None else None)
