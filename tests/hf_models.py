"""Tiny Hugging Face model folders for tests, built in code (never downloaded).

``make_hf_folder(tmp_path / "a", "llama", seed=1)`` writes what ``save_pretrained``
writes for a model of that family (config.json, generation_config.json,
model.safetensors) plus a byte-level BPE tokenizer trained on a little standard-library
source. The configs keep each family's real shape rules (grouped-query attention,
tied embeddings for Gemma and GPT-2, fused qkv for Phi-3) at a few thousand
parameters, so every test that needs transformers builds its models in well under a
second. Tests that use this module need the ``hf`` extra (installed by
``packaging/install.sh``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VOCAB_SIZE = 320
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")

# Published configs, shrunk: the same keys and rules, tiny widths.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  rms_norm_eps=1e-6, tie_word_embeddings=False),
    "mistral": dict(model_type="mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    sliding_window=64, tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  tie_word_embeddings=True),
    "gemma": dict(model_type="gemma", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=128),
    "phi3": dict(model_type="phi3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                 original_max_position_embeddings=128, pad_token_id=0, tie_word_embeddings=False),
    "gpt2": dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=128),
}
FAMILIES = tuple(TINY_CONFIGS)


def training_text() -> str:
    """A few kB of Python source from the standard library (always on disk, never fetched)."""
    import json
    import os
    import textwrap

    return "\n".join(inspect.getsource(m) for m in (os, json, textwrap))[:60_000]


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([training_text()], trainer)
    return tok.to_str()


def make_tokenizer(vocab_size: int = VOCAB_SIZE, added_tokens: Sequence[str] = ()) -> Any:
    """A fast tokenizer with ``vocab_size`` BPE entries, then ``added_tokens`` appended."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )
    if added_tokens:
        tok.add_special_tokens({"additional_special_tokens": list(added_tokens)})
    return tok


def tiny_config(family: str, vocab_size: int = VOCAB_SIZE, **overrides: Any) -> Any:
    """The family's transformers config at test size."""
    from transformers import AutoConfig

    values = {**TINY_CONFIGS[family], **overrides}
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, **values)


def make_hf_model(family: str, seed: int = 0, vocab_size: int = VOCAB_SIZE, **overrides: Any) -> Any:
    """A randomly initialised causal LM of ``family`` (float32, eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **overrides))
    return model.eval()


def make_hf_folder(
    folder: Path,
    family: str = "llama",
    seed: int = 0,
    *,
    added_tokens: Sequence[str] = (),
    model: Any = None,
    tokenizer: bool = True,
    **overrides: Any,
) -> Path:
    """Write a loadable model folder (weights, config, generation config, tokenizer).

    ``added_tokens`` grows the vocabulary past :data:`VOCAB_SIZE` the way fine-tunes
    that add chat tokens do (embedding and output rows appended). ``model`` saves a
    model you built or trained instead of a fresh one of ``family``.
    """
    folder = Path(folder)
    tok = make_tokenizer(VOCAB_SIZE, added_tokens)
    if model is None:
        model = make_hf_model(family, seed, VOCAB_SIZE, **overrides)
        if added_tokens:
            model.resize_token_embeddings(VOCAB_SIZE + len(added_tokens), mean_resizing=False)
    model.save_pretrained(folder)
    if tokenizer:
        tok.save_pretrained(folder)
    return folder
