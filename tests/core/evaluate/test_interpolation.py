"""Interpolation sweeps and barriers: the numbers a barrier plot is drawn from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from merge_studio.core.evaluate.barrier import iter_barrier_comparison
from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint, barrier_height
from merge_studio.core.evaluate.interpolate import iter_interpolation, iter_path_interpolation, path_position
from merge_studio.core.evaluate.loop import evaluate
from merge_studio.core.progress import CancelToken, Progress, drive
from merge_studio.errors import Cancelled, IncompatibleCheckpointsError


def test_barrier_height_is_the_largest_rise_above_the_straight_line():
    assert barrier_height([0, 0.5, 1], [1.0, 3.0, 2.0]) == pytest.approx(1.5)
    assert barrier_height([0, 0.5, 1], [1.0, 1.0, 1.0]) == 0.0
    assert barrier_height([0, 0.5, 1], [1.0, 0.2, 1.0]) == 0.0  # a valley is no barrier


def test_barrier_of_a_model_with_itself_is_zero(two_mlps, digits_flat, make_mlp):
    a = two_mlps[0].state_dict()
    curve = drive(iter_interpolation(make_mlp(9), a, a, digits_flat, steps=5, device="cpu"))
    for split in ("train", "test"):
        assert curve.loss_barrier[split] == pytest.approx(0.0, abs=1e-9)
        assert curve.accuracy_barrier[split] == pytest.approx(0.0, abs=1e-9)
        assert np.ptp(curve.losses[split]) == pytest.approx(0.0, abs=1e-9)


def test_barrier_between_two_points_on_a_line_of_a_linear_model_is_zero(regression):
    """MSE of a linear model is convex in its weights, so no point of a line lies above the chord."""
    torch.manual_seed(0)
    a = nn.Linear(5, 1).state_dict()
    b = {k: v + 3.0 * torch.randn_like(v) for k, v in a.items()}
    curve = drive(iter_interpolation(nn.Linear(5, 1), a, b, regression, steps=11, device="cpu"))
    assert curve.loss_barrier["test"] == pytest.approx(0.0, abs=1e-9)
    assert curve.accuracies == {}
    assert curve.losses["test"][0] != pytest.approx(curve.losses["test"][-1])


def test_sweep_endpoints_equal_the_endpoint_models_own_evaluation(two_mlps, digits_flat, make_mlp):
    a, b = two_mlps
    curve = drive(iter_interpolation(make_mlp(7), a.state_dict(), b.state_dict(), digits_flat, steps=4, device="cpu"))
    for split in ("train", "test"):
        own_a = evaluate(a, digits_flat.split(split), device="cpu", batch_size=1024)
        own_b = evaluate(b, digits_flat.split(split), device="cpu", batch_size=1024)
        assert curve.losses[split][0] == pytest.approx(own_a.loss, rel=1e-6)
        assert curve.losses[split][-1] == pytest.approx(own_b.loss, rel=1e-6)
        assert curve.accuracies[split][0] == own_a.accuracy
        assert curve.accuracies[split][-1] == own_b.accuracy


def test_independently_trained_models_show_a_positive_barrier(two_mlps, digits_flat, make_mlp):
    a, b = two_mlps
    curve = drive(iter_interpolation(make_mlp(7), a.state_dict(), b.state_dict(), digits_flat, steps=9, device="cpu"))
    assert curve.loss_barrier["test"] > 0.05
    assert curve.losses["test"][4] > max(curve.losses["test"][0], curve.losses["test"][-1])


def test_each_point_is_yielded_as_it_finishes_with_progress_per_lambda(two_mlps, digits_flat, make_mlp):
    a, b = (m.state_dict() for m in two_mlps)
    items = list(iter_interpolation(make_mlp(7), a, b, digits_flat, steps=3, splits=("test",), device="cpu"))
    kinds = [type(i).__name__ for i in items]
    assert kinds == ["BarrierPoint", "Progress"] * 3
    assert [p.lam for p in items if isinstance(p, BarrierPoint)] == [0.0, 0.5, 1.0]
    assert [p.done for p in items if isinstance(p, Progress)] == [1, 2, 3]


def test_a_sweep_stops_when_cancelled(two_mlps, digits_flat, make_mlp):
    a, b = (m.state_dict() for m in two_mlps)
    cancel = CancelToken()
    job = iter_interpolation(make_mlp(7), a, b, digits_flat, steps=25, device="cpu", cancel=cancel)
    next(job)
    cancel.cancel()
    with pytest.raises(Cancelled):
        for _ in job:
            pass


def test_path_through_a_merged_model_passes_through_it_at_the_middle(two_mlps, digits_flat, make_mlp):
    a, b = (m.state_dict() for m in two_mlps)
    merged = {k: (a[k] + b[k]) / 2 for k in a}
    curve = drive(iter_path_interpolation(make_mlp(3), [a, merged, b], digits_flat, steps=5, splits=("test",), device="cpu"))
    straight = drive(iter_interpolation(make_mlp(3), a, b, digits_flat, steps=5, splits=("test",), device="cpu"))
    assert curve.anchors == ("A", "M1", "B")
    assert curve.losses["test"][2] == pytest.approx(straight.losses["test"][2], rel=1e-5)
    assert path_position(0.25, 3) == (0, 0.5)
    assert path_position(1.0, 3) == (1, 1.0)


def test_saving_interpolated_models_writes_one_loadable_file_per_point(two_mlps, digits_flat, make_mlp, tmp_path):
    from safetensors.torch import load_file

    a, b = (m.state_dict() for m in two_mlps)
    drive(iter_interpolation(make_mlp(7), a, b, digits_flat, steps=3, splits=("test",), device="cpu", save_dir=tmp_path / "lerp"))
    files = sorted((tmp_path / "lerp").glob("*.safetensors"))
    assert len(files) == 3
    middle = load_file(str(files[1]))
    assert torch.allclose(middle["0.weight"], (a["0.weight"] + b["0.weight"]) / 2, atol=1e-6)


def test_a_state_dict_that_does_not_fit_the_architecture_names_the_tensor(two_mlps, digits_flat, make_mlp):
    a = two_mlps[0].state_dict()
    wrong = make_mlp(1, hidden=8).state_dict()
    with pytest.raises(IncompatibleCheckpointsError, match="0.weight"):
        drive(iter_interpolation(make_mlp(7), a, wrong, digits_flat, steps=3, device="cpu"))


def test_comparison_for_a_batchnorm_model_adds_the_bn_reset_curve(digits_image, make_bn_cnn):
    a, b = make_bn_cnn(0).state_dict(), make_bn_cnn(1).state_dict()
    points: list[BarrierPoint] = []
    report = drive(
        iter_barrier_comparison(make_bn_cnn(2), a, b, digits_image, steps=3, splits=("test",), device="cpu"),
        on_partial=points.append,
    )
    assert [c.label for c in report.curves] == ["naive", "BN reset"]
    assert report.curve("BN reset").reset_bn and not report.curve("naive").reset_bn
    assert len(points) == 6
    assert report.curve("naive").losses["test"][1] != pytest.approx(report.curve("BN reset").losses["test"][1])


def test_comparison_draws_aligned_and_merged_curves_when_given(two_mlps, digits_flat, make_mlp):
    a, b = (m.state_dict() for m in two_mlps)
    merged = {k: (a[k] + b[k]) / 2 for k in a}
    progress: list[Progress] = []
    report = drive(
        iter_barrier_comparison(make_mlp(3), a, b, digits_flat, aligned_b=b, merged=merged, steps=3, device="cpu"),
        on_progress=progress.append,
    )
    assert [c.label for c in report.curves] == ["naive", "aligned", "aligned + REPAIR", "via merged"]
    assert [p.done for p in progress] == list(range(1, 13)) and progress[-1].total == 12
    assert report.curve("via merged").anchors == ("A", "merged", "B")
    assert report.curve("aligned + REPAIR").reset_bn  # each point's unit statistics were reset


def test_repair_lowers_the_aligned_curve_of_two_trained_mlps(two_mlps, digits_flat, make_mlp):
    a, b = (m.state_dict() for m in two_mlps)
    report = drive(iter_barrier_comparison(make_mlp(3), a, b, digits_flat, curves=["aligned", "repaired"], aligned_b=b,
                                           steps=3, splits=("test",), device="cpu"))
    plain, repaired = (report.curve(label).losses["test"][1] for label in ("aligned", "aligned + REPAIR"))
    assert repaired < plain  # the midpoint's collapsed unit statistics are restored


def test_report_saves_json_and_csv_with_every_point(two_mlps, digits_flat, make_mlp, tmp_path):
    import csv
    import json

    a, b = (m.state_dict() for m in two_mlps)
    report = drive(iter_barrier_comparison(make_mlp(3), a, b, digits_flat, steps=3, device="cpu"))
    report.save(json_path=tmp_path / "r.json", csv_path=tmp_path / "r.csv")
    loaded = json.loads((tmp_path / "r.json").read_text())
    assert loaded["summary"][1]["split"] == "test"
    assert loaded["summary"][1]["loss_barrier"] == pytest.approx(report.curves[0].loss_barrier["test"])
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 6 and {r["split"] for r in rows} == {"train", "test"}


def test_a_curve_rebuilt_from_points_keeps_its_numbers():
    points = [BarrierPoint("c", lam, "test", loss, acc) for lam, loss, acc in [(1.0, 1.0, 0.9), (0.0, 1.0, 0.9), (0.5, 2.0, 0.5)]]
    curve = BarrierCurve.from_points("c", points)
    assert list(curve.lambdas) == [0.0, 0.5, 1.0]
    assert curve.loss_barrier["test"] == pytest.approx(1.0)
    assert curve.accuracy_barrier["test"] == pytest.approx(0.4)

