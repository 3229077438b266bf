"""Aligning transformers: attention heads and MLP units of the zoo's and Hugging Face models keep their function.

Hugging Face models cannot be traced by torch.fx; they are read from their
``torch.export`` graph, where attention is found again from its operations:
grouped-query attention (Llama) moves query heads with or within their key/value
head, rotary embeddings keep the order inside query/key heads, and fused
projections (GPT-2's ``c_attn``) are cut into their query, key and value parts.
"""

from __future__ import annotations

import functools

import pytest
import torch

from merge_studio.core.progress import drive
from merge_studio.core.rebasin.align import iter_align
from merge_studio.core.rebasin.apply import apply_permutation, verify_function
from merge_studio.core.rebasin.spec import analyse_module
from tests.core.rebasin.models import random_perms

TOLERANCE = 1e-5


def _hf(family: str, seed: int):
    pytest.importorskip("transformers")
    if family == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(seed)
        config = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=32)
        return BertForSequenceClassification(config).eval()
    from tests.hf_models import make_hf_model

    return make_hf_model(family, seed=seed, vocab_size=96)


def _tokens(n: int = 2, shape: tuple[int, int] = (4, 8)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randint(0, 96, shape, generator=g) for _ in range(n)]


@functools.lru_cache(maxsize=3)
def _analysed(family: str):
    """Model A of a family and its analysis (exporting a graph takes seconds: done once per family)."""
    a = _hf(family, 0)
    return a, analyse_module(a, _tokens(1)[0])


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_hugging_face_models_align_by_heads_and_units_without_changing_their_outputs(family):
    a, analysis = _analysed(family)
    b = _hf(family, 1)
    x = _tokens(1)[0]
    spec = analysis.spec
    heads = [g for g in spec.groups if g.n_heads > 1]
    assert len(heads) == 4 and not spec.unpermuted  # qk and vo in each of the two layers
    state = b.state_dict()
    perms = random_perms(spec, seed=2)
    assert verify_function(b, state, apply_permutation(spec, state, perms), x, tol=TOLERANCE) < TOLERANCE
    for method in ("activation", "weight"):
        # data batches of another size than the traced example: the graph takes any batch and length
        result = drive(iter_align(a, a.state_dict(), state, x, method=method, batches=_tokens(2, (3, 11)), device="cpu",
                                  analysis=analysis, tolerance=TOLERANCE))
        assert result.max_output_difference < TOLERANCE
        assert any(not torch.equal(result.aligned[k], state[k]) for k in state)


def test_grouped_query_attention_moves_query_heads_with_their_key_value_head_and_rotary_keeps_head_order():
    spec = _analysed("llama")[1].spec
    qk = spec.group("model.layers.0.self_attn.qk")
    vo = spec.group(qk.head_partner)
    assert (qk.n_heads, qk.n_kv_heads, qk.fixed_within, vo.fixed_within) == (4, 2, True, False)
    keys = next(m for m in qk.members if m.tensor.endswith("k_proj.weight"))
    assert (keys.n, keys.repeat, keys.heads) == (16, 2, 2)  # 2 key heads of 8 units, each serving 2 query heads
    perm = random_perms(spec, seed=1)[qk.name].view(4, 8)
    assert torch.equal(perm % 8, torch.arange(8).expand(4, 8))  # inside a head, units keep their place


def test_a_fused_query_key_value_projection_is_cut_into_its_three_parts():
    spec = _analysed("gpt2")[1].spec
    qk = spec.group("transformer.h.0.attn.qk")
    parts = sorted((m.offset, m.n) for m in qk.members if m.tensor == "transformer.h.0.attn.c_attn.weight")
    assert parts == [(0, 32), (32, 32)]  # queries and keys; values are in the vo group
    vo = spec.group("transformer.h.0.attn.vo")
    assert {(m.tensor, m.offset) for m in vo.members} >= {("transformer.h.0.attn.c_attn.weight", 64),
                                                           ("transformer.h.0.attn.c_proj.weight", 0)}


@pytest.mark.parametrize("arch", ["zoo:gpt", "zoo:vit"])
def test_zoo_transformers_align_by_activations_without_changing_their_outputs(arch):
    from merge_studio.core.arch import build_module, example_input

    torch.manual_seed(0)
    a, b = build_module(arch), build_module(arch)
    batches = [example_input(arch, batch_size=8)]
    result = drive(iter_align(a, a.state_dict(), b.state_dict(), example_input(arch), method="activation",
                              batches=batches, device="cpu", tolerance=TOLERANCE))
    assert result.max_output_difference < TOLERANCE
    assert not result.matching.by_weights  # heads are watched through their projections
