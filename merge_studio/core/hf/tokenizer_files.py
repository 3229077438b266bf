"""Tokenizer files as bytes: copy them, read their vocabulary, cut it, set a chat template.

Everything here is plain JSON work, so choosing a tokenizer source, dropping tokens
beyond a model's embedding rows and setting a chat template need no optional library.
A tokenizer is held as ``{file name: bytes}`` from planning until it is written into
the output folder, so nothing is read twice and nothing half-done reaches the disk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from merge_studio.core.hf.chat_templates import TEMPLATE_FILE
from merge_studio.errors import CheckpointError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# What save_pretrained writes for a tokenizer (any version, any backend).
TOKENIZER_FILES = (
    TOKENIZER_JSON, TOKENIZER_CONFIG, "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", TEMPLATE_FILE,
    "chat_template.json",
)
MAX_FILE_BYTES = 256_000_000
TokenizerFiles = dict[str, bytes]


def read_tokenizer_files(folder: Path) -> TokenizerFiles:
    """The tokenizer files a model folder holds (empty when it has no tokenizer)."""
    files: TokenizerFiles = {}
    for name in TOKENIZER_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise CheckpointError(f"{path} is too large for a tokenizer file")
            files[name] = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return files


def has_tokenizer(files: Mapping[str, bytes]) -> bool:
    """Whether the files make a loadable tokenizer (not only a chat template)."""
    return any(n in files for n in (TOKENIZER_JSON, "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model"))


def _json(files: Mapping[str, bytes], name: str) -> dict[str, Any] | None:
    if name not in files:
        return None
    try:
        data = json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{name} is not valid JSON ({exc})") from exc
    return data if isinstance(data, dict) else None


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def vocab_from_files(files: Mapping[str, bytes]) -> dict[str, int] | None:
    """Token -> id, as ``tokenizer.get_vocab()`` gives it (model vocabulary plus added tokens).

    None when there is no ``tokenizer.json`` (a SentencePiece-only folder needs
    transformers to read; see :func:`merge_studio.core.hf.tokenizer_build.vocab_via_transformers`).
    """
    data = _json(files, TOKENIZER_JSON)
    if data is None:
        return None
    model = data.get("model") or {}
    raw = model.get("vocab")
    vocab: dict[str, int] = {}
    if isinstance(raw, dict):
        vocab = {str(k): int(v) for k, v in raw.items()}
    elif isinstance(raw, list):  # Unigram: [[piece, score], ...], the id is the position
        vocab = {str(entry[0]): i for i, entry in enumerate(raw) if isinstance(entry, list) and entry}
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and "content" in added and "id" in added:
            vocab[str(added["content"])] = int(added["id"])
    return vocab


def added_tokens(files: Mapping[str, bytes]) -> dict[int, str]:
    """Id -> content of the tokens added on top of the model vocabulary (specials included)."""
    data = _json(files, TOKENIZER_JSON) or {}
    return {int(a["id"]): str(a["content"]) for a in data.get("added_tokens") or [] if isinstance(a, dict)}


def strip_vocab(files: Mapping[str, bytes], rows: int) -> TokenizerFiles:
    """The tokenizer without the tokens whose ids are ``rows`` or more (no embedding row for them).

    Fine-tunes often ship a tokenizer listing placeholder tokens their embedding never
    grew to hold; those would point past the end of the merged embedding.
    """
    out = dict(files)
    data = _json(files, TOKENIZER_JSON)
    if data is None:
        return out
    dropped: set[str] = set()
    model = data.get("model") or {}
    raw = model.get("vocab")
    if isinstance(raw, dict):
        dropped |= {k for k, v in raw.items() if int(v) >= rows}
        model["vocab"] = {k: v for k, v in raw.items() if int(v) < rows}
    elif isinstance(raw, list):
        dropped |= {str(e[0]) for e in raw[rows:] if isinstance(e, list) and e}
        model["vocab"] = raw[:rows]
    added = data.get("added_tokens") or []
    dropped |= {str(a.get("content")) for a in added if isinstance(a, dict) and int(a.get("id", 0)) >= rows}
    data["added_tokens"] = [a for a in added if not (isinstance(a, dict) and int(a.get("id", 0)) >= rows)]
    if not dropped:
        return out
    if isinstance(model.get("merges"), list):
        model["merges"] = [m for m in model["merges"] if not _merge_touches(m, dropped)]
    out[TOKENIZER_JSON] = _dump(data)
    for name in (TOKENIZER_CONFIG, "special_tokens_map.json"):
        cfg = _json(files, name)
        if cfg is not None:
            out[name] = _dump(_without_tokens(cfg, dropped, rows))
    extra = _json(files, "added_tokens.json")
    if extra is not None:
        out["added_tokens.json"] = _dump({k: v for k, v in extra.items() if k not in dropped})
    return out


def _merge_touches(merge: Any, dropped: set[str]) -> bool:
    parts = merge.split(" ") if isinstance(merge, str) else list(merge) if isinstance(merge, list) else []
    return any(p in dropped for p in parts) or "".join(parts) in dropped


def _without_tokens(cfg: dict[str, Any], dropped: set[str], rows: int) -> dict[str, Any]:
    decoder = cfg.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if not (k.isdigit() and int(k) >= rows)}
    for key in ("additional_special_tokens", "extra_special_tokens"):
        listed = cfg.get(key)
        if isinstance(listed, list):
            cfg[key] = [t for t in listed if (t.get("content") if isinstance(t, dict) else t) not in dropped]
    return cfg


def with_chat_template(files: Mapping[str, bytes], template: str) -> TokenizerFiles:
    """Set the chat template: ``chat_template.jinja`` (read first by transformers), none left in the config."""
    out = dict(files)
    out[TEMPLATE_FILE] = template.encode("utf-8")
    cfg = _json(files, TOKENIZER_CONFIG)
    if cfg is not None and "chat_template" in cfg:
        cfg.pop("chat_template")
        out[TOKENIZER_CONFIG] = _dump(cfg)
    return out


def write_tokenizer_files(folder: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        (Path(folder) / name).write_bytes(data)
