"""mergekit's tokenizer keys (``tokenizer_source``, ``tokenizer:``, ``chat_template``) in and out.

mergekit spells the same choices as our recipe's ``tokenizer`` section, spread over
three top-level keys; these two functions translate between them. Model references
go through ``resolve`` (a path relative to the config, or a Hugging Face hub id found
in the local cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from merge_studio.core.hf.settings import TokenizerSettings
from merge_studio.core.methods.layered import format_validation_error
from merge_studio.errors import RecipeError


def _model_ref(value: Any, where: str) -> Any:
    """mergekit allows ``{model: {path: X}}`` and ``{model: X}`` where a model is named."""
    if isinstance(value, Mapping) and "kind" not in value:
        inner = value.get("model", value.get("path"))
        if isinstance(inner, Mapping):
            inner = inner.get("path")
        if not isinstance(inner, str):
            raise RecipeError(f"{where}: expected a model path")
        return inner
    return value


def tokenizer_from_mergekit(
    data: Mapping[str, Any], source: str, resolve: Callable[[str], str] = str
) -> dict[str, Any] | None:
    """Our ``tokenizer`` section for a mergekit config (None when it has none)."""
    plain, section, template = data.get("tokenizer_source"), data.get("tokenizer"), data.get("chat_template")
    if plain is not None and section is not None:
        raise RecipeError(f"{source}: give tokenizer_source or a tokenizer: section, not both (mergekit refuses it too)")
    if plain is None and section is None and template is None:
        return None
    out: dict[str, Any] = {}
    if section is not None:
        if not isinstance(section, Mapping):
            raise RecipeError(f"{source}: tokenizer: expected a mapping (source, tokens, pad_to_multiple_of)")
        out["source"] = section.get("source", "union")  # mergekit's default for this section
        tokens = {}
        for name, tok in dict(section.get("tokens") or {}).items():
            tok = dict(tok or {})
            src = _model_ref(tok.get("source"), f"{source}: tokenizer.tokens.{name}")
            if isinstance(src, Mapping):
                src = dict(src)
                if src.get("model") is not None:
                    src["model"] = resolve(_model_ref(src["model"], f"{source}: tokenizer.tokens.{name}"))
            elif isinstance(src, str):
                src = resolve(src)
            tokens[str(name)] = {**tok, "source": src}
        if tokens:
            out["tokens"] = tokens
        if section.get("pad_to_multiple_of") is not None:
            out["pad_to_multiple_of"] = section["pad_to_multiple_of"]
    elif plain is not None:
        out["source"] = _model_ref(plain, f"{source}: tokenizer_source")
    if isinstance(out.get("source"), str) and out["source"] not in ("base", "union"):
        out["source"] = resolve(out["source"])
    if template is not None:
        out["chat_template"] = template
    try:
        TokenizerSettings.model_validate(out)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, f"{source}: tokenizer")) from None
    return out


def tokenizer_to_mergekit(settings: TokenizerSettings | None) -> dict[str, Any]:
    """The mergekit keys for our ``tokenizer`` section."""
    if settings is None:
        return {}
    out: dict[str, Any] = {}
    if settings.tokens or settings.pad_to_multiple_of is not None:
        section: dict[str, Any] = {"source": settings.source or "base"}
        if settings.tokens:
            section["tokens"] = {
                name: tok.model_dump(mode="json", exclude_defaults=True) for name, tok in settings.tokens.items()
            }
        if settings.pad_to_multiple_of is not None:
            section["pad_to_multiple_of"] = settings.pad_to_multiple_of
        out["tokenizer"] = section
    elif settings.source is not None:
        out["tokenizer_source"] = settings.source
    if settings.chat_template is not None:
        out["chat_template"] = settings.chat_template
    return out
