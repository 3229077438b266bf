"""Every merge from the command line is recorded; `merge-studio history` lists and shows them."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from merge_studio.cli.main import main
from merge_studio.core.history import add_evaluation, load_history


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def two_models(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"seed{i}.safetensors"
        save_file({"fc.weight": torch.randn(6, 4, generator=torch.Generator().manual_seed(i))}, str(path))
        paths.append(path)
    return paths


def test_a_cli_merge_is_listed_by_history_newest_first(two_models, tmp_path, capsys):
    for name in ("first", "second"):
        out = tmp_path / f"{name}.safetensors"
        assert main(["merge", "--method", "lerp", *map(str, two_models), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "method" in lines[0] and "status" in lines[0]
    assert "second.safetensors" in lines[1] and "first.safetensors" in lines[2]
    assert "lerp" in lines[1] and "seed0.safetensors, seed1.safetensors" in lines[1] and lines[1].endswith("ok")


def test_the_record_holds_the_inputs_hashes_the_output_and_the_recipe(two_models, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["merge", "--method", "lerp", *map(str, two_models), "--param", "t=0.3", "-o", str(out), "-q"]) == 0
    (record,) = load_history()
    assert record.status == "ok" and record.outputs == [str(out)] and record.tensors == 1
    assert [m["name"] for m in record.models] == ["seed0.safetensors", "seed1.safetensors"]
    assert all(len(m["sha256"]) == 64 and m["size"] > 0 for m in record.models)
    assert record.load_recipe().params == {"t": 0.3}
    capsys.readouterr()
    assert main(["history", "show", "1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["method"] == "lerp" and shown["output"] == str(out)


def test_a_failed_merge_is_recorded_as_failed(two_models, tmp_path):
    bad = tmp_path / "bad.safetensors"
    save_file({"other": torch.zeros(3)}, str(bad))
    assert main(["merge", "--method", "lerp", str(two_models[0]), str(bad), "-o", str(tmp_path / "x.safetensors"), "-q"]) == 1
    (record,) = load_history()
    assert record.status == "failed" and record.error


def test_show_with_a_number_out_of_range_says_how_many_there_are(capsys):
    assert main(["history", "show", "4"]) == 1
    assert "0 recorded" in capsys.readouterr().err


def test_evaluation_results_attach_to_the_merge_that_wrote_the_file(two_models, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["merge", "--method", "lerp", *map(str, two_models), "-o", str(out), "-q"]) == 0
    assert add_evaluation(out, {"accuracy": 0.91})
    capsys.readouterr()
    assert main(["history", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["evaluation"] == {"accuracy": 0.91}


def test_evaluating_a_merged_model_adds_its_scores_to_the_merge_record(tmp_path, capsys):
    from merge_studio.core.arch import arch_metadata, build_module

    arch = "zoo:mlp?hidden=16"
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"mlp{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in build_module(arch).state_dict().items()}, str(path),
                  metadata=arch_metadata(arch))
        paths.append(str(path))
    out = tmp_path / "avg.safetensors"
    assert main(["merge", "--method", "simple_average", *paths, "-o", str(out), "-q"]) == 0
    assert main(["evaluate", *paths, str(out), "--max-examples", "40", "--splits", "test", "--quiet", "--threads", "1"]) == 0
    (record,) = load_history()
    assert set(record.evaluation) == {"loss (test, digits)", "accuracy (test, digits)"}
    assert 0.0 <= record.evaluation["accuracy (test, digits)"] <= 1.0
