"""A coefficient search's trials: the objective against the trial, or two objectives and their Pareto front."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes

_POINT = "#4a7fb5"
_LABEL_WIDTH = 26


def _label(name: str) -> str:
    """An axis label that fits beside a narrow plot: long names break before their parenthesis."""
    return name.replace(" (", "\n(", 1) if len(name) > _LABEL_WIDTH else name
_BEST = "#d9622b"


def pareto_mask(values: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Which points no other point beats on every objective (ties do not beat)."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    scored = [[s * v for s, v in zip(signs, vals, strict=True)] for vals in values]

    def beats(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))

    return [not any(beats(other, mine) for other in scored) for mine in scored]


def plot_search(
    ax: Axes,
    numbers: Sequence[int],
    values: Sequence[Sequence[float]],
    directions: Sequence[str],
    names: Sequence[str],
    *,
    selected: int | None = None,
) -> None:
    """Draw every finished trial on ``ax`` (cleared first); ``selected`` rings one trial's point."""
    ax.clear()
    if not values:
        ax.text(0.5, 0.5, "no finished trial yet", ha="center", va="center", transform=ax.transAxes, color="#777777")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if len(directions) >= 2:
        xs, ys = [v[0] for v in values], [v[1] for v in values]
        front = pareto_mask([v[:2] for v in values], directions[:2])
        ax.scatter(xs, ys, s=18, color=_POINT, alpha=0.6, label="trials")
        pts = sorted((x, y) for x, y, f in zip(xs, ys, front, strict=True) if f)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=_BEST, markersize=5, linewidth=1.2,
                label="Pareto front")
        ax.set_xlabel(_label(names[0]))
        ax.set_ylabel(_label(names[1]))
        pick = [i for i, n in enumerate(numbers) if n == selected]
        if pick:
            ax.scatter([xs[pick[0]]], [ys[pick[0]]], s=120, facecolors="none", edgecolors="black", linewidths=1.4)
    else:
        ys = [v[0] for v in values]
        ax.scatter(numbers, ys, s=18, color=_POINT, alpha=0.7, label="trials")
        better = max if directions[0] == "maximize" else min
        order = sorted(range(len(numbers)), key=lambda i: numbers[i])
        best, run = [], None
        for i in order:
            run = ys[i] if run is None else better(run, ys[i])
            best.append(run)
        ax.step([numbers[i] for i in order], best, where="post", color=_BEST, linewidth=1.5, label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(_label(names[0]))
        pick = [i for i, n in enumerate(numbers) if n == selected]
        if pick:
            ax.scatter([numbers[pick[0]]], [ys[pick[0]]], s=120, facecolors="none", edgecolors="black", linewidths=1.4)
    ax.legend(fontsize=8, loc="best")
    ax.grid(color="#e4e4e4", linewidth=0.6)
    ax.set_axisbelow(True)
