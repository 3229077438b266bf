"""The recipe's ``tokenizer`` section: which vocabulary and tokenizer the output gets.

Kept free of heavy imports (pydantic only) because the recipe imports it. The shape
follows mergekit's ``tokenizer:`` section so configs translate one to one:

.. code-block:: yaml

    tokenizer:
      source: union            # base | union | the path of an input model (unset: see below)
      tokens:                  # optional: where particular tokens' rows come from
        <|im_start|>: {source: /models/chat, force: true}
        <|pad|>: {source: {kind: zero}}
      pad_to_multiple_of: 64   # optional: round the vocabulary rows up
      chat_template: chatml    # optional: a template name, "auto", or Jinja text

A recipe may also say ``tokenizer: union`` (the source alone). Without a source the
output gets the base model's tokenizer, and the rows are re-ordered to it only when
the models' vocabularies differ in size (mergekit's behaviour without
``tokenizer_source``, except that it crops to the smallest vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SPECIAL_SOURCES = ("base", "union")


class TokenRowSource(BaseModel):
    """A row taken from a given token of a given model (mergekit's ``model_token``), or zeros."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["model_token", "zero"]
    model: str | None = None
    token_id: int | None = Field(None, ge=0)
    token: str | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> TokenRowSource:
        if self.kind == "model_token":
            if not self.model:
                raise ValueError("a model_token source names its model")
            if (self.token_id is None) == (self.token is None):
                raise ValueError("a model_token source gives exactly one of token_id or token")
        return self


class TokenSettings(BaseModel):
    """Where one token's row comes from; ``force`` uses it even for models that have the token."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | TokenRowSource | None = None
    force: bool = False


class TokenizerSettings(BaseModel):
    """The output vocabulary and tokenizer (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(
        None,
        description="base, union, or the path of one of the input models; unset: the base's tokenizer, "
        "and rows re-ordered only when the models' vocabularies differ in size",
    )
    tokens: dict[str, TokenSettings] = Field(default_factory=dict)
    pad_to_multiple_of: int | None = Field(None, ge=1)
    chat_template: str | None = Field(None, description="a template name (chatml, llama3, mistral, alpaca, auto) or Jinja text")

    @model_validator(mode="before")
    @classmethod
    def _bare_source(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _non_empty_source(self) -> TokenizerSettings:
        if self.source is not None and not self.source.strip():
            raise ValueError("tokenizer source is empty; use base, union or a model path")
        if self.chat_template is not None:
            from merge_studio.core.hf.chat_templates import check_chat_template

            check_chat_template(self.chat_template)
        return self

    @property
    def source_model(self) -> str | None:
        """The model path when the source is one model, else None."""
        return None if self.source is None or self.source in SPECIAL_SOURCES else self.source

    @property
    def reorders_rows(self) -> bool:
        """Whether rows are matched token by token even when the vocabularies have the same size.

        As in mergekit: naming a source, tokens or padding asks for it; a chat template alone does not.
        """
        return self.source is not None or bool(self.tokens) or self.pad_to_multiple_of is not None

    def model_paths(self) -> list[str]:
        """Every model path this section names (they must be inputs of the merge)."""
        paths = [self.source] if self.source_model else []
        for tok in self.tokens.values():
            src = tok.source
            if isinstance(src, str):
                paths.append(src)
            elif isinstance(src, TokenRowSource) and src.model:
                paths.append(src.model)
        return paths

    def with_paths(self, fix: Callable[[str], str]) -> TokenizerSettings:
        """A copy whose model paths went through ``fix`` (made absolute against a recipe's folder)."""
        tokens: dict[str, TokenSettings] = {}
        for name, tok in self.tokens.items():
            src = tok.source
            if isinstance(src, str):
                src = fix(src)
            elif isinstance(src, TokenRowSource) and src.model:
                src = src.model_copy(update={"model": fix(src.model)})
            tokens[name] = tok.model_copy(update={"source": src})
        source = fix(self.source) if self.source_model else self.source
        return self.model_copy(update={"source": source, "tokens": tokens})

    def to_data(self) -> str | dict[str, Any]:
        """The shortest YAML form: the bare source when nothing else is set."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        if set(data) == {"source"}:
            return data["source"]
        return data
