"""The realistic language-model fixtures behave as merges do: each fine-tune wins on its own
text, and their average sits between them on every text."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from benchmarks.lm_fixtures import TEXTS, build_lm_fixtures, merge, perplexity_table  # noqa: E402

pytestmark = pytest.mark.slow  # trains three tiny models once per machine (cached by content hash)


def test_a_merge_of_two_fine_tunes_lies_between_them_on_each_text(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fixtures = build_lm_fixtures(log=lambda _line: None)
        models = {"licenses": fixtures.licenses, "docstrings": fixtures.docstrings,
                  "average": merge(fixtures, tmp_path / "average", "simple_average")}
        table = perplexity_table(models, fixtures.eval_texts, max_tokens=3000)
    finally:
        torch.set_num_threads(threads)
    assert table["licenses"]["licenses"] < table["docstrings"]["licenses"]
    assert table["docstrings"]["docstrings"] < table["licenses"]["docstrings"]
    for text in TEXTS:
        low, high = sorted((table["licenses"][text], table["docstrings"][text]))
        assert low < table["average"][text] < high, (text, table)
