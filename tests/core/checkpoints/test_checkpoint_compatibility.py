"""A set of checkpoints is compared from headers: missing keys, shape and dtype differences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import check_compatibility, open_checkpoint
from tests.core.checkpoints.conftest import tiny_state_dict, write_safetensors


def open_all(tmp_path: Path, **tensor_sets: dict[str, torch.Tensor]):
    return [open_checkpoint(write_safetensors(tmp_path / f"{n}.safetensors", sd)) for n, sd in tensor_sets.items()]


def test_identical_architectures_are_ok(tmp_path: Path) -> None:
    cks = open_all(tmp_path, a=tiny_state_dict(0), b=tiny_state_dict(1))
    report = check_compatibility(cks)
    assert report.ok
    assert report.common_keys == report.all_keys and len(report.all_keys) == 11
    assert report.missing == {"a.safetensors": [], "b.safetensors": []}
    assert report.issues_for("a.safetensors") == []
    assert "compatible" in report.lines()[0]


def test_a_missing_key_makes_it_not_ok_and_is_named_for_that_model(tmp_path: Path) -> None:
    full = tiny_state_dict()
    partial = {k: v for k, v in full.items() if k != "head.bias"}
    report = check_compatibility(open_all(tmp_path, full=full, partial=partial), names=["base", "tuned"])
    assert not report.ok
    assert report.missing == {"base": [], "tuned": ["head.bias"]}
    assert report.issues_for("tuned") == ["lacks 1 tensor the others have: 'head.bias'"]
    assert report.issues_for("base") == ["has 1 tensor some others lack: 'head.bias'"]
    assert "head.bias" not in report.common_keys and "head.bias" in report.all_keys


def test_shape_mismatches_name_the_key_and_both_shapes(tmp_path: Path) -> None:
    report = check_compatibility(open_all(tmp_path, a=tiny_state_dict(width=4), b=tiny_state_dict(width=6)))
    assert not report.ok
    assert report.shape_mismatches["head.weight"] == {"a.safetensors": (3, 4), "b.safetensors": (3, 6)}
    issue = report.issues_for("a.safetensors")[0]
    assert issue.startswith("shape differs for 10 tensors: 'embed.weight' is (5, 4) here but (5, 6) elsewhere")
    assert issue.endswith("… and 5 more")  # head.bias (3,) is the same in both
    assert any("shape of 'head.weight': a.safetensors (3, 4), b.safetensors (3, 6)" in line for line in report.lines())


def test_dtype_differences_are_reported_but_still_ok(tmp_path: Path) -> None:
    half = {k: v.half() for k, v in tiny_state_dict().items()}
    report = check_compatibility(open_all(tmp_path, a=tiny_state_dict(), b=half))
    assert report.ok
    assert report.dtype_mismatches["head.bias"] == {"a.safetensors": "float32", "b.safetensors": "float16"}
    assert "dtype differs for 11 tensors" in report.issues_for("b.safetensors")[0]


def test_equal_names_are_made_unique(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = open_checkpoint(write_safetensors(tmp_path / "x" / "model.safetensors", tiny_state_dict()))
    b = open_checkpoint(write_safetensors(tmp_path / "y" / "model.safetensors", tiny_state_dict()))
    report = check_compatibility([a, b])
    assert report.model_names == ["model.safetensors", "model.safetensors (2)"]


def test_long_lists_are_capped_in_tooltips(tmp_path: Path) -> None:
    many = {f"w{i:02d}": torch.zeros(1) for i in range(12)}
    report = check_compatibility(open_all(tmp_path, a=many, b={"w00": torch.zeros(1)}))
    assert report.issues_for("b.safetensors") == [
        "lacks 11 tensors the others have: 'w01', 'w02', 'w03', 'w04', 'w05' … and 6 more"
    ]


def test_all_keys_keep_first_seen_order_across_models(tmp_path: Path) -> None:
    report = check_compatibility(open_all(tmp_path, a={"b": torch.zeros(1), "c": torch.zeros(1)},
                                          b={"a": torch.zeros(1), "c": torch.zeros(1)}))
    assert report.all_keys == ["b", "c", "a"]
    assert report.common_keys == ["c"]


def test_the_report_converts_to_json(tmp_path: Path) -> None:
    report = check_compatibility(open_all(tmp_path, a=tiny_state_dict(width=4), b=tiny_state_dict(width=6)))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["shape_mismatches"]["head.weight"]["b.safetensors"] == [3, 6]


def test_mismatched_names_length_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        check_compatibility(open_all(tmp_path, a=tiny_state_dict()), names=["x", "y"])


def test_asking_about_an_unknown_model_raises_key_error(tmp_path: Path) -> None:
    report = check_compatibility(open_all(tmp_path, a=tiny_state_dict()))
    with pytest.raises(KeyError):
        report.issues_for("nobody")
