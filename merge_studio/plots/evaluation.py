"""Bar charts of per-model scores, so a user sees at once whether a merge beats its parents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from merge_studio.core.evaluate.loop import EvalResult

SPLIT_COLOURS = {"test": "#0072B2", "train": "#9DC3E6"}
HIGHLIGHT = "#D55E00"


def plot_model_scores(
    ax: Axes,
    names: Sequence[str],
    results: Sequence[EvalResult] | Mapping[str, Sequence[EvalResult]],
    metric: Literal["loss", "accuracy", "perplexity"] = "loss",
    *,
    highlight: str | None = None,
    title: str | None = None,
) -> list[Artist]:
    """One bar per model (grouped by split when ``results`` maps split names to lists).

    ``highlight`` names a model drawn in an accent colour (the merged one); each bar
    carries its value. Models without the metric (accuracy of a regression) get no bar.
    """
    groups = dict(results) if isinstance(results, Mapping) else {"": list(results)}
    n_groups = len(groups)
    width = 0.8 / n_groups
    x = np.arange(len(names))
    artists: list[Artist] = []
    for g, (split, rows) in enumerate(groups.items()):
        if len(rows) != len(names):
            raise ValueError(f"{len(names)} names but {len(rows)} results for {split or 'the models'}")
        values = [getattr(r, metric) for r in rows]
        heights = [np.nan if v is None else float(v) for v in values]
        base = SPLIT_COLOURS.get(split, SPLIT_COLOURS["test"])
        edges = [HIGHLIGHT if (highlight is not None and n == highlight) else "white" for n in names]
        bars = ax.bar(x + (g - (n_groups - 1) / 2) * width, heights, width * 0.92, color=base,
                      label=split or metric, edgecolor=edges, linewidth=[2.0 if e == HIGHLIGHT else 0.5 for e in edges])
        artists.append(bars)
        fmt = (lambda v: f"{100 * v:.1f}%") if metric == "accuracy" else (lambda v: f"{v:.3g}")
        artists += ax.bar_label(bars, labels=["" if np.isnan(h) else fmt(h) for h in heights], fontsize=7, padding=2)
    long_names = max((len(n) for n in names), default=0) > 12
    ax.set_xticks(list(x), list(names), rotation=20 if long_names else 0, ha="right" if long_names else "center", fontsize=8)
    for tick, name in zip(ax.get_xticklabels(), names, strict=True):
        if name == highlight:
            tick.set_color(HIGHLIGHT)
            tick.set_fontweight("bold")
    ax.set_ylabel({"loss": "loss (lower is better)", "accuracy": "accuracy (higher is better)",
                   "perplexity": "perplexity (lower is better)"}[metric])
    if metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_ylim(0, 1.2)
        ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    else:
        ax.margins(y=0.25)
    ax.grid(True, axis="y", alpha=0.25)
    ax.set_axisbelow(True)
    if n_groups > 1:
        artists.append(ax.legend(fontsize=8, loc="upper left", ncols=n_groups, framealpha=0.85))
    if title:
        ax.set_title(title)
    return artists


def draw_model_scores(fig: Figure, names: Sequence[str], results: Mapping[str, Sequence[EvalResult]], *,
                      highlight: str | None = None, title: str | None = None) -> list[Axes]:
    """Loss and accuracy (or perplexity) bar charts side by side on ``fig``."""
    fig.clear()
    rows = next(iter(results.values()), [])
    metrics: list[Literal["loss", "accuracy", "perplexity"]] = ["loss"]
    if any(r.accuracy is not None for r in rows):
        metrics.append("accuracy")
    if any(r.perplexity is not None for r in rows):
        metrics.append("perplexity")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        plot_model_scores(ax, names, results, metric, highlight=highlight)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.set_layout_engine("constrained")
    return list(axes)
