"""``merge-studio lora info|apply|merge|extract`` and the ``base+adapter`` syntax in configs."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from merge_studio.cli.main import main
from merge_studio.core.lora.writer import AdapterContent, LoraFactors, write_adapter


@pytest.fixture
def base_and_adapters(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {"encoder.layers.0.weight": torch.randn(12, 8, generator=g), "encoder.layers.0.bias": torch.randn(12, generator=g),
             "head.weight": torch.randn(4, 12, generator=g)}
    save_file(state, str(tmp_path / "base.safetensors"))
    adapters = []
    for i, rank in enumerate((2, 3)):
        factors = {"encoder.layers.0": LoraFactors(torch.randn(rank, 8, generator=g), torch.randn(12, rank, generator=g), 2.0 * rank),
                   "head": LoraFactors(torch.randn(rank, 12, generator=g), torch.randn(4, rank, generator=g), float(rank))}
        adapters.append(write_adapter(tmp_path / f"adapter{i}", AdapterContent("peft", factors, config={"base_model_name_or_path": "base"})))
    return tmp_path / "base.safetensors", adapters, state


def test_info_lists_base_rank_alpha_and_targets(base_and_adapters, capsys):
    _, adapters, _ = base_and_adapters
    assert main(["lora", "info", str(adapters[0])]) == 0
    out = capsys.readouterr().out
    assert "PEFT LoRA adapter" in out and "rank      2" in out and "alpha     2, 4" in out
    assert "targets   encoder.layers.0, head" in out


def test_apply_writes_the_base_with_the_change_added(base_and_adapters, tmp_path):
    base, adapters, state = base_and_adapters
    assert main(["lora", "apply", str(base), str(adapters[0]), "-o", str(tmp_path / "out.safetensors"), "-q"]) == 0
    out = load_file(str(tmp_path / "out.safetensors"))
    a = load_file(str(adapters[0] / "adapter_model.safetensors"))
    down, up = a["base_model.model.encoder.layers.0.lora_A.weight"], a["base_model.model.encoder.layers.0.lora_B.weight"]
    torch.testing.assert_close(out["encoder.layers.0.weight"], state["encoder.layers.0.weight"] + 2.0 * up @ down)
    assert torch.equal(out["encoder.layers.0.bias"], state["encoder.layers.0.bias"])


def test_merge_by_svd_reports_the_energy_kept(base_and_adapters, tmp_path, capsys):
    _, adapters, _ = base_and_adapters
    assert main(["lora", "merge", *map(str, adapters), "--svd", "--rank", "1", "-o", str(tmp_path / "m"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "rank 1" in out and "kept energy" in out
    assert (tmp_path / "m" / "adapter_config.json").is_file()


def test_extract_prints_the_error_of_every_layer(base_and_adapters, tmp_path, capsys):
    base, adapters, _ = base_and_adapters
    assert main(["lora", "apply", str(base), str(adapters[1]), "-o", str(tmp_path / "tuned.safetensors"), "-q"]) == 0
    capsys.readouterr()
    assert main(["lora", "extract", "--tuned", str(tmp_path / "tuned.safetensors"), "--base", str(base),
                 "--rank", "2", "-o", str(tmp_path / "x"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "encoder.layers.0" in out and "overall" in out and "wrote" in out


def test_a_mergekit_config_takes_base_plus_adapter_paths(base_and_adapters, tmp_path):
    base, adapters, state = base_and_adapters
    config = {"merge_method": "linear", "dtype": "float32", "models": [
        {"model": "base.safetensors", "parameters": {"weight": 1.0}},
        {"model": f"base.safetensors+{adapters[0].name}", "parameters": {"weight": 1.0}}]}
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    assert main(["merge", str(tmp_path / "config.yml"), "-o", str(tmp_path / "half.safetensors"), "-q"]) == 0
    applied = tmp_path / "applied.safetensors"
    assert main(["lora", "apply", str(base), str(adapters[0]), "-o", str(applied), "-q"]) == 0
    half, full = load_file(str(tmp_path / "half.safetensors")), load_file(str(applied))
    torch.testing.assert_close(half["head.weight"], (state["head.weight"] + full["head.weight"]) / 2)


def test_applying_something_that_is_not_an_adapter_says_so(base_and_adapters, tmp_path, capsys):
    base, _, _ = base_and_adapters
    assert main(["lora", "apply", str(base), str(base), "-o", str(tmp_path / "o.safetensors")]) == 1
    assert "is not a LoRA adapter" in capsys.readouterr().err


def test_an_adapter_holding_nan_is_not_applied_and_nothing_is_written(base_and_adapters, tmp_path, capsys):
    base, adapters, _ = base_and_adapters
    weights = adapters[0] / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors["base_model.model.head.lora_B.weight"][0, 0] = float("nan")
    save_file(tensors, str(weights))
    out = tmp_path / "out.safetensors"
    assert main(["lora", "apply", str(base), str(adapters[0]), "-o", str(out), "-q"]) == 1
    assert "head.weight holds NaN or infinite values" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    assert main(["lora", "apply", str(base), str(adapters[0]), "-o", str(out), "-q", "--allow-non-finite"]) == 0
    assert load_file(str(out))["head.weight"][0].isnan().any()


@pytest.mark.parametrize(("config", "message"), [
    ({"rank_pattern": {"head": "two"}}, "rank_pattern is 'two', not a number"),
    ({"use_dora": True}, "says use_dora, but the weights hold no lora_magnitude_vector"),
])
def test_an_adapter_config_that_does_not_fit_its_weights_is_refused_by_name(base_and_adapters, tmp_path, capsys,
                                                                            config, message):
    import json

    _, adapters, _ = base_and_adapters
    path = adapters[0] / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    assert main(["lora", "info", str(adapters[0])]) == 1
    assert message in capsys.readouterr().err


def test_lora_matrices_that_do_not_multiply_are_refused_naming_both(base_and_adapters, capsys):
    _, adapters, _ = base_and_adapters
    weights = adapters[0] / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors["base_model.model.head.lora_A.weight"] = torch.randn(2 * 12)
    save_file(tensors, str(weights))
    assert main(["lora", "info", str(adapters[0])]) == 1
    err = capsys.readouterr().err
    assert "head.lora_A.weight (24,)" in err and "do not multiply" in err
