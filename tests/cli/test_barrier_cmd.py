"""``merge-studio barrier`` and ``merge-studio evaluate`` from a terminal."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.cli.main import main
from merge_studio.core.arch import arch_metadata, build_module

ARCH = "zoo:mlp?hidden=16"


@pytest.fixture()
def mlp_files(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        state = build_module(ARCH).state_dict()
        path = tmp_path / f"mlp{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=arch_metadata(ARCH))
        paths.append(str(path))
    return paths


def test_barrier_prints_json_with_a_curve_per_split_using_the_declared_architecture(mlp_files, capsys):
    code = main(["barrier", *mlp_files, "--data", "digits", "--steps", "3", "--max-examples", "60", "--json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["steps"] == 3 and report["models"] == ["mlp0", "mlp1"]
    assert [(r["curve"], r["split"]) for r in report["summary"]] == [("naive", "train"), ("naive", "test")]
    assert len(report["curves"][0]["lambdas"]) == 3
    assert report["extra"]["arch"] == ARCH


def test_barrier_writes_plot_csv_and_json_files(mlp_files, tmp_path, capsys):
    merged = tmp_path / "avg.safetensors"
    from safetensors.torch import load_file

    a, b = load_file(mlp_files[0]), load_file(mlp_files[1])
    save_file({k: (a[k] + b[k]) / 2 for k in a}, str(merged))
    code = main(["barrier", *mlp_files, "--arch", ARCH, "--steps", "3", "--max-examples", "40", "--merged", str(merged),
                 "--plot", str(tmp_path / "b.png"), "--csv", str(tmp_path / "b.csv"), "--json-out", str(tmp_path / "b.json"),
                 "--splits", "test"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "via merged" in out.out and "barrier" in out.out
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "b.csv").read_text().count("\n") == 1 + 2 * 3
    assert json.loads((tmp_path / "b.json").read_text())["curves"][1]["anchors"] == ["mlp0", "merged", "mlp1"]


def test_barrier_between_models_of_different_architectures_fails_with_one_line(mlp_files, tmp_path, capsys):
    torch.manual_seed(0)
    other = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in build_module("zoo:mlp?hidden=8").state_dict().items()}, str(other))
    code = main(["barrier", mlp_files[0], str(other), "--steps", "3", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error" in err and "wide" in err and len(err.strip().splitlines()) == 1


def test_barrier_rejects_a_plot_format_it_cannot_write(mlp_files, tmp_path, capsys):
    code = main(["barrier", *mlp_files, "--steps", "2", "--max-examples", "20", "--quiet", "--plot", str(tmp_path / "x.bmp")])
    assert code == 1 and ".bmp" in capsys.readouterr().err


def test_evaluate_prints_a_row_per_model(mlp_files, capsys, tmp_path):
    threads = torch.get_num_threads()
    code = main(["evaluate", *mlp_files, "--max-examples", "50", "--quiet", "--threads", "1", "--plot", str(tmp_path / "e.svg")])
    out = capsys.readouterr().out
    assert code == 0
    assert torch.get_num_threads() == threads  # --threads 1 applied to the command only
    lines = out.strip().splitlines()
    assert lines[0].split()[0] == "model" and lines[1].startswith("mlp0") and lines[2].startswith("mlp1")
    assert (tmp_path / "e.svg").read_text().lstrip().startswith("<?xml")


def test_evaluate_json_has_loss_and_accuracy_per_split(mlp_files, capsys):
    assert main(["evaluate", mlp_files[0], "--max-examples", "30", "--splits", "test", "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    entry = doc["models"][0]
    assert entry["name"] == "mlp0" and 0.0 <= entry["test"]["accuracy"] <= 1.0 and entry["test"]["n"] == 30


def test_barrier_with_align_adds_the_curves_to_b_aligned_and_repaired(mlp_files, capsys):
    code = main(["barrier", *mlp_files, "--align", "--steps", "3", "--max-examples", "40", "--splits", "test", "--json", "--quiet"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    curves = {c["label"]: c for c in report["curves"]}
    assert set(curves) == {"naive", "aligned", "aligned + REPAIR"}
    assert report["extra"]["alignment"] in ("weight", "activation")  # auto: the better of the two
    # aligning B changes the path but not B's own loss
    assert curves["aligned"]["loss"]["test"][-1] == pytest.approx(curves["naive"]["loss"]["test"][-1], rel=1e-5)
    assert curves["aligned"]["loss"]["test"][1] != pytest.approx(curves["naive"]["loss"]["test"][1])


def test_evaluate_recipe_merges_it_in_memory_and_scores_it_beside_its_inputs(mlp_files, capsys, tmp_path):
    out = tmp_path / "soup.safetensors"
    recipe = tmp_path / "soup.yaml"
    recipe.write_text(f"method: lerp\nmodels:\n  - path: {mlp_files[0]}\n  - path: {mlp_files[1]}\n"
                      f"params:\n  t: 0.3\noutput: {out}\n")
    assert main(["evaluate", "--recipe", str(recipe), "--max-examples", "40", "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in doc["models"]] == ["mlp0", "mlp1", "merged (not saved)"]
    assert not out.exists()
    assert main(["merge", str(recipe), "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", *mlp_files, str(out), "--max-examples", "40", "--json", "--quiet"]) == 0
    written = json.loads(capsys.readouterr().out)["models"][-1]
    assert written["test"] == doc["models"][-1]["test"]
