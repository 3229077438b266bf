"""Merging Hugging Face folders gives a folder transformers loads: config, tokenizer, card, atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from merge_studio.core.engine import iter_merge, run_merge
from merge_studio.core.hf.output_folder import OutputFolder
from merge_studio.core.progress import CancelToken
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled, OutputError
from tests.hf_models import FAMILIES


def _recipe(out: Path, *models: Path, **extra) -> Recipe:
    return Recipe.from_mapping(
        {"method": "simple_average", "models": [{"path": str(m)} for m in models], "output": str(out), **extra}
    )


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    return model, info, AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_merge_of_two_folders_loads_in_transformers_and_generates(hf_folder, tmp_path, family):
    a, b = hf_folder("a", family, seed=1), hf_folder("b", family, seed=2)
    out = run_merge(_recipe(tmp_path / "merged", a, b)).output
    model, info, tokenizer = _load(out)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    prompt = tokenizer("def main():", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    with (safe_open(out / "model.safetensors", "pt") as f, safe_open(a / "model.safetensors", "pt") as fa,
          safe_open(b / "model.safetensors", "pt") as fb):
        for name in f.keys():
            torch.testing.assert_close(f.get_tensor(name), (fa.get_tensor(name) + fb.get_tensor(name)) / 2)


def test_the_folder_carries_config_generation_config_tokenizer_and_a_model_card(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    recipe = Recipe.from_mapping({"method": "task_arithmetic", "base": str(a), "models": [{"path": str(b)}],
                                  "output": str(tmp_path / "merged"), "dtype": "bfloat16"})
    out = run_merge(recipe).output
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "README.md"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"
    assert config["model_type"] == "llama" and config["vocab_size"] == 320
    card = (out / "README.md").read_text()
    sources = json.loads(safe_open(out / "model.safetensors", "pt").metadata()["merge_studio.sources"])
    assert "Task arithmetic" in card and "`task_arithmetic`" in card
    assert all(s["sha256"] in card for s in sources) and len(sources) == 2
    assert "```yaml\nrecipe_version: 1\nmethod: task_arithmetic" in card
    model, _, _ = _load(out)
    assert model.dtype == torch.bfloat16


def test_every_shard_and_the_index_say_format_pt(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    out = run_merge(_recipe(tmp_path / "merged", a, b, shard_size="40kB")).output
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    for shard in shards:
        with safe_open(shard, "pt") as f:
            assert f.metadata()["format"] == "pt"
    model, info, _ = _load(out)
    assert not info["missing_keys"]


def test_a_failure_while_writing_the_folder_files_leaves_nothing(hf_folder, tmp_path, monkeypatch):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)

    def broken(self, folder, sources):
        (Path(folder) / "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OutputFolder, "write_into", broken)
    with pytest.raises(OutputError, match="merged: the disk is full"):
        run_merge(_recipe(tmp_path / "merged", a, b))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_cancelled_merge_leaves_no_folder(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    cancel = CancelToken()
    gen = iter_merge(_recipe(tmp_path / "merged", a, b), cancel)
    with pytest.raises(Cancelled):
        for progress in gen:
            if progress.stage == "merge":  # tensors are on their way to the folder: stop now
                cancel.cancel()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_running_the_same_merge_again_replaces_the_folder(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    run_merge(_recipe(tmp_path / "merged", a, b))
    out = run_merge(_recipe(tmp_path / "merged", a, b, tokenizer="union")).output
    assert "union" in (out / "README.md").read_text()


def test_single_files_without_a_config_still_give_a_plain_safetensors_output(make_checkpoint, tmp_path):
    a, b = make_checkpoint("a.safetensors", seed=1), make_checkpoint("b.safetensors", seed=2)
    out = run_merge(_recipe(tmp_path / "merged", a, b)).output
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]


def test_a_safetensors_target_from_folders_is_one_file(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2)
    out = run_merge(_recipe(tmp_path / "merged.safetensors", a, b)).output
    assert out.is_file() and not (tmp_path / "config.json").exists()


def test_a_llava_merge_keeps_the_input_names_and_loads_as_llava(tmp_path):
    import transformers
    from safetensors import safe_open as open_st

    def llava(folder: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        vision = transformers.CLIPVisionConfig(image_size=16, patch_size=4, num_hidden_layers=1, num_attention_heads=2,
                                               hidden_size=16, intermediate_size=32)
        text = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                        num_hidden_layers=1)
        config = transformers.LlavaConfig(vision_config=vision, text_config=text, image_seq_length=16)
        transformers.LlavaForConditionalGeneration(config).save_pretrained(folder)
        return folder

    a, b = llava(tmp_path / "a", 1), llava(tmp_path / "b", 2)
    out = run_merge(_recipe(tmp_path / "merged", a, b)).output
    with open_st(a / "model.safetensors", "pt") as fa, open_st(out / "model.safetensors", "pt") as fo:
        assert sorted(fo.keys()) == sorted(fa.keys())
    model, info = transformers.LlavaForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_a_plan_that_reshapes_the_model_overrides_the_config_before_it_is_written(tmp_path):
    from merge_studio.core.hf.model_card import ModelCard

    card = ModelCard("out", "Passthrough", "passthrough", None, "no tokenizer", "method: passthrough\n")
    folder = OutputFolder(config={"model_type": "llama", "num_hidden_layers": 2, "rope_parameters": {"rope_theta": 1e4}},
                          card=card, dtype="bfloat16", vocab_size=322)
    folder.override_config({"num_hidden_layers": 3, "rope_parameters": {"rope_type": "default"}})
    folder.write_into(tmp_path, [{"name": "a", "size": 10}])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["rope_parameters"] == {"rope_theta": 1e4, "rope_type": "default"}
    assert config["dtype"] == "bfloat16" and config["vocab_size"] == 322
    assert "| a | 10 B | `not recorded` |" in (tmp_path / "README.md").read_text()
