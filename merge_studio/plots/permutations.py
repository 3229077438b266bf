"""Pictures of a re-basin alignment, drawn on a matplotlib Axes (OO API, no pyplot).

The permutation as a matrix, a group's similarity matrix before and after its
columns are reordered (the diagonal appears when the match is good), the
objective after each sweep, and the share of units each group moved, with the
layers that could not be permuted shown apart. The GUI's Permutations tab and
any script draw the same pictures; :func:`save_axes_figure` writes one to disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import PercentFormatter

MOVED_COLOUR = "#0072B2"  # Okabe–Ito blue, as the "aligned" barrier curve
STILL_COLOUR = "#9aa3ad"
BLOCKED_COLOUR = "#D55E00"  # Okabe–Ito vermillion: parts that could not be permuted
MAX_TICK_LABELS = 40


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def permutation_matrix(perm: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    """P with P[i, perm[i]] = 1: row i (aligned unit) takes column perm[i] (B's original unit)."""
    p = _as_numpy(perm).astype(int)
    out = np.zeros((len(p), len(p)), dtype=np.float32)
    out[np.arange(len(p)), p] = 1.0
    return out


MAX_PIXELS = 192  # a picture's side at most: the axes are smaller on screen, and resampling runs holding the GIL


def _block_reduce(values: np.ndarray, reduce: str) -> np.ndarray:
    """Shrink an n × n array to at most MAX_PIXELS a side by ``reduce`` ("mean" or "any") over square blocks.

    Drawing a 512 × 512 image made the render thread hold the interpreter for up to 100 ms
    (matplotlib resamples in C++ without releasing it), which stalled the window.
    """
    k = -(-max(values.shape[:2]) // MAX_PIXELS)
    if k <= 1:
        return values
    rows, cols = -(-values.shape[0] // k) * k, -(-values.shape[1] // k) * k
    fill = False if reduce == "any" else np.nan
    padded = np.full((rows, cols, *values.shape[2:]), fill, dtype=values.dtype)
    padded[: values.shape[0], : values.shape[1]] = values
    blocks = padded.reshape(rows // k, k, cols // k, k, *values.shape[2:])
    if reduce == "any":
        return blocks.any(axis=(1, 3))
    return np.nanmean(blocks, axis=(1, 3))


def plot_permutation_matrix(ax: Axes, perm: Sequence[int] | np.ndarray | torch.Tensor, *, title: str | None = None) -> Axes:
    """The permutation as a matrix: a square per unit, blue where it moved, grey where it stayed."""
    from matplotlib.colors import to_rgba

    p = _as_numpy(perm).astype(int)
    n = len(p)
    stay = p == np.arange(n)
    rows = np.arange(n)
    moved_at, kept_at = np.zeros((n, n), dtype=bool), np.zeros((n, n), dtype=bool)
    moved_at[rows[~stay], p[~stay]] = True
    kept_at[rows[stay], p[stay]] = True
    moved_at, kept_at = _block_reduce(moved_at, "any"), _block_reduce(kept_at, "any")
    image = np.ones((*moved_at.shape, 4), dtype=np.float32)
    image[kept_at] = to_rgba(STILL_COLOUR)
    image[moved_at] = to_rgba(MOVED_COLOUR)
    ax.imshow(image, interpolation="nearest", aspect="equal", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    moved = float((~stay).mean()) if n else 0.0
    ax.set_title(title or f"permutation ({moved:.0%} of {n} units moved)", fontsize=9)
    ax.set_xlabel("unit of B before alignment")
    ax.set_ylabel("unit of aligned B (= unit of A)")
    ax.legend(handles=[Patch(color=MOVED_COLOUR, label="moved"), Patch(color=STILL_COLOUR, label="kept in place")],
              loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=7, frameon=False)
    return ax


def centred(sim: np.ndarray) -> np.ndarray:
    """Remove row and column means: the assignment is unchanged, and the matches stand out."""
    s = np.asarray(sim, dtype=np.float64)
    if s.size == 0:
        return s
    return s - s.mean(axis=1, keepdims=True) - s.mean(axis=0, keepdims=True) + s.mean()


def plot_similarity(
    ax: Axes,
    sim: np.ndarray | torch.Tensor,
    perm: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    *,
    title: str | None = None,
    colorbar: bool = True,
    centre: bool = True,
) -> Axes:
    """Similarity of A's units (rows) with B's units (columns); with ``perm``, B's columns reordered.

    ``centre`` removes row and column means first (see :func:`centred`): weight
    similarities often share a large common offset that hides the structure.
    """
    s = _as_numpy(sim).astype(np.float64)
    if perm is not None:
        s = s[:, _as_numpy(perm).astype(int)]
    if centre:
        s = centred(s)
    n = s.shape[0]
    on_diag = float(np.mean(s.argmax(axis=1) == np.arange(n))) if n and s.shape[1] else 0.0
    shown = _block_reduce(s, "mean") if s.size else s
    limit = float(np.nanmax(np.abs(shown))) if shown.size else 1.0
    image = ax.imshow(shown, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest", aspect="equal",
                      extent=(-0.5, s.shape[1] - 0.5, n - 0.5, -0.5) if s.size else None)
    if title is None:
        title = f"{'after' if perm is not None else 'before'} reordering ({on_diag:.0%} of rows peak on the diagonal)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("unit of B" + (" (aligned order)" if perm is not None else " (original order)"))
    ax.set_ylabel("unit of A")
    if colorbar and ax.figure is not None:
        ax.figure.colorbar(image, ax=ax, shrink=0.8, label="similarity Σ⟨w_A, w_B⟩" + (" (centred)" if centre else ""))
    return ax


def plot_objective(ax: Axes, objective_per_sweep: Sequence[float], *, initial: float | None = None) -> Axes:
    """Weight-matching objective Σ⟨W_A, π(W_B)⟩ after each sweep (sweep 0: before any permutation)."""
    values = [v for v in objective_per_sweep if v is not None]
    xs = list(range(1, len(values) + 1))
    if initial is not None:
        xs, values = [0, *xs], [initial, *values]
    ax.plot(xs, values, marker="o", color=MOVED_COLOUR, markersize=4)
    ax.set_xlabel("sweep")
    ax.set_ylabel("objective Σ⟨W_A, π(W_B)⟩")
    ax.set_title("convergence of weight matching", fontsize=9)
    ax.grid(True, alpha=0.3)
    if xs:
        ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)])
    return ax


def plot_moved_fraction(ax: Axes, report: Mapping[str, Any]) -> Axes:
    """One bar per group: the share of its units that moved; unpermutable layers in a different colour."""
    groups = list(report.get("groups", []))
    labels = [f"{g['name']} ({g['size']}{', ' + str(g['n_heads']) + ' heads' if g.get('n_heads', 1) > 1 else ''})" for g in groups]
    values = [float(g.get("moved_fraction", 0.0)) for g in groups]
    colours = [MOVED_COLOUR] * len(groups)
    blocked = _blocked_layers(report)
    labels += [f"{layer} — not permutable" for layer in blocked]
    values += [1.0] * len(blocked)
    colours += [BLOCKED_COLOUR] * len(blocked)
    y = np.arange(len(labels))
    bars = ax.barh(y, values, color=colours)
    for bar, layer in zip(bars[len(groups):], blocked, strict=True):
        bar.set_alpha(0.35)
        bar.set_hatch("//")
        bar.set_label(layer)
    ax.set_yticks(y, labels if len(labels) <= MAX_TICK_LABELS else [""] * len(labels), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("units moved")
    ax.set_title("share of units permuted per group", fontsize=9)
    if blocked:  # under the figure: bars of nearly 100% reach every corner of the axes
        handles = [
            Patch(color=MOVED_COLOUR, label="permuted group"),
            Patch(facecolor=BLOCKED_COLOUR, alpha=0.35, hatch="//", label="could not be permuted"),
        ]
        ax.figure.legend(handles=handles, loc="outside lower center", fontsize=8, ncol=2, frameon=False)
    if not labels:
        ax.text(0.5, 0.5, "no permutation groups", ha="center", va="center", transform=ax.transAxes)
    return ax


def _blocked_layers(report: Mapping[str, Any]) -> list[str]:
    layers: list[str] = []
    for tensor in report.get("blocked", {}):
        layer = tensor.rsplit(".", 1)[0] if "." in tensor else tensor
        if layer not in layers:
            layers.append(layer)
    return layers


def plot_group_overview(fig: Figure, group: Mapping[str, Any], sim: np.ndarray | torch.Tensor | None) -> Figure:
    """Permutation, similarity before and after reordering, side by side, for one group."""
    axes = fig.subplots(1, 3 if sim is not None else 1, squeeze=False)[0]
    plot_permutation_matrix(axes[0], group["perm"])
    if sim is not None:
        plot_similarity(axes[1], sim, colorbar=False)
        plot_similarity(axes[2], sim, group["perm"])
    fig.suptitle(f"group {group['name']}", fontsize=10)
    return fig


def save_axes_figure(fig: Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Save a figure as PNG, SVG or PDF (by the file's suffix)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=dpi, bbox_inches="tight")
    return target
