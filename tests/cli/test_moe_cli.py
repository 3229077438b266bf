"""``merge-studio moe CONFIG -o OUT``: mergekit-moe's YAML in, a loadable MoE folder out."""

from __future__ import annotations

import json

import pytest

from merge_studio.cli.main import main
from tests.hf_models import make_hf_folder

pytest.importorskip("transformers")


def _yaml(tmp_path, base: str, experts: list[str], mode: str = "cheap_embed") -> str:
    lines = [f"base_model: {base}", f"gate_mode: {mode}", "dtype: float32", "experts:"]
    for i, e in enumerate(experts):
        lines += [f"  - source_model: {e}", f"    positive_prompts: ['prompt number {i}']"]
    path = tmp_path / "moe.yml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_moe_writes_a_mixtral_folder_and_reports_it(tmp_path, capsys):
    for i in range(3):
        make_hf_folder(tmp_path / f"m{i}", "llama", seed=i)
    config = _yaml(tmp_path, "m0", ["m1", "m2"])
    assert main(["moe", config, "-o", str(tmp_path / "out"), "-q", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "Mixtral" and report["experts"] == 2 and report["gate_mode"] == "cheap_embed"
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["architectures"] == ["MixtralForCausalLM"] and written["num_local_experts"] == 2


def test_flags_override_the_yaml(tmp_path, capsys):
    for i in range(3):
        make_hf_folder(tmp_path / f"m{i}", "llama", seed=i)
    config = _yaml(tmp_path, "m0", ["m1", "m2"])
    assert main(["moe", config, "-o", str(tmp_path / "out"), "-q", "--gate-mode", "random", "--experts-per-token", "1",
                 "--dtype", "bfloat16"]) == 0
    assert "routers from random" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["num_experts_per_tok"] == 1 and written["torch_dtype"] == "bfloat16"


def test_a_gpt2_base_is_refused_in_one_line_naming_the_supported_families(tmp_path, capsys):
    make_hf_folder(tmp_path / "g", "gpt2")
    config = _yaml(tmp_path, "g", ["g", "g"], mode="random")
    assert main(["moe", config, "-o", str(tmp_path / "out"), "-q", "--allow-same-experts"]) == 1
    err = capsys.readouterr().err
    assert "gpt2" in err and "Mixtral" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_missing_config_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["moe", str(tmp_path / "nope.yml"), "-o", str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_the_output_may_follow_the_config_as_mergekit_moe_takes_it(tmp_path, capsys):
    for i in range(3):
        make_hf_folder(tmp_path / f"m{i}", "llama", seed=i)
    config = _yaml(tmp_path, "m0", ["m1", "m2"], mode="random")
    assert main(["moe", config, str(tmp_path / "out"), "-q"]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["moe", config, "-q"]) == 1
    assert "give the output folder" in capsys.readouterr().err
