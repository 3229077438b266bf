"""Models whose vocabularies differ by added tokens: reported in words, merged on the base's vocabulary or the union."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core.checkpoints import check_compatibility, open_checkpoint
from merge_studio.core.engine import run_merge
from merge_studio.core.mergekit_config import mergekit_from_recipe
from merge_studio.core.recipe import Recipe, load_recipe
from merge_studio.errors import IncompatibleCheckpointsError, RecipeError
from tests.core.hf.conftest import CHAT_TOKENS
from tests.hf_models import VOCAB_SIZE

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _merge(out: Path, *models: Path, base: Path | None = None, **extra) -> Path:
    data = {"method": "simple_average", "models": [{"path": str(m)} for m in models], "output": str(out), **extra}
    if base is not None:
        data.update(method="task_arithmetic", base=str(base))
    return run_merge(Recipe.from_mapping(data)).output


def _vocab(folder: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_the_compatibility_report_names_the_added_tokens(hf_folder):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    report = check_compatibility([open_checkpoint(a), open_checkpoint(b)])
    assert report.ok and not report.shape_mismatches
    said = "\n".join(report.lines())
    assert "b has 2 more tokens than a: <|im_start|>, <|im_end|>" in said
    assert any("<|im_end|>" in line for line in report.issues_for("b"))


def test_by_default_the_base_vocabulary_is_kept_and_extra_rows_dropped(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    out = _merge(tmp_path / "merged", a, b)
    w, wa, wb = _weights(out), _weights(a), _weights(b)
    for name in (EMBED, HEAD):
        assert w[name].shape[0] == VOCAB_SIZE
        torch.testing.assert_close(w[name], (wa[name] + wb[name][:VOCAB_SIZE]) / 2)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == VOCAB_SIZE
    assert not set(CHAT_TOKENS) & set(_vocab(out))


def test_the_union_takes_new_rows_from_the_model_that_has_them(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    config = tmp_path / "union.yml"  # through a mergekit config, as users write it
    config.write_text(f"merge_method: linear\ntokenizer_source: union\nmodels:\n"
                      f"  - model: {a}\n    parameters: {{weight: 1.0}}\n  - model: {b}\n    parameters: {{weight: 1.0}}\n")
    recipe = load_recipe(config).model_copy(update={"output": str(tmp_path / "merged")})
    out = run_merge(recipe).output
    vocab, vocab_b = _vocab(out), _vocab(b)
    w, wa, wb = _weights(out), _weights(a), _weights(b)
    for name in (EMBED, HEAD):
        assert w[name].shape[0] == VOCAB_SIZE + 2
        torch.testing.assert_close(w[name][:VOCAB_SIZE], (wa[name] + wb[name][:VOCAB_SIZE]) / 2)
        for token in CHAT_TOKENS:
            torch.testing.assert_close(w[name][vocab[token]], wb[name][vocab_b[token]])
    assert json.loads((out / "config.json").read_text())["vocab_size"] == VOCAB_SIZE + 2
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == VOCAB_SIZE + 2


def test_a_new_token_several_models_have_gets_their_mean_row(hf_folder, tmp_path):
    a = hf_folder("a", seed=1)
    b, c = (hf_folder(n, seed=s, added_tokens=CHAT_TOKENS) for n, s in (("b", 2), ("c", 3)))
    out = _merge(tmp_path / "merged", a, b, c, tokenizer="union")
    w, wb, wc = _weights(out), _weights(b), _weights(c)
    row = _vocab(out)["<|im_start|>"]
    torch.testing.assert_close(w[EMBED][row], (wb[EMBED][row] + wc[EMBED][row]) / 2)


def test_the_tokenizer_of_a_chosen_model_brings_its_rows(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    out = _merge(tmp_path / "merged", a, b, tokenizer=str(b))
    assert (out / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert _weights(out)[EMBED].shape[0] == VOCAB_SIZE + 2


def test_task_vectors_of_new_tokens_are_taken_against_the_donor_row(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    out = _merge(tmp_path / "merged", b, base=a, tokenizer="union")
    w, wb = _weights(out), _weights(b)
    torch.testing.assert_close(w[EMBED][VOCAB_SIZE:], wb[EMBED][VOCAB_SIZE:])


def test_padding_rounds_the_rows_up_and_keeps_the_tokenizer(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1, added_tokens=CHAT_TOKENS), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    out = _merge(tmp_path / "merged", a, b, tokenizer={"source": "base", "pad_to_multiple_of": 64})
    w = _weights(out)
    assert w[EMBED].shape[0] == 384 and json.loads((out / "config.json").read_text())["vocab_size"] == 384
    torch.testing.assert_close(w[EMBED][-1], w[EMBED][: VOCAB_SIZE + 2].mean(0))
    assert len(_vocab(out)) == VOCAB_SIZE + 2


def test_a_forced_token_takes_its_row_from_the_named_model(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, added_tokens=CHAT_TOKENS)
    tokens = {"<s>": {"source": str(b), "force": True}, "</s>": {"source": {"kind": "zero"}, "force": True}}
    out = _merge(tmp_path / "merged", a, b, tokenizer={"source": "union", "tokens": tokens})
    w, wb, vocab = _weights(out), _weights(b), _vocab(out)
    torch.testing.assert_close(w[EMBED][vocab["<s>"]], wb[EMBED][vocab["<s>"]])
    assert not w[EMBED][vocab["</s>"]].any()


def test_a_token_source_outside_the_merge_is_refused(hf_folder, tmp_path):
    a, b, c = hf_folder("a", seed=1), hf_folder("b", seed=2), hf_folder("c", seed=3)
    with pytest.raises(RecipeError, match="not one of the merged models"):
        _merge(tmp_path / "merged", a, b, tokenizer=str(c))


@pytest.mark.parametrize(("template", "needle"), [("chatml", "<|im_start|>"), ("{{ messages[0]['content'] }} literal", "literal")])
def test_a_chat_template_by_name_or_text_reaches_the_tokenizer(hf_folder, tmp_path, template, needle):
    from transformers import AutoTokenizer

    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, tokenizer=False)
    out = _merge(tmp_path / "merged", a, b, tokenizer={"chat_template": template})
    assert needle in AutoTokenizer.from_pretrained(out).chat_template


def test_other_shape_mismatches_still_stop_naming_the_tensors(hf_folder, tmp_path):
    a, b = hf_folder("a", seed=1), hf_folder("b", seed=2, intermediate_size=48)
    with pytest.raises(IncompatibleCheckpointsError, match="mlp.down_proj.weight: shapes differ"):
        _merge(tmp_path / "merged", a, b)


def test_mergekit_tokenizer_keys_come_in_and_go_out(tmp_path):
    config = tmp_path / "c.yml"
    config.write_text("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                      "  - model: b\n    parameters: {weight: 1}\nchat_template: chatml\n"
                      "tokenizer:\n  tokens:\n    <x>: {source: b, force: true}\n  pad_to_multiple_of: 8\n")
    recipe = load_recipe(config)
    assert recipe.tokenizer.source == "union"  # mergekit's default for a tokenizer: section
    assert recipe.tokenizer.tokens["<x>"].source == str(tmp_path / "b")
    back = mergekit_from_recipe(recipe)
    assert back["tokenizer"]["pad_to_multiple_of"] == 8 and back["chat_template"] == "chatml"
    assert back["tokenizer"]["tokens"]["<x>"] == {"source": str(tmp_path / "b"), "force": True}
    plain = Recipe.from_mapping({"method": "task_arithmetic", "base": "a", "models": [{"path": "b"}], "tokenizer": "union"})
    assert mergekit_from_recipe(plain)["tokenizer_source"] == "union"
    assert "tokenizer: union" in plain.to_yaml()
