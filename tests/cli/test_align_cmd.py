"""``merge-studio align A B --arch SPEC -o OUT --report perm.json``."""

from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from merge_studio.cli.main import main
from merge_studio.core.arch import build_module, example_input

ARCH = "zoo:mlp?hidden=16,16"


def _pair(tmp_path):
    torch.manual_seed(0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.safetensors"
        save_file(build_module(ARCH).state_dict(), str(path))
        paths.append(path)
    return paths


def test_align_writes_b_permuted_with_the_permutation_in_its_metadata_and_a_report(tmp_path, capsys):
    a, b = _pair(tmp_path)
    out, report = tmp_path / "b_aligned.safetensors", tmp_path / "perm.json"
    code = main(["align", str(a), str(b), "--arch", ARCH, "-o", str(out), "--report", str(report), "--quiet"])
    assert code == 0, capsys.readouterr().err
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["merge_studio.arch"] == ARCH
    perms = json.loads(meta["merge_studio.permutation"])["groups"]
    data = json.loads(report.read_text())
    assert {g["name"]: g["perm"] for g in data["groups"]} == perms
    assert data["objective_per_sweep"] and data["max_output_difference"] < 1e-9
    x = example_input(ARCH, batch_size=3)
    with torch.no_grad():
        before = build_module(ARCH, load_file(str(b))).eval()(x)
        after = build_module(ARCH, load_file(str(out))).eval()(x)
    assert torch.allclose(before, after, atol=1e-5)
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_align_refuses_to_overwrite_an_input(tmp_path, capsys):
    a, b = _pair(tmp_path)
    original = b.read_bytes()
    assert main(["align", str(a), str(b), "--arch", ARCH, "-o", str(b), "--quiet"]) == 1
    assert "one of the inputs" in capsys.readouterr().err
    assert b.read_bytes() == original


def test_align_with_an_architecture_that_does_not_fit_says_so(tmp_path, capsys):
    a, b = _pair(tmp_path)
    code = main(["align", str(a), str(b), "--arch", "zoo:mlp?hidden=32", "-o", str(tmp_path / "o.safetensors"), "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("merge-studio align:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_align_with_a_pt2_program_as_the_architecture(tmp_path, capsys):
    from tests.core.rebasin.models import VGGish, randomize_batchnorm

    torch.manual_seed(1)
    x = torch.randn(2, 1, 8, 8)
    program = tmp_path / "vgg.pt2"
    torch.export.save(torch.export.export(VGGish().eval(), (x,)), str(program))
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        path = tmp_path / f"{name}.safetensors"
        save_file(randomize_batchnorm(VGGish(), seed).state_dict(), str(path))
        paths.append(path)
    out = tmp_path / "b_aligned.safetensors"
    code = main(["align", str(paths[0]), str(paths[1]), "--arch", str(program), "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    with safe_open(str(out), "pt") as f:
        groups = json.loads(f.metadata()["merge_studio.permutation"])["groups"]
    assert set(groups) == {"features.0", "features.4", "classifier.0"}


def test_align_by_activations_on_data_and_auto_says_which_alignment_it_kept(tmp_path, capsys):
    a, b = _pair(tmp_path)
    out = tmp_path / "b_aligned.safetensors"
    code = main(["align", str(a), str(b), "--arch", ARCH, "-o", str(out), "--data", "digits", "--examples", "200",
                 "--method", "auto", "--report", str(tmp_path / "r.json"), "--quiet"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["candidates"]) == {"weight", "activation"}
    assert "(kept)" in printed.out and "agree on" in printed.out
    assert report["max_output_difference"] < 1e-9


def test_activation_matching_without_data_is_refused_with_a_hint(tmp_path, capsys):
    a, b = _pair(tmp_path)
    code = main(["align", str(a), str(b), "--arch", ARCH, "-o", str(tmp_path / "o.safetensors"), "--method", "activation",
                 "--quiet"])
    assert code == 1 and "needs data" in capsys.readouterr().err


def test_two_hugging_face_folders_align_by_their_own_config(tmp_path, capsys):
    import pytest

    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_folder

    a, b = make_hf_folder(tmp_path / "a", "llama", seed=0), make_hf_folder(tmp_path / "b", "llama", seed=1)
    out, report = tmp_path / "b_aligned.safetensors", tmp_path / "r.json"
    code = main(["align", str(a), str(b), "-o", str(out), "--method", "weight", "--report", str(report), "--quiet"])
    assert code == 0, capsys.readouterr().err
    data = json.loads(report.read_text())
    assert data["arch"].startswith("hf:") and data["max_output_difference"] < 1e-5
    qk = next(g for g in data["groups"] if g["name"].endswith("self_attn.qk"))
    assert (qk["n_heads"], qk["kv_heads"], qk["fixed_within"]) == (4, 2, True)  # grouped-query, rotary
