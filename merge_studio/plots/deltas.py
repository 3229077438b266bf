"""Per-layer values (relative change, cosine, kept mass) as a horizontal bar chart.

One bar per layer, in model order from top to bottom, so it reads like the graph.
With many layers the labels shrink and thin out instead of overlapping; the figure
height can follow :func:`figure_height_for`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from matplotlib.artist import Artist
from matplotlib.axes import Axes

_BAR_COLOR = "#4a7fb5"
_HIGHLIGHT_COLOR = "#d9622b"
_MAX_LABELS = 60


def figure_height_for(layer_count: int, *, per_layer: float = 0.16, minimum: float = 3.0) -> float:
    """Figure height in inches that keeps ``layer_count`` bars readable."""
    return max(minimum, 0.8 + per_layer * min(layer_count, 400))


def plot_layer_values(
    ax: Axes,
    values: Mapping[str, float],
    *,
    title: str = "",
    xlabel: str = "",
    highlight: Iterable[str] | None = None,
) -> list[Artist]:
    """Draw one horizontal bar per layer on ``ax``; returns the bar artists.

    ``highlight`` names layers to draw in an accent colour (e.g. the one selected
    in the graph). Non-finite values are left out and listed in the title.
    """
    items = [(k, float(v)) for k, v in values.items() if v == v and abs(float(v)) != float("inf")]
    dropped = len(values) - len(items)
    marked = set(highlight or ())
    if not items:
        ax.text(0.5, 0.5, "no per-layer values", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return []
    names = [k for k, _ in items]
    positions = list(range(len(items)))
    colors = [_HIGHLIGHT_COLOR if k in marked else _BAR_COLOR for k in names]
    bars = ax.barh(positions, [v for _, v in items], color=colors, height=0.8)
    ax.set_ylim(len(items) - 0.5, -0.5)  # first layer on top
    step = max(1, -(-len(items) // _MAX_LABELS))
    shown = positions[::step]
    ax.set_yticks(shown)
    size = 8 if len(items) <= 40 else 6.5
    ax.set_yticklabels([names[i] for i in shown], fontsize=size)
    for i in positions:
        if names[i] in marked and i not in shown:
            ax.annotate(names[i], (0, i), xytext=(2, 0), textcoords="offset points", fontsize=size,
                        color=_HIGHLIGHT_COLOR, va="center")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if xlabel:
        ax.set_xlabel(xlabel)
    full_title = title + (f" ({dropped} non-finite left out)" if dropped else "")
    if full_title:
        ax.set_title(full_title, fontsize=10)
    return list(bars)
