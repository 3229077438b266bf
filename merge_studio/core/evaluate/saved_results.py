"""Barrier curves, evaluation tables and the alignment report kept next to a recipe, so reopening it shows
them without recomputing.

They live in a sidecar (``merge.yaml`` → ``merge.results.json``), not in the recipe,
so recipes stay what mergekit export and older versions read. Each entry records
the files it was computed from (path, size, modification time); results whose
inputs changed since are still returned, but marked stale, and the window says so
instead of presenting them as current.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from merge_studio.core.evaluate.barrier import BarrierReport
from merge_studio.core.evaluate.curves import BarrierCurve
from merge_studio.core.evaluate.loop import EvalResult, ModelScores
from merge_studio.errors import OutputError

FORMAT = "merge_studio.results/1"
MAX_BYTES = 64_000_000


def results_path(recipe_path: str | Path) -> Path:
    """Where a recipe's results are kept: beside it, ``NAME.results.json``."""
    p = Path(recipe_path)
    return p.with_name(f"{p.stem}.results.json")


def fingerprint(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Path, size and modification time of each input (None for one that is missing)."""
    out = []
    for path in paths:
        p = Path(path).expanduser().absolute()
        try:
            st = p.stat()
            out.append({"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        except OSError:
            out.append({"path": str(p), "size": None, "mtime_ns": None})
    return out


@dataclass
class SavedResults:
    """What was kept: a barrier report, evaluation scores, and whether their inputs changed since."""

    barrier: BarrierReport | None = None
    scores: ModelScores | None = None
    alignment: dict[str, Any] | None = None  # the Permutations tab's report (groups, permutations, agreement)
    stale: list[str] = field(default_factory=list)  # the inputs that changed (or vanished) since

    @property
    def empty(self) -> bool:
        return self.barrier is None and self.scores is None and self.alignment is None


# --- to and from JSON -----------------------------------------------------------------------
def _array(values: Iterable[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def barrier_from_dict(data: Mapping[str, Any]) -> BarrierReport:
    """Rebuild a :class:`BarrierReport` from :meth:`BarrierReport.to_dict`."""
    curves = tuple(
        BarrierCurve(
            label=str(c["label"]),
            lambdas=_array(c["lambdas"]),
            losses={s: _array(v) for s, v in c["loss"].items()},
            accuracies={s: _array(v) for s, v in c.get("accuracy", {}).items()},
            reset_bn=bool(c.get("reset_bn", False)),
            anchors=tuple(c.get("anchors", ("A", "B"))),
            positions=tuple(float(x) for x in c.get("anchor_positions", ())),
            anchor_note=str(c.get("anchor_note", "")),
        )
        for c in data["curves"]
    )
    return BarrierReport(
        curves=curves, task=str(data.get("task", "classification")), data=str(data.get("data", "")),
        steps=int(data.get("steps", 0)), splits=tuple(data.get("splits", ("train", "test"))),
        model_names=tuple(data.get("models", ("A", "B"))), extra=dict(data.get("extra", {})),
    )


def scores_from_dict(data: Mapping[str, Any]) -> ModelScores:
    """Rebuild :class:`ModelScores` from :meth:`ModelScores.to_json`."""
    models = list(data["models"])
    splits = [k for k in models[0] if k != "name"] if models else []
    results = {s: tuple(EvalResult(**m[s]) for m in models) for s in splits}
    return ModelScores(tuple(str(m["name"]) for m in models), results, task=str(data.get("task", "classification")))


# --- the sidecar file ----------------------------------------------------------------------
def save_results(
    recipe_path: str | Path,
    inputs: Iterable[str | Path],
    *,
    barrier: BarrierReport | None = None,
    scores: ModelScores | None = None,
    alignment: Mapping[str, Any] | None = None,
) -> Path | None:
    """Write the sidecar (temp file, then rename); nothing to keep removes an old one. Returns its path."""
    target = results_path(recipe_path)
    if barrier is None and scores is None and alignment is None:
        target.unlink(missing_ok=True)
        return None
    payload = {
        "format": FORMAT,
        "inputs": fingerprint(inputs),
        **({"barrier": json.loads(barrier.to_json(indent=None))} if barrier is not None else {}),
        **({"scores": scores.to_json()} if scores is not None else {}),
        **({"alignment": dict(alignment)} if alignment is not None else {}),
    }
    text = json.dumps(payload, indent=1, allow_nan=False, default=_plain)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(type(value).__name__)


def load_results(recipe_path: str | Path) -> SavedResults:
    """The results kept beside a recipe; an absent, damaged or foreign sidecar gives empty results."""
    target = results_path(recipe_path)
    try:
        if not target.is_file() or target.stat().st_size > MAX_BYTES:
            return SavedResults()
        data = json.loads(target.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return SavedResults()
        saved = [dict(i) for i in data.get("inputs", [])]
        now = fingerprint(i["path"] for i in saved)
        stale = [Path(a["path"]).name for a, b in zip(saved, now, strict=True) if a != b]
        return SavedResults(
            barrier=barrier_from_dict(data["barrier"]) if "barrier" in data else None,
            scores=scores_from_dict(data["scores"]) if "scores" in data else None,
            alignment=dict(data["alignment"]) if isinstance(data.get("alignment"), dict) else None,
            stale=stale,
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return SavedResults()
