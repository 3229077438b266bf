"""The rules that line up vocabulary rows (no tokenizer library needed)."""

from __future__ import annotations

import torch

from merge_studio.core.hf.settings import TokenRowSource, TokenSettings
from merge_studio.core.hf.vocab_rows import plan_rows


def _rows(n: int, start: float) -> torch.Tensor:
    return torch.arange(start, start + n).unsqueeze(1).repeat(1, 2).float()


def test_rows_line_up_by_token_and_missing_ones_come_from_the_only_model_that_has_them():
    out = {"a": 0, "b": 1, "x": 2}
    plan = plan_rows(out, [{"a": 0, "b": 1}, {"b": 0, "a": 1, "x": 2}], [2, 3], base=0)
    first, second = plan.remap([_rows(2, 0), _rows(3, 10)])
    assert first[:, 0].tolist() == [0, 1, 12]  # "x" taken from the second model
    assert second[:, 0].tolist() == [11, 10, 12]  # re-ordered to the output's ids


def test_a_token_several_models_have_takes_the_base_row_or_their_mean():
    out = {"a": 0, "x": 1}
    vocabs = [{"a": 0}, {"a": 0, "x": 1}, {"a": 0, "x": 1}]
    with_base = plan_rows(out, vocabs, [1, 2, 2], base=1).remap([_rows(1, 0), _rows(2, 10), _rows(2, 20)])
    without = plan_rows(out, vocabs, [1, 2, 2], base=None).remap([_rows(1, 0), _rows(2, 10), _rows(2, 20)])
    assert with_base[0][1, 0] == 11
    assert without[0][1, 0] == 16  # mean of 11 and 21


def test_rows_without_tokenizers_line_up_by_index_and_padding_takes_the_mean_row():
    plan = plan_rows(3, [None, None], [2, 3], base=None, pad_to_multiple_of=4)
    first, second = plan.remap([_rows(2, 0), _rows(3, 10)])
    assert first[:3, 0].tolist() == [0, 1, 12] and abs(first[3, 0].item() - 13 / 3) < 1e-6
    assert second[:, 0].tolist() == [10, 11, 12, 11]


def test_forced_and_zero_tokens_override_every_model():
    out = {"a": 0, "b": 1}
    tokens = {"a": TokenSettings(source="m1", force=True), "b": TokenSettings(source=TokenRowSource(kind="zero"), force=True)}
    plan = plan_rows(out, [out, out], [2, 2], base=0, tokens=tokens, input_of=lambda p: int(p[1]))
    first, second = plan.remap([_rows(2, 0), _rows(2, 10)])
    assert first[:, 0].tolist() == [10, 0] and second[:, 0].tolist() == [10, 0]


def test_identical_vocabularies_need_no_remapping():
    vocab = {"a": 0, "b": 1}
    assert plan_rows(vocab, [vocab, dict(vocab)], [2, 2], base=0).is_identity([2, 2])


def test_interleaved_reads_of_two_vocabulary_tensors_remap_each_once(tmp_path):
    from safetensors.torch import save_file

    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.hf.vocab_rows import RowRemapper

    paths = []
    for i, rows in enumerate((2, 3)):
        save_file({"embed_tokens.weight": _rows(rows, 0), "lm_head.weight": _rows(rows, 100)}, str(tmp_path / f"{i}.st"))
        paths.append(tmp_path / f"{i}.st")
    inputs = [open_checkpoint(p) for p in paths]
    reads: list[str] = []
    for ck in inputs:
        original = ck.get_tensor
        ck.get_tensor = lambda name, original=original: reads.append(name) or original(name)
    remapper = RowRemapper(plan_rows(3, [None, None], [2, 3], base=0), inputs, {"embed_tokens.weight", "lm_head.weight"})
    first = remapper.wrap(inputs[0])
    for _ in range(3):  # workers on neighbouring tensors, chunk after chunk
        assert first.get_flat("embed_tokens.weight", 4, 6).tolist() == [2.0, 2.0]
        assert first.get_flat("lm_head.weight", 0, 2).tolist() == [100.0, 100.0]
    assert sorted(reads) == ["embed_tokens.weight"] * 2 + ["lm_head.weight"] * 2
