"""Evaluation jobs that start from files, as the Barrier tab and the CLI run them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.evaluate.jobs import BarrierRequest, evaluate_paths
from merge_studio.core.progress import drive
from merge_studio.errors import ArchitectureError


def _save(path, module) -> str:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return str(path)


def test_a_checkpoint_of_unknown_architecture_asks_for_one(tmp_path):
    torch.manual_seed(0)
    odd = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    a, b = _save(tmp_path / "a.safetensors", odd), _save(tmp_path / "b.safetensors", odd)
    with pytest.raises(ArchitectureError, match="a.safetensors") as info:
        drive(BarrierRequest(a, b, steps=2).job())
    assert "--arch" in info.value.hint


def test_zoo_checkpoints_without_metadata_are_recognised_by_their_shapes(tmp_path):
    from merge_studio.core.arch import build_module

    torch.manual_seed(0)
    paths = [_save(tmp_path / f"m{i}.safetensors", build_module("zoo:mlp?hidden=16")) for i in range(2)]
    scores = evaluate_paths(paths, data={"source": "digits", "max_examples": 30}, splits=("test",))
    assert scores.names == ("m0", "m1")
    assert all(r.n == 30 for r in scores.results["test"])


def test_the_barrier_job_reports_the_architecture_it_used(tmp_path):
    from merge_studio.core.arch import arch_metadata, build_module

    spec = "zoo:mlp?hidden=16"
    paths = []
    for i in range(2):
        torch.manual_seed(i)
        path = tmp_path / f"m{i}.safetensors"
        save_file({k: v.contiguous() for k, v in build_module(spec).state_dict().items()}, str(path), metadata=arch_metadata(spec))
        paths.append(str(path))
    request = BarrierRequest(*paths, steps=2, splits=("test",), data={"source": "digits", "max_examples": 20})
    report = drive(request.job())
    assert report.extra["arch"] == spec and report.model_names == ("m0", "m1")
    assert [c.label for c in report.curves] == ["naive"]

