"""The tokenizer operations that need transformers: a union of vocabularies, added tokens.

transformers knows how each tokenizer class writes its added tokens (special or not,
stripping rules) for the version installed, so the union is built by loading the base
tokenizer, adding the other models' tokens and saving it again, rather than by editing
its JSON. Imported only when such a tokenizer is asked for.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge_studio.core.hf.tokenizer_files import TokenizerFiles, read_tokenizer_files, write_tokenizer_files
from merge_studio.errors import CheckpointError, MissingExtraError


def require_transformers(feature: str) -> Any:
    """The transformers module, or an error naming the ``hf`` extra."""
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(feature, "transformers", "hf") from None
    return transformers


def _load(folder: Path, feature: str) -> Any:
    transformers = require_transformers(feature)
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), use_fast=True, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a bad folder
        raise CheckpointError(f"cannot load the tokenizer in {folder}: {exc}") from exc


def _load_files(files: Mapping[str, bytes], feature: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="merge-studio-tok-") as tmp:
        write_tokenizer_files(Path(tmp), files)
        return _load(Path(tmp), feature)


def _saved(tokenizer: Any) -> TokenizerFiles:
    with tempfile.TemporaryDirectory(prefix="merge-studio-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return read_tokenizer_files(Path(tmp))


def vocab_via_transformers(folder: Path) -> dict[str, int] | None:
    """The vocabulary of a tokenizer without ``tokenizer.json`` (SentencePiece), when transformers is there."""
    try:
        require_transformers("reading a SentencePiece tokenizer")
    except MissingExtraError:
        return None
    return dict(_load(folder, "reading a tokenizer").get_vocab())


@dataclass(frozen=True)
class TokenizerInput:
    """One model's tokenizer for a union: its folder and how many embedding rows it has."""

    folder: Path
    rows: int


def union_tokenizer(base: TokenizerFiles, others: Sequence[TokenizerInput]) -> TokenizerFiles:
    """The base tokenizer plus every token another model has an embedding row for.

    Tokens are appended in a fixed order: each model in turn (base first), its plain
    tokens by id, then every added token (chat markers and other specials) by id, keeping
    the settings the first model gave it.
    """
    feature = "a union of the models' tokenizers"
    result = _load_files(base, feature)
    known = set(result.get_vocab())
    plain: list[str] = []
    specials: dict[str, Any] = {}
    for item in others:
        tok = _load(item.folder, feature)
        decoder = {i: t for i, t in tok.added_tokens_decoder.items() if i < item.rows}
        added_contents = {t.content for t in tok.added_tokens_decoder.values()}
        for token, idx in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
            if idx < item.rows and token not in added_contents and token not in known and token not in plain:
                plain.append(token)
        for _, info in sorted(decoder.items()):
            specials.setdefault(info.content, info)
    plain = [t for t in plain if t not in specials]
    if plain:
        result.add_tokens(plain)
    fresh = [info for content, info in specials.items() if content not in set(result.get_vocab())]
    if fresh:
        result.add_tokens(fresh)
    return _saved(result)


def with_added_tokens(files: TokenizerFiles, tokens: Sequence[str]) -> TokenizerFiles:
    """The tokenizer with ``tokens`` appended (those it lacks), for tokens a recipe gives rows to."""
    tok = _load_files(files, "adding tokens to the tokenizer")
    missing = [t for t in tokens if t not in tok.get_vocab()]
    if not missing:
        return dict(files)
    tok.add_tokens(missing)
    return _saved(tok)
