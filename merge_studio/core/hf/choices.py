"""The tokenizer sources a front end offers for a list of models (the window's Output ▸ Tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence

from merge_studio.core.hf.config import model_folder


def tokenizer_choices(models: Sequence[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """``(label, recipe value)`` pairs for ``(name, path)`` models; empty when none is a Hugging Face folder.

    The value goes into the recipe's ``tokenizer.source``; ``None`` is the default (the
    base model's tokenizer, rows re-ordered only when the vocabularies differ in size).
    """
    folders = [(name, path) for name, path in models if model_folder(path) is not None]
    if not folders:
        return []
    choices: list[tuple[str, str | None]] = [
        ("Base model's", None),
        ("Union of all models' tokens", "union"),
    ]
    seen: set[str] = set()
    for name, path in folders:
        if path not in seen:
            seen.add(path)
            choices.append((f"From {name}", path))
    return choices
