"""Tiny Hugging Face folders for the output-side tests (need the ``hf`` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hf_models import make_hf_folder

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


@pytest.fixture
def hf_folder(tmp_path: Path):
    """``hf_folder("a", family="llama", seed=1, added_tokens=(...))`` -> a model folder in tmp_path."""
    pytest.importorskip("transformers")

    def make(name: str, family: str = "llama", seed: int = 0, **kw) -> Path:
        return make_hf_folder(tmp_path / name, family, seed, **kw)

    return make
