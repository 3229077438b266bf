"""`merge-studio merge` on Hugging Face folders: a model folder out, tokenizer source and chat template flags."""

from __future__ import annotations

import json

import pytest

from merge_studio.cli.main import main


def test_the_tokenizer_flags_give_the_union_and_the_template(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_folder

    a = make_hf_folder(tmp_path / "a", seed=1)
    b = make_hf_folder(tmp_path / "b", seed=2, added_tokens=("<|im_start|>", "<|im_end|>"))
    out = tmp_path / "merged"
    code = main(["merge", "--method", "slerp", str(a), str(b), "--param", "t=0.5", "--tokenizer-source", "union",
                 "--chat-template", "chatml", "--save-recipe", str(tmp_path / "r.yaml"), "-o", str(out), "-q"])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 322
    assert "<|im_start|>assistant" in (out / "chat_template.jinja").read_text()
    assert "tokenizer: {source: union, chat_template: chatml}" in (tmp_path / "r.yaml").read_text()
