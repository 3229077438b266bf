"""Outputs are never replaced without a word: the CLI refuses unless --force."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.cli.main import main


@pytest.fixture
def two_models(tmp_path):
    paths = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        path = tmp_path / f"m{i}.safetensors"
        save_file({"fc.weight": torch.randn(6, 4, generator=g)}, str(path))
        paths.append(path)
    return paths


def _merge(models, out, *extra):
    return main(["merge", "--method", "lerp", *map(str, models), "--param", "t=0.5", "-o", str(out), "-q", *extra])


def test_merging_onto_an_existing_file_is_refused_in_one_line_naming_force(two_models, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    assert _merge(two_models, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0] and str(out) in err[0]
    assert out.read_bytes() == b"keep me"


def test_force_replaces_the_existing_output(two_models, tmp_path):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old")
    assert _merge(two_models, out, "--force") == 0
    assert set(load_file(str(out))) == {"fc.weight"}


def test_an_existing_output_folder_is_refused_too(two_models, tmp_path, capsys):
    out = tmp_path / "merged"
    out.mkdir()
    assert _merge(two_models, out) == 1
    assert "--force" in capsys.readouterr().err


def test_export_mergekit_refuses_to_replace_a_file(two_models, tmp_path, capsys):
    recipe, target = tmp_path / "r.yaml", tmp_path / "mk.yml"
    assert main(["merge", "--method", "slerp", *map(str, two_models), "-o", str(tmp_path / "o.safetensors"),
                 "--save-recipe", str(recipe), "-q"]) == 0
    target.write_text("mine")
    assert main(["export-mergekit", str(recipe), "-o", str(target)]) == 1
    assert "--force" in capsys.readouterr().err and target.read_text() == "mine"
    assert main(["export-mergekit", str(recipe), "-o", str(target), "--force"]) == 0
    assert "merge_method" in target.read_text()


def test_lora_extract_refuses_to_replace_an_output(two_models, tmp_path, capsys):
    out = tmp_path / "lora"
    out.mkdir()
    code = main(["lora", "extract", "--base", str(two_models[0]), "--tuned", str(two_models[1]), "--rank", "2", "-o", str(out), "-q"])
    assert code == 1 and "--force" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    lambda models, out: ["graph", str(models[0]), "-o", str(out.with_suffix(".svg"))],
    lambda models, out: ["barrier", *map(str, models), "--steps", "2", "--quiet", "--plot", str(out.with_suffix(".png"))],
    lambda models, out: ["barrier", *map(str, models), "--steps", "2", "--quiet", "--csv", str(out.with_suffix(".csv"))],
    lambda models, out: ["evaluate", *map(str, models), "--quiet", "--plot", str(out.with_suffix(".svg"))],
    lambda models, out: ["moe", str(out.with_suffix(".yml")), "-o", str(out.with_suffix(".moe"))],
], ids=["graph -o", "barrier --plot", "barrier --csv", "evaluate --plot", "moe -o"])
def test_pictures_tables_and_folders_are_not_replaced_without_force(two_models, tmp_path, capsys, command):
    args = command(two_models, tmp_path / "existing")
    target = next(a for a in args[1:] if "existing" in a and not a.endswith(".yml"))
    (tmp_path / target).write_bytes(b"keep me") if not target.endswith(".moe") else (tmp_path / target).mkdir()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert (tmp_path / target).is_dir() if target.endswith(".moe") else (tmp_path / target).read_bytes() == b"keep me"
