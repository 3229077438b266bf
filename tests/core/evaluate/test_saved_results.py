"""Results kept beside a recipe come back equal, say when their inputs changed, and a damaged file is ignored."""

from __future__ import annotations

import os

import numpy as np

from merge_studio.core.evaluate.barrier import BarrierReport
from merge_studio.core.evaluate.curves import BarrierCurve
from merge_studio.core.evaluate.loop import EvalResult, ModelScores
from merge_studio.core.evaluate.saved_results import load_results, results_path, save_results


def _report() -> BarrierReport:
    lam = np.linspace(0, 1, 5)
    curve = BarrierCurve("via merged", lam, {"test": np.array([0.1, 0.4, np.nan, 0.3, 0.2])},
                         {"test": np.array([0.9, 0.7, 0.6, 0.8, 0.95])}, anchors=("A", "merged", "B"),
                         positions=(0.0, 0.3, 1.0), anchor_note="lerp t = 0.3")
    return BarrierReport((curve,), data="digits", steps=5, splits=("test",), model_names=("a", "b"))


def test_kept_results_come_back_equal_and_fresh(tmp_path):
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"x")
    scores = ModelScores(("a", "b"), {"test": (EvalResult(0.5, 0.9, n=10), EvalResult(0.4, None, n=10))})
    written = save_results(tmp_path / "r.yaml", [a], barrier=_report(), scores=scores)
    assert written == results_path(tmp_path / "r.yaml") == tmp_path / "r.results.json"
    saved = load_results(tmp_path / "r.yaml")
    assert not saved.stale and saved.scores == scores
    curve = saved.barrier.curve("via merged")
    assert curve.anchor_positions == (0.0, 0.3, 1.0) and curve.anchor_note == "lerp t = 0.3"
    np.testing.assert_array_equal(curve.losses["test"], _report().curves[0].losses["test"])  # NaN kept as NaN
    os.utime(a, ns=(5, 5))
    assert load_results(tmp_path / "r.yaml").stale == ["a.safetensors"]


def test_a_damaged_or_foreign_sidecar_is_ignored(tmp_path):
    for text in ("{", "[]", '{"format": "other"}', "[" * 100_000 + "]" * 100_000):
        results_path(tmp_path / "r.yaml").write_text(text)
        assert load_results(tmp_path / "r.yaml").empty
