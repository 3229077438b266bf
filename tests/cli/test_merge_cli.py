"""The command line: quick merges, recipes, methods, inspect, failures with one-line reasons."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from merge_studio.cli.main import main


@pytest.fixture
def two_models(tmp_path):
    paths = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        state = {"fc.weight": torch.randn(6, 4, generator=g), "fc.bias": torch.randn(6, generator=g)}
        path = tmp_path / f"m{i}.safetensors"
        save_file(state, str(path))
        paths.append(path)
    return paths


def test_quick_merge_writes_the_interpolation(two_models, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    code = main(["merge", "--method", "lerp", str(two_models[0]), str(two_models[1]), "--param", "t=0.25", "-o", str(out), "-q"])
    assert code == 0
    a, b, m = load_file(two_models[0]), load_file(two_models[1]), load_file(out)
    torch.testing.assert_close(m["fc.weight"], 0.75 * a["fc.weight"] + 0.25 * b["fc.weight"])
    assert "wrote" in capsys.readouterr().out


def test_saved_recipe_reruns_to_identical_tensors(two_models, tmp_path):
    first, second, recipe = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "r.yaml"
    assert main(["merge", "--method", "weighted_average", *map(str, two_models), "--model-param", "weight=0.2,0.8",
                 "-o", str(first), "--save-recipe", str(recipe), "-q"]) == 0
    assert yaml.safe_load(recipe.read_text())["models"][1]["params"] == {"weight": 0.8}
    assert main(["merge", str(recipe), "-o", str(second), "-q"]) == 0
    x, y = load_file(first), load_file(second)
    assert all(torch.equal(x[k], y[k]) for k in x)


def test_bad_parameter_exits_non_zero_with_one_line(two_models, tmp_path, capsys):
    code = main(["merge", "--method", "lerp", *map(str, two_models), "--param", "t=7", "-o", str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "params.t" in err[0] and "less than or equal to 1" in err[0]
    assert not (tmp_path / "o.safetensors").exists()


def test_methods_list_names_every_required_method(capsys):
    assert main(["methods", "list", "--json"]) == 0
    names = {m["name"] for m in json.loads(capsys.readouterr().out)}
    assert {"simple_average", "weighted_average", "lerp"} <= names


def test_methods_describe_shows_parameters_and_bounds(capsys):
    assert main(["methods", "describe", "lerp"]) == 0
    out = capsys.readouterr().out
    assert "t (float, default 0.5, 0.0 ≤ x ≤ 1.0)" in out


def test_inspect_json_reports_counts_and_dtypes(two_models, capsys):
    assert main(["inspect", str(two_models[0]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ck = doc["checkpoints"][0]
    assert ck["tensor_count"] == 2 and ck["parameter_count"] == 30 and ck["dtypes"] == {"float32": 2}


def test_inspect_of_a_corrupt_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert main(["inspect", str(bad)]) == 1
    assert "bad.safetensors" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "merge_studio", "methods", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "simple_average" in proc.stdout
