"""Bar charts of per-model scores, so a user sees at once whether a merge beats its parents."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
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
        colours = [HIGHLIGHT if (highlight is not None and n == highlight and split in ("", "test")) else base for n in names]
        bars = ax.bar(x + (g - (n_groups - 1) / 2) * width, heights, width * 0.92, color=colours,
                      label=split or metric, edgecolor="white", linewidth=0.5)
        artists.append(bars)
        fmt = (lambda v: f"{100 * v:.1f}%") if metric == "accuracy" else (lambda v: f"{v:.3g}")
        artists += ax.bar_label(bars, labels=["" if np.isnan(h) else fmt(h) for h in heights], fontsize=7, padding=2)
    ax.set_xticks(list(x), list(names), rotation=20 if max((len(n) for n in names), default=0) > 10 else 0, ha="right" if max((len(n) for n in names), default=0) > 10 else "center")
    ax.set_ylabel({"loss": "loss (lower is better)", "accuracy": "accuracy (higher is better)",
                   "perplexity": "perplexity (lower is better)"}[metric])
    if metric == "accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_ylim(0, 1.08)
    else:
        ax.margins(y=0.15)
    ax.grid(True, axis="y", alpha=0.25)
    ax.set_axisbelow(True)
    if n_groups > 1:
        artists.append(ax.legend(fontsize=8, loc="best"))
    if title:
        ax.set_title(title)
    return artists
