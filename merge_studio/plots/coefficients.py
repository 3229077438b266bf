"""Learned merge coefficients (AdaMerging's λ) per layer, one line per model.

Layers run along the x axis in model order; a task-wise result (one λ per model)
is drawn as one bar per model instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.artist import Artist
from matplotlib.axes import Axes

_MAX_LABELS = 40


def _short(name: str) -> str:
    return name[:-7] if name.endswith(".weight") else name


def plot_coefficients(
    ax: Axes,
    coefficients: Mapping[str, Sequence[float]],
    model_names: Sequence[str] = (),
    *,
    title: str = "Learned coefficients",
) -> list[Artist]:
    """Draw ``{tensor: [λ per model]}`` on ``ax``; returns the line (or bar) artists."""
    items = [(k, [float(v) for v in vals]) for k, vals in coefficients.items() if vals]
    if not items:
        ax.text(0.5, 0.5, "no coefficients", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return []
    n_models = len(items[0][1])
    names = list(model_names) + [f"model {i + 1}" for i in range(len(model_names), n_models)]
    artists: list[Artist] = []
    if len(items) == 1:
        bars = ax.bar(range(n_models), items[0][1], color="#4a7fb5")
        ax.set_xticks(range(n_models))
        ax.set_xticklabels(names[:n_models], rotation=30, ha="right", fontsize=8)
        artists.extend(bars)
    else:
        xs = list(range(len(items)))
        for m in range(n_models):
            (line,) = ax.plot(xs, [vals[m] for _, vals in items], marker="o", markersize=3, linewidth=1.2,
                              label=names[m])
            artists.append(line)
        step = max(1, -(-len(items) // _MAX_LABELS))
        ax.set_xticks(xs[::step])
        ax.set_xticklabels([_short(items[i][0]) for i in xs[::step]], rotation=60, ha="right", fontsize=7)
        ax.legend(fontsize=7, loc="best")
    ax.set_ylabel("λ")
    ax.set_ylim(min(0.0, *(min(v) for _, v in items)) - 0.05, max(1.0, *(max(v) for _, v in items)) + 0.05)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(title)
    return artists
