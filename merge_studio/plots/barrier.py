"""Barrier plots: loss or accuracy along interpolation paths, drawn on a matplotlib Axes.

Used by the GUI's Barrier tab (live, through :class:`BarrierPlotter`) and by
``merge-studio barrier --plot`` (whole curves, through :func:`plot_barrier`), so
both show the same picture. Test curves are solid, train curves dashed; each
curve's barrier is drawn as a vertical bar from the straight line between the
endpoints up to the curve's peak, with its value beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint

Metric = Literal["loss", "accuracy"]
# one colour per kind of curve, stable across plots (colour-blind-safe Okabe–Ito hues)
CURVE_COLOURS = {
    "naive": "#D55E00",
    "BN reset": "#E69F00",
    "aligned": "#0072B2",
    "aligned + REPAIR": "#CC79A7",
    "via merged": "#009E73",
}
_FALLBACK = ["#CC79A7", "#56B4E9", "#F0E442", "#000000"]
SPLIT_STYLES = {"test": "-", "train": "--"}


def curve_colour(label: str, index: int = 0) -> str:
    return CURVE_COLOURS.get(label, _FALLBACK[index % len(_FALLBACK)])


def _values(curve: BarrierCurve, metric: Metric, split: str) -> np.ndarray | None:
    table = curve.losses if metric == "loss" else curve.accuracies
    return table.get(split)


def _barrier(curve: BarrierCurve, metric: Metric, split: str) -> float | None:
    table = curve.loss_barrier if metric == "loss" else curve.accuracy_barrier
    return table.get(split)


def _format_barrier(value: float, metric: Metric) -> str:
    return f"{value:.3g}" if metric == "loss" else f"{100 * value:.1f} pts"


def style_axes(ax: Axes, metric: Metric, *, anchors: Sequence[str] = ("A", "B"), via_merged: bool = False,
               split_note: str = "", merged_at: float = 0.5, merged_note: str = "") -> None:
    """Axis labels, endpoint ticks naming A and B (and the merged model's place), a light grid."""
    ax.set_xlim(-0.03, 1.03)
    first, last = (anchors[0], anchors[-1]) if anchors else ("A", "B")
    ticks, labels = [0.0, 1.0], [f"A\n{first}" if first != "A" else "A", f"B\n{last}" if last != "B" else "B"]
    if via_merged:
        ticks.insert(1, merged_at)
        labels.insert(1, "merged" + (f"\n{merged_note}" if merged_note else ""))
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_xticks([x for x in (0.25, 0.5, 0.75) if not via_merged or abs(x - merged_at) > 0.08], minor=True)
    ax.set_xlabel("λ: θ = (1−λ)·A + λ·B", fontsize=9)
    ax.set_ylabel(("loss" if metric == "loss" else "accuracy") + (f" ({split_note})" if split_note else ""), fontsize=9)
    if metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.grid(True, which="both", alpha=0.25, linewidth=0.6)


def _merged_note(curve: BarrierCurve) -> str:
    """Under the merged tick: its coefficient, and the B the path ends at when it is not B as stored."""
    note = curve.anchor_note.replace(", B aligned", "")
    if curve.anchors[-1].endswith("′"):
        note = (note + ", " if note else "") + "to aligned B"
    return f"({note})" if note else ""


def _draw_curve(ax: Axes, curve: BarrierCurve, metric: Metric, split: str, colour: str, *, mark_barrier: bool) -> list[Artist]:
    values = _values(curve, metric, split)
    if values is None:
        return []
    lam = np.asarray(curve.lambdas)
    (line,) = ax.plot(lam, values, SPLIT_STYLES.get(split, "-"), color=colour, marker="o", markersize=3,
                      linewidth=1.7, gid=f"{curve.label}|{split}")
    artists: list[Artist] = [line]
    if not mark_barrier or len(lam) < 2 or not np.isfinite(values).all():
        return artists
    chord = values[0] + (values[-1] - values[0]) * (lam - lam[0]) / (lam[-1] - lam[0])
    gap = values - chord if metric == "loss" else chord - values
    peak = int(np.argmax(gap))
    (chord_line,) = ax.plot([lam[0], lam[-1]], [values[0], values[-1]], ":", color=colour, linewidth=1.0, alpha=0.7)
    artists.append(chord_line)
    if gap[peak] > 0 and 0 < peak < len(lam) - 1:
        artists.append(ax.vlines(lam[peak], chord[peak], values[peak], colors=colour, linewidth=2.2, alpha=0.35))
    return artists


def _legend(ax: Axes, curves: Sequence[BarrierCurve], splits: Sequence[str], colours: Sequence[str], metric: Metric,
            *, with_barriers: bool, compact: bool = False, styles_note: str = "") -> Artist:
    """One entry per curve carrying its barrier on the first split, then the line styles; placed where
    it hides the fewest points, or beside the axes for ``compact`` plots."""
    handles = []
    for c, col in zip(curves, colours, strict=True):
        value = _barrier(c, metric, splits[0]) if with_barriers else None
        label = c.label if value is None else f"{c.label}:  {_format_barrier(value, metric)}"
        handles.append(Line2D([], [], color=col, marker="o", markersize=3, linewidth=1.7, label=label))
    if len(splits) > 1 and not compact:
        handles += [Line2D([], [], color="0.35", linestyle=SPLIT_STYLES.get(s, "-"), linewidth=1.4, label=s) for s in splits]
    if with_barriers and not compact:
        handles.append(Line2D([], [], color="0.35", linestyle=":", linewidth=1.0, label="straight line A–B"))
    title = f"{'loss' if metric == 'loss' else 'accuracy'} barrier ({splits[0]})" if with_barriers else None
    if styles_note:
        title = f"{title}\n{styles_note}" if title else styles_note
    size = 7 if compact else 8
    # Small plots (the window's) keep the legend beside the axes: inside, every corner hides points.
    place = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0) if compact else dict(loc="best")
    legend = ax.legend(handles=handles, fontsize=size, title=title, title_fontsize=size, framealpha=0.9, **place)
    for text, col in zip(legend.get_texts(), colours, strict=False):
        text.set_color(col)
        text.set_fontweight("bold")
    return legend


def plot_barrier(
    ax: Axes,
    curves: Sequence[BarrierCurve],
    *,
    metric: Metric = "loss",
    split: str | Sequence[str] = "test",
    annotate: bool = True,
    title: str | None = None,
    compact: bool = False,
) -> list[Artist]:
    """Draw ``curves`` on ``ax``: one line per curve and split, a legend, and the barrier values.

    The first split (test by default) carries the barrier marks: the dotted straight
    line between the endpoints, a bar at the curve's worst point, and the values.
    ``compact`` keeps the legend to one entry per curve (line styles are then
    explained in the axis label), for small plots such as the GUI's.
    """
    splits = [split] if isinstance(split, str) else list(split)
    colours = [curve_colour(c.label, i) for i, c in enumerate(curves)]
    artists: list[Artist] = []
    for curve, colour in zip(curves, colours, strict=True):
        for s in splits:
            artists += _draw_curve(ax, curve, metric, s, colour, mark_barrier=annotate and s == splits[0])
    straight = [c for c in curves if len(c.anchors) == 2]
    anchors = (straight or list(curves))[0].anchors if curves else ("A", "B")
    merged = next((c for c in curves if len(c.anchors) == 3), None)
    merged_at = merged.anchor_positions[1] if merged is not None else 0.5
    if merged is not None:
        artists.append(ax.axvline(merged_at, color=curve_colour("via merged"), linestyle=":", linewidth=0.8, alpha=0.6))
    note = ", ".join(f"{s} {'—' if SPLIT_STYLES.get(s, '-') == '-' else '- -'}" for s in splits) if len(splits) > 1 else splits[0]
    # compact plots are short: the line styles go under the legend's title instead of into the y label
    style_axes(ax, metric, anchors=anchors, via_merged=merged is not None, split_note="" if compact else note,
               merged_at=merged_at, merged_note=_merged_note(merged) if merged is not None else "")
    if title:
        ax.set_title(title, fontsize=10)
    if curves:
        artists.append(_legend(ax, curves, splits, colours, metric, with_barriers=annotate, compact=compact,
                               styles_note=note if compact and len(splits) > 1 else ""))
    return artists


class BarrierPlotter:
    """Keeps one line per (curve, split) on an Axes and extends it as points arrive.

    ``add_point`` is cheap (it updates a line's data); the caller redraws the
    canvas (``canvas.draw_idle()``). ``show_report`` replaces the live lines by the
    finished picture with barrier annotations.
    """

    def __init__(self, ax: Axes, *, metric: Metric = "loss", splits: Sequence[str] = ("test", "train")) -> None:
        self.ax = ax
        self.metric = metric
        self.splits = tuple(splits)
        self._lines: dict[tuple[str, str], Line2D] = {}
        self._data: dict[tuple[str, str], dict[float, float]] = {}
        self._labels: list[str] = []
        self.clear()

    def clear(self) -> None:
        self.ax.clear()
        self._lines.clear()
        self._data.clear()
        self._labels.clear()
        style_axes(self.ax, self.metric, split_note=", ".join(self.splits))

    def add_point(self, point: BarrierPoint) -> bool:
        """Extend the point's curve; returns ``False`` when the point is not shown here."""
        if point.split not in self.splits:
            return False
        value = point.loss if self.metric == "loss" else point.accuracy
        if value is None:
            return False
        key = (point.curve, point.split)
        if point.curve not in self._labels:
            self._labels.append(point.curve)
        if key not in self._lines:
            colour = curve_colour(point.curve, self._labels.index(point.curve))
            show_split = len(self.splits) > 1
            (line,) = self.ax.plot([], [], SPLIT_STYLES.get(point.split, "-"), color=colour, marker="o",
                                   markersize=3, linewidth=1.7,
                                   label=point.curve + (f" · {point.split}" if show_split else ""))
            self._lines[key] = line
            self._data[key] = {}
            self.ax.legend(loc="best", fontsize=8, framealpha=0.85)
        self._data[key][point.lam] = value
        xs = sorted(self._data[key])
        self._lines[key].set_data(xs, [self._data[key][x] for x in xs])
        self.ax.relim()
        self.ax.autoscale_view(scalex=False)
        return True

    def show_curves(self, curves: Sequence[BarrierCurve]) -> list[Artist]:
        """Replace the live lines by the finished curves with their barriers."""
        self.ax.clear()
        self._lines.clear()
        self._data.clear()
        return plot_barrier(self.ax, curves, metric=self.metric, split=self.splits)

    @property
    def line_count(self) -> int:
        return len(self._lines)


def draw_barrier_report(fig: Figure, curves: Sequence[BarrierCurve], *, splits: Sequence[str] = ("test", "train"),
                        title: str | None = None, compact: bool = False, rows: int = 1,
                        task: str | None = None) -> list[Axes]:
    """Loss and (when there is one) accuracy on ``fig``, side by side or (``rows=2``) one above the other;
    returns the axes. Language models (``task="language_modeling"``) get a perplexity scale
    beside the token loss, and their accuracy is called next-token accuracy."""
    fig.clear()
    has_accuracy = any(c.accuracies for c in curves)
    n = 2 if has_accuracy else 1
    rows = min(rows, n)
    axes = list(fig.subplots(rows, n // rows, squeeze=False).flat)
    shown = [s for s in splits if any(s in c.losses for c in curves)] or list(splits)
    plot_barrier(axes[0], curves, metric="loss", split=shown, compact=compact)
    if has_accuracy:
        plot_barrier(axes[1], curves, metric="accuracy", split=shown, compact=compact)
    if task == "language_modeling":
        label_language_model(axes[0], axes[1] if has_accuracy else None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.set_layout_engine("constrained")
    return list(axes)


def label_language_model(loss_ax: Axes, accuracy_ax: Axes | None = None) -> None:
    """Token loss on the left, the same points read as perplexity (e^loss) on the right."""
    loss_ax.set_ylabel("token loss (nats)")
    scale = loss_ax.secondary_yaxis("right", functions=(_exp, _log))
    scale.set_ylabel("perplexity")
    if accuracy_ax is not None:
        accuracy_ax.set_ylabel("next-token accuracy")


def _exp(values: np.ndarray) -> np.ndarray:
    return np.exp(np.clip(values, -50.0, 50.0))


def _log(values: np.ndarray) -> np.ndarray:
    return np.log(np.clip(values, 1e-30, None))
