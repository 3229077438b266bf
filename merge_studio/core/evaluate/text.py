"""Text data for causal language models: files of text cut into token windows.

A source is a plain text file, a folder of ``.txt`` files, or a JSONL file whose
lines are objects with a ``text`` field. Documents are tokenised with the model
folder's tokenizer (loaded from disk only; never from a hub), joined with the
end-of-text token, cut off at the token budget, and cut into windows of
``seq_len + 1`` tokens that overlap by one, so every token but the first is
predicted exactly once: inputs ``w[:-1]``, targets ``w[1:]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from merge_studio.errors import MergeStudioError

TEXT_SUFFIXES = (".txt", ".text", ".md", ".jsonl")
MAX_FILES = 10_000
CHARS_PER_TOKEN_BOUND = 16  # read at most this many characters per token of budget
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class TextDataError(MergeStudioError):
    """Text for evaluation cannot be read or tokenised."""


def is_text_source(source: str) -> bool:
    """A text file, a JSONL file or a folder (of ``.txt`` files)."""
    path = Path(source).expanduser()
    return path.suffix.lower() in TEXT_SUFFIXES or path.is_dir()


def _documents(source: Path) -> Iterator[str]:
    """The documents of a source, in a stable order."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.txt") if p.is_file())[:MAX_FILES]
        if not files:
            raise TextDataError(f"{source} holds no .txt files", hint="put the evaluation text in .txt files")
        for path in files:
            yield _read_text(path)
    elif source.suffix.lower() == ".jsonl":
        yield from _jsonl_texts(source)
    else:
        yield _read_text(source)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise TextDataError(f"text file {path} does not exist", hint="choose another file") from None
    except OSError as exc:
        raise TextDataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _jsonl_texts(path: Path) -> Iterator[str]:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise TextDataError(f"JSONL file {path} does not exist", hint="choose another file") from None
    except OSError as exc:
        raise TextDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise TextDataError(f"{path.name} line {number} is not JSON ({exc})",
                                    hint="write one JSON object per line, e.g. {\"text\": \"...\"}") from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                keys = ", ".join(sorted(record)) if isinstance(record, dict) else type(record).__name__
                raise TextDataError(f"{path.name} line {number} has no \"text\" string (it has: {keys})",
                                    hint="each line needs a \"text\" field")
            yield text


def load_tokenizer(location: str | Path) -> Any:
    """The tokenizer saved in a model folder (or a ``tokenizer.json``), read from disk only."""
    from merge_studio.core.arch.hf import require_transformers

    require_transformers("tokenising text for evaluation")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(location).expanduser()
    try:
        if path.is_file() and path.name.endswith(".json"):
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        if not path.is_dir() or not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise TextDataError(f"no tokenizer in {path}",
                                hint="text data is tokenised with a model folder's tokenizer; "
                                "evaluate Hugging Face folders or give the tokenizer's folder")
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except TextDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged tokenizer, in the library's words
        raise TextDataError(f"cannot load the tokenizer in {path}: {type(exc).__name__}: {exc}") from exc


def token_stream(source: str | Path, tokenizer: Any, max_tokens: int) -> torch.Tensor:
    """Up to ``max_tokens`` token ids of the source's documents, each ended by the end-of-text token."""
    path = Path(source).expanduser()
    if not path.exists():
        raise TextDataError(f"text data {path} does not exist", hint="choose a .txt file, a folder of them or a .jsonl")
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    char_budget = max_tokens * CHARS_PER_TOKEN_BOUND
    for text in _documents(path):
        if len(ids) >= max_tokens:
            break
        piece = text[:char_budget]
        ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
    if len(ids) < 2:
        raise TextDataError(f"{path.name} holds no text to evaluate on", hint="give a file with some text in it")
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def windows(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, ``(N, seq_len)`` each; a short text gives one shorter window."""
    if len(tokens) <= seq_len:
        return tokens[:-1].unsqueeze(0), tokens[1:].unsqueeze(0)
    count = (len(tokens) - 1) // seq_len
    starts = torch.arange(count) * seq_len
    index = starts.unsqueeze(1) + torch.arange(seq_len + 1).unsqueeze(0)
    chunks = tokens[index]
    return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()


def model_limits(module: Any) -> tuple[int | None, int | None]:
    """(vocabulary rows, longest sequence) of a module, where it says (transformers configs do)."""
    config = getattr(module, "config", None)
    positions = None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            positions = value
            break
    rows = None
    embeddings = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    if embeddings is not None and hasattr(embeddings, "num_embeddings"):
        rows = int(embeddings.num_embeddings)
    return rows, positions


def text_windows(
    source: str, tokenizer_location: str | None, *, seq_len: int, max_tokens: int, module: Any = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Windows of the source's tokens for ``module``: ``(inputs, targets, tokens read)``."""
    if not tokenizer_location:
        raise TextDataError(
            f"text data {Path(source).name} needs a tokenizer",
            hint="evaluate Hugging Face model folders (their tokenizer is used) or give --tokenizer FOLDER",
        )
    tokenizer = load_tokenizer(tokenizer_location)
    tokens = token_stream(source, tokenizer, max_tokens)
    rows, positions = model_limits(module) if module is not None else (None, None)
    if rows is not None and int(tokens.max()) >= rows:
        raise TextDataError(
            f"the tokenizer in {tokenizer_location} gives token id {int(tokens.max())}, "
            f"but the model has {rows} embedding rows",
            hint="use the tokenizer that belongs to these models",
        )
    length = min(seq_len, positions) if positions else seq_len
    inputs, targets = windows(tokens, length)
    return inputs, targets, len(tokens)
