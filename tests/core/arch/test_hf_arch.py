"""Hugging Face folders are recognised from their config.json and built by transformers."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from merge_studio.core.arch import build_module, detect_arch, example_input, parse_arch, state_dict_mismatch  # noqa: E402
from merge_studio.core.checkpoints import open_checkpoint  # noqa: E402
from merge_studio.errors import ArchitectureError, MissingExtraError  # noqa: E402
from tests.hf_models import make_hf_folder  # noqa: E402

LLAMA_7B = Path(__file__).parents[2] / "fixtures" / "llama-2-7b"


class _Shape:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def test_hf_spelling_names_a_folder_and_reads_back():
    spec = parse_arch("hf:models/llama?num_hidden_layers=2")
    assert (spec.kind, spec.target, spec.kwargs) == ("hf", "models/llama", {"num_hidden_layers": 2})
    assert str(spec) == "hf:models/llama?num_hidden_layers=2"
    with pytest.raises(ArchitectureError, match="names no folder"):
        parse_arch("hf:")


def test_a_model_folder_and_its_weights_file_are_recognised_without_arch(tmp_path):
    folder = make_hf_folder(tmp_path / "llama", "llama")
    with open_checkpoint(folder) as ck:
        assert detect_arch(ck) == f"hf:{folder.resolve()}"
    with open_checkpoint(folder / "model.safetensors") as ck:
        assert detect_arch(ck) == f"hf:{folder.resolve()}"


def test_a_config_json_of_another_tool_is_not_taken_for_a_model_config(tmp_path, make_checkpoint):
    path = make_checkpoint("weights.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"learning_rate": 0.1}))
    with open_checkpoint(path) as ck:
        assert detect_arch(ck) is None


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_built_module_computes_what_transformers_loads(tmp_path, family):
    """Bound weights give the logits of from_pretrained (qwen2 and gpt2 tie the output head)."""
    from transformers import AutoModelForCausalLM

    folder = make_hf_folder(tmp_path / family, family, seed=3)
    with open_checkpoint(folder) as ck:
        spec, state = detect_arch(ck), ck.state_dict()
    module = build_module(spec, state)
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(module(ids).logits, reference(ids).logits)
    out = module.get_output_embeddings().weight
    assert (out is module.get_input_embeddings().weight) == (family != "llama")


def test_a_7b_config_builds_on_the_meta_device_and_checks_names_without_weights():
    module = build_module(f"hf:{LLAMA_7B}", device="meta")
    assert sum(p.numel() for p in module.parameters()) == 6_738_415_616
    assert all(p.is_meta for p in module.parameters())
    shapes = {k: _Shape(tuple(v.shape)) for k, v in module.state_dict().items()}
    assert state_dict_mismatch(module, shapes) is None
    del shapes["model.layers.31.mlp.down_proj.weight"]
    assert "model.layers.31.mlp.down_proj.weight" in state_dict_mismatch(module, shapes)


def test_a_bare_weights_file_is_paired_with_a_config_by_the_hf_spelling(tmp_path):
    folder = make_hf_folder(tmp_path / "qwen", "qwen2")
    loose = tmp_path / "elsewhere" / "weights.safetensors"
    loose.parent.mkdir()
    shutil.copy(folder / "model.safetensors", loose)
    with open_checkpoint(loose) as ck:
        assert detect_arch(ck) is None  # no config beside it
        module = build_module(f"hf:{folder / 'config.json'}", ck.state_dict())
    assert "lm_head.weight" not in open_checkpoint(loose).keys()  # tied: saved once
    assert torch.equal(module.lm_head.weight, module.model.embed_tokens.weight)


def test_old_checkpoints_with_rotary_caches_still_bind(tmp_path):
    folder = make_hf_folder(tmp_path / "llama", "llama")
    with open_checkpoint(folder) as ck:
        state = ck.state_dict()
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # written by transformers < 4.31
    state["model.rotary_emb.inv_freq"] = torch.ones(4)
    module = build_module(f"hf:{folder}", state)
    assert torch.equal(module.model.norm.weight, state["model.norm.weight"])


def test_a_missing_tensor_is_named(tmp_path):
    folder = make_hf_folder(tmp_path / "llama", "llama")
    with open_checkpoint(folder) as ck:
        state = ck.state_dict()
    del state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ArchitectureError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        build_module(f"hf:{folder}", state)


def test_a_model_type_transformers_does_not_know_is_refused_without_running_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "my_secret_lm", "auto_map": {"AutoModelForCausalLM": "modeling.MyLM"},
    }))
    (tmp_path / "modeling.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ArchitectureError, match="does not know model_type 'my_secret_lm'"):
        build_module(f"hf:{tmp_path}", device="meta")


@pytest.mark.parametrize("bad", [{"num_hidden_layers": 10**9}, {"num_hidden_layers": -3},
                                 {"text_config": {"model_type": "llama", "num_hidden_layers": 10**12}}])
def test_a_config_declaring_an_impossible_layer_count_is_refused_at_once(tmp_path, bad):
    folder = make_hf_folder(tmp_path / "m", "llama", tokenizer=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **bad}))
    with pytest.raises(ArchitectureError, match="not a layer count a model can have"):
        build_module(f"hf:{folder}", device="meta")


def test_without_transformers_the_message_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(MissingExtraError) as info:
        build_module(f"hf:{folder}", device="meta")
    assert "pip install 'merge-studio[hf]'" in str(info.value)


def test_the_example_input_is_token_ids_with_a_causal_mask(tmp_path):
    folder = make_hf_folder(tmp_path / "llama", "llama")
    data = example_input(f"hf:{folder}", batch_size=1)
    assert data["input_ids"].shape == (1, 16) and int(data["input_ids"].max()) < 320
    assert data["attention_mask"].shape == (1, 1, 16, 16)
    assert data["attention_mask"][0, 0, 0, 1] < -1e30 and data["attention_mask"][0, 0, 1, 0] == 0


def test_without_transformers_the_graph_tab_shows_the_tree_and_says_what_to_install(tmp_path, monkeypatch):
    from merge_studio.core.progress import drive
    from merge_studio.graph.jobs import iter_checkpoint_picture

    folder = make_hf_folder(tmp_path / "llama", "llama")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with open_checkpoint(folder) as ck:
        picture = drive(iter_checkpoint_picture(ck))
    assert picture.arch is None and picture.tree is not None
    assert "pip install 'merge-studio[hf]'" in picture.notes[0]
