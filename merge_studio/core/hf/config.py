"""A model folder's ``config.json``: find it, read it safely, patch it for the output.

Which tensors are indexed by the vocabulary is decided here, from the config: the
vocabulary size it declares (``vocab_size``, or ``text_config.vocab_size`` for
vision-language models such as LLaVA) and the module names transformers gives token
embeddings and output heads (``embed_tokens``, ``lm_head``, ``wte``, ...). Tied
embeddings need nothing special: a tied model simply has no separate head tensor.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from merge_studio.errors import CheckpointError

CONFIG_NAME = "config.json"
MAX_JSON_BYTES = 32_000_000
# Module names that hold one row (or one output) per token, across the families
# transformers ships: Llama/Mistral/Qwen/Gemma/Phi (embed_tokens, lm_head), GPT-2
# (wte), BERT/BLOOM (word_embeddings), GPT-NeoX (embed_in, embed_out), Meta's
# original Llama layout (tok_embeddings, output), T5 (shared).
VOCAB_MODULES = frozenset(
    {"embed_tokens", "lm_head", "wte", "word_embeddings", "embed_in", "embed_out", "tok_embeddings", "output", "shared"}
)
# Where configs keep the vocabulary size, most common first.
_VOCAB_PATHS: tuple[tuple[str, ...], ...] = (("vocab_size",), ("text_config", "vocab_size"), ("padded_vocab_size",))


def model_folder(path: str | Path) -> Path | None:
    """The Hugging Face folder a checkpoint path belongs to (a ``config.json`` beside it), else None."""
    p = Path(path).expanduser()
    folder = p if p.is_dir() else p.parent
    return folder if (folder / CONFIG_NAME).is_file() else None


def read_json_file(path: Path, what: str = "file") -> dict[str, Any]:
    """Parse a small JSON object from disk; a damaged file is a :class:`CheckpointError`."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path.name} is {size} bytes, too large for a {what}")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not a valid JSON {what} ({exc})") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object, so not a {what}")
    return data


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's ``config.json`` as a dict."""
    return read_json_file(Path(folder) / CONFIG_NAME, "model config")


def vocab_size_path(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The key path holding the vocabulary size (``("text_config", "vocab_size")`` for LLaVA)."""
    for path in _VOCAB_PATHS:
        node: Any = config
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, int) and not isinstance(node, bool) and node > 0:
            return path
    return None


def config_vocab_size(config: Mapping[str, Any]) -> int | None:
    path = vocab_size_path(config)
    if path is None:
        return None
    node: Any = config
    for key in path:
        node = node[key]
    return int(node)


def is_vocab_tensor(name: str, shape: Sequence[int], vocab_size: int | None) -> bool:
    """Whether a tensor has one row per token: an embedding or output module, rows = vocabulary."""
    parts = name.split(".")
    if len(parts) < 2 or parts[-1] not in ("weight", "bias") or parts[-2] not in VOCAB_MODULES or not shape:
        return False
    if parts[-1] == "weight" and len(shape) != 2:
        return False
    if parts[-2] == "output" and len(parts) > 2:  # "attention.output.dense" is not a head
        return False
    return vocab_size is None or shape[0] == vocab_size


def vocab_tensors(shapes: Mapping[str, Sequence[int]], config: Mapping[str, Any]) -> list[str]:
    """The names among ``shapes`` that are indexed by the vocabulary, in order."""
    size = config_vocab_size(config)
    return [n for n, s in shapes.items() if is_vocab_tensor(n, s, size)]


def _set_path(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def deep_update(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``overrides`` into ``data`` (nested mappings merged key by key; ``None`` removes a key)."""
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(data.get(key), dict):
            deep_update(data[key], value)
        else:
            data[key] = copy.deepcopy(value)
    return data


def patched_config(
    config: Mapping[str, Any],
    *,
    dtype: str | None = None,
    vocab_size: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The output's config: the source config with its dtype, vocabulary size and overrides set.

    Both ``torch_dtype`` (transformers 4) and ``dtype`` (transformers 5) are written so
    either version loads the weights in the precision they were saved in.
    """
    out = copy.deepcopy(dict(config))
    if dtype is not None:
        out["torch_dtype"] = dtype
        out["dtype"] = dtype
    if vocab_size is not None:
        _set_path(out, vocab_size_path(out) or ("vocab_size",), int(vocab_size))
    if overrides:
        deep_update(out, overrides)
    return out


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON the way transformers does (indented, sorted keys, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
