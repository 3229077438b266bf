"""Interpolation curves and their barriers, as plain frozen values the plots and tables read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def barrier_height(lambdas: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> float:
    """max over λ of ``values(λ) − ((1−λ)·values(0) + λ·values(1))``.

    The straight line between the endpoint values is what a perfectly connected
    pair of models would give; the barrier is how far the curve rises above it.
    It is 0 when the curve never does (the endpoints count, so it is never negative).
    For accuracy pass the negated accuracies to get the largest drop.
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    val = np.asarray(values, dtype=np.float64)
    if lam.shape != val.shape or lam.size < 2:
        raise ValueError("barrier_height needs matching lambdas and values, at least two of each")
    lo, hi = lam[0], lam[-1]
    t = (lam - lo) / (hi - lo) if hi != lo else np.zeros_like(lam)
    chord = (1.0 - t) * val[0] + t * val[-1]
    return float(max(0.0, np.nanmax(val - chord)))


@dataclass(frozen=True)
class BarrierPoint:
    """One evaluated point of a curve, yielded as soon as it is known."""

    curve: str
    lam: float
    split: str
    loss: float
    accuracy: float | None = None
    index: int = 0
    total: int = 0


@dataclass(frozen=True)
class BarrierCurve:
    """Losses and accuracies along one path, per split, with their barriers.

    ``lambdas`` are the path positions in [0, 1]; ``losses[split]`` and
    ``accuracies[split]`` are arrays of the same length (accuracies are absent
    for regression). ``anchors`` names the models the path passes through
    (``("A", "B")`` or ``("A", "merged", "B")``), ``positions`` their λ (evenly
    spread when empty); ``anchor_note`` says how the middle one was placed
    (``"lerp t = 0.3"``, ``"α = 0.5, B aligned"``).
    """

    label: str
    lambdas: np.ndarray
    losses: Mapping[str, np.ndarray]
    accuracies: Mapping[str, np.ndarray] = field(default_factory=dict)
    reset_bn: bool = False
    anchors: tuple[str, ...] = ("A", "B")
    positions: tuple[float, ...] = ()
    anchor_note: str = ""

    @property
    def anchor_positions(self) -> tuple[float, ...]:
        """λ of each anchor: as recorded, else evenly spread (0, 0.5, 1 for three)."""
        if len(self.positions) == len(self.anchors):
            return self.positions
        n = len(self.anchors)
        return tuple(i / (n - 1) for i in range(n)) if n > 1 else (0.0,)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.losses)

    @property
    def loss_barrier(self) -> dict[str, float]:
        return {s: barrier_height(self.lambdas, v) for s, v in self.losses.items()}

    @property
    def accuracy_barrier(self) -> dict[str, float]:
        """The largest accuracy drop below the straight line between the endpoints."""
        return {s: barrier_height(self.lambdas, -v) for s, v in self.accuracies.items()}

    def to_json(self) -> dict[str, object]:
        def clean(values: np.ndarray) -> list[float | None]:
            return [None if math.isnan(v) else float(v) for v in values]

        return {
            "label": self.label,
            "anchors": list(self.anchors),
            "anchor_positions": list(self.anchor_positions),
            **({"anchor_note": self.anchor_note} if self.anchor_note else {}),
            "reset_bn": self.reset_bn,
            "lambdas": [float(x) for x in self.lambdas],
            "loss": {s: clean(v) for s, v in self.losses.items()},
            "accuracy": {s: clean(v) for s, v in self.accuracies.items()},
            "loss_barrier": self.loss_barrier,
            "accuracy_barrier": self.accuracy_barrier,
        }

    @classmethod
    def from_points(
        cls,
        label: str,
        points: Sequence[BarrierPoint],
        *,
        reset_bn: bool = False,
        anchors: tuple[str, ...] = ("A", "B"),
        positions: tuple[float, ...] = (),
        anchor_note: str = "",
    ) -> BarrierCurve:
        """Assemble a curve from its points (any order; missing values become NaN)."""
        lambdas = np.array(sorted({p.lam for p in points}), dtype=np.float64)
        where = {lam: i for i, lam in enumerate(lambdas)}
        splits = list(dict.fromkeys(p.split for p in points))
        losses = {s: np.full(len(lambdas), np.nan) for s in splits}
        accs = {s: np.full(len(lambdas), np.nan) for s in splits}
        has_acc = {s: False for s in splits}
        for p in points:
            losses[p.split][where[p.lam]] = p.loss
            if p.accuracy is not None:
                accs[p.split][where[p.lam]] = p.accuracy
                has_acc[p.split] = True
        for arr in (*losses.values(), *accs.values()):
            arr.setflags(write=False)
        return cls(
            label=label,
            lambdas=lambdas,
            losses=losses,
            accuracies={s: a for s, a in accs.items() if has_acc[s]},
            reset_bn=reset_bn,
            anchors=anchors,
            positions=tuple(float(x) for x in positions),
            anchor_note=anchor_note,
        )
