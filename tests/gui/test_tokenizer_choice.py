"""Output ▸ Tokenizer: offered for Hugging Face folders, carried into the recipe and the merged folder."""

from __future__ import annotations

import pytest

from tests.gui.conftest import load_into
from tests.gui.test_merge_from_window import merge_and_wait


def test_the_tokenizer_row_appears_for_hf_folders_and_a_union_reaches_the_merged_folder(qtbot, window, tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_folder

    combo = window.method_panel.tokenizer_combo
    assert not combo.isVisibleTo(window)
    a = make_hf_folder(tmp_path / "llama-a", seed=1)
    b = make_hf_folder(tmp_path / "llama-chat", seed=2, added_tokens=("<|im_start|>", "<|im_end|>"))
    load_into(qtbot, window, [a, b])
    assert combo.isVisibleTo(window)
    assert not window.session.suggest_output().endswith(".safetensors")  # a folder, for a whole model
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert labels == ["Base model's", "Union of all models' tokens", "From llama-a", "From llama-chat"]
    combo.setCurrentIndex(combo.findData("union"))
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(tmp_path / "merged")
    assert window.session.to_recipe().tokenizer.source == "union"
    result = merge_and_wait(qtbot, window)
    assert result is not None
    assert "<|im_end|>" in (tmp_path / "merged" / "tokenizer.json").read_text()
    assert "union" in (tmp_path / "merged" / "README.md").read_text()
