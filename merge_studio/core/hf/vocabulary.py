"""The output's vocabulary: which tokenizer it gets and how each model's rows line up with it.

``tokenizer.source`` chooses (as mergekit's ``tokenizer_source``):

* ``base`` (the default): the base model's tokenizer (the first model's without a base),
  cut to the rows its embedding has; other models' extra rows are dropped;
* ``union``: the base tokenizer plus every token another model has a row for; new rows
  come from the model that has them, or their mean where several do;
* a model path: that model's tokenizer.

When the recipe says nothing and every model has the same number of rows, nothing is
re-ordered (rows line up by index, as they always did) and the base's tokenizer files
are copied as they are. Rows are matched by token when the models carry tokenizers,
by index otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.hf.chat_templates import resolve_chat_template
from merge_studio.core.hf.config import config_vocab_size, is_vocab_tensor, model_folder, read_config
from merge_studio.core.hf.settings import TokenizerSettings
from merge_studio.core.hf.tokenizer_files import (
    TokenizerFiles,
    has_tokenizer,
    read_tokenizer_files,
    strip_vocab,
    vocab_from_files,
    with_chat_template,
)
from merge_studio.core.hf.vocab_rows import RowRemapper, check_rows, plan_rows
from merge_studio.errors import IncompatibleCheckpointsError, RecipeError

MAX_NAMED_TOKENS = 8


@dataclass
class VocabModel:
    """One input seen from the vocabulary's side."""

    path: str
    checkpoint: Checkpoint
    folder: Path | None
    config: dict[str, Any]
    vocab_names: list[str]
    rows: int | None
    _files: TokenizerFiles | None = None
    _vocab: dict[str, int] | None = None
    _vocab_read: bool = False

    @property
    def name(self) -> str:
        return self.checkpoint.name

    @property
    def files(self) -> TokenizerFiles:
        """Its tokenizer files (read when first needed: most merges need only the base's)."""
        if self._files is None:
            self._files = read_tokenizer_files(self.folder) if self.folder is not None else {}
        return self._files

    @property
    def vocab(self) -> dict[str, int] | None:
        """Token -> id from its tokenizer (None when it has none that can be read)."""
        if not self._vocab_read:
            self._vocab_read = True
            self._vocab = vocab_from_files(self.files)
            if self._vocab is None and has_tokenizer(self.files) and self.folder is not None:
                from merge_studio.core.hf.tokenizer_build import vocab_via_transformers

                self._vocab = vocab_via_transformers(self.folder)
        return self._vocab


def describe_model(path: str, ck: Checkpoint) -> VocabModel:
    """Read what the vocabulary needs from a model: config, vocabulary tensors, tokenizer files."""
    folder = model_folder(path)
    config = read_config(folder) if folder is not None else {}
    size = config_vocab_size(config)
    names = [n for n, info in ck.infos.items() if is_vocab_tensor(n, info.shape, size)]
    rows = ck.info(names[0]).shape[0] if names else None
    return VocabModel(path, ck, folder, config, names, rows)


@dataclass
class VocabularyPlan:
    """What the vocabulary decision means for the merge and the output folder."""

    remapper: RowRemapper | None  # None: rows pass through unchanged
    vocab_size: int | None  # the output config's vocabulary size (None: the source's)
    tokenizer: TokenizerFiles  # written into the output folder (empty: no tokenizer)
    summary: str

    def wrap(self, ck: Checkpoint) -> Checkpoint:
        if self.remapper is None or all(c is not ck for c in self.remapper.inputs):
            return ck
        return self.remapper.wrap(ck)


def _same(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return os.path.samefile(pa, pb)
    except OSError:
        return pa.resolve() == pb.resolve()


def _named(tokens: Sequence[str]) -> str:
    shown = ", ".join(tokens[:MAX_NAMED_TOKENS])
    return shown + (f" … and {len(tokens) - MAX_NAMED_TOKENS} more" if len(tokens) > MAX_NAMED_TOKENS else "")


def plan_vocabulary(
    settings: TokenizerSettings | None, models: Sequence[VocabModel], reference: int, base: int | None
) -> VocabularyPlan:
    """Choose the output tokenizer and line every model's rows up with it."""
    ref = models[reference]
    s = settings or TokenizerSettings()

    def input_of(path: str) -> int:
        folder = model_folder(path)
        for i, m in enumerate(models):
            if _same(m.path, path) or (folder is not None and m.folder is not None and _same(str(m.folder), str(folder))):
                return i
        names = ", ".join(m.name for m in models)
        raise RecipeError(f"tokenizer: {path} is not one of the merged models ({names})")

    source = input_of(s.source_model) if s.source_model else reference
    participants = [i for i, m in enumerate(models) if m.rows is not None]
    row_counts = {models[i].rows for i in participants}
    template = resolve_chat_template(s.chat_template, [m.folder for m in models if m.folder is not None])
    if not s.reorders_rows and len(row_counts) <= 1:
        files = dict(ref.files)
        return VocabularyPlan(None, None, with_chat_template(files, template) if template else files,
                              f"the tokenizer of {ref.name}")
    if not participants:
        files = dict(models[source].files)
        return VocabularyPlan(None, None, with_chat_template(files, template) if template else files,
                              f"the tokenizer of {models[source].name}")
    names = _shared_vocab_names([models[i] for i in participants])
    fallback = ref.vocab  # models without a tokenizer are read as having the base's
    out_vocab: dict[str, int] | int
    if s.source == "union":
        files, out_vocab, summary = _union(ref, [models[i] for i in participants])
    elif models[source].vocab is not None and models[source].rows is not None:
        chosen = models[source]
        files = dict(chosen.files) if s.source_model else strip_vocab(chosen.files, chosen.rows)
        out_vocab = vocab_from_files(files) or chosen.vocab or {}
        summary = f"the tokenizer of {chosen.name}"
    else:
        chosen = models[source]
        files, out_vocab = dict(chosen.files), chosen.rows or 0
        summary = f"the vocabulary rows of {chosen.name} (matched by index: no tokenizer to match tokens by)"
    missing = [t for t in s.tokens if isinstance(out_vocab, dict) and t not in out_vocab]
    if missing:
        from merge_studio.core.hf.tokenizer_build import with_added_tokens

        files = with_added_tokens(files, missing)
        out_vocab = vocab_from_files(files) or {}
    if template:
        files = with_chat_template(files, template)
    vocabs = [models[i].vocab or fallback for i in participants]
    plan = plan_rows(
        out_vocab,
        vocabs,
        [models[i].rows or 0 for i in participants],
        base=participants.index(base) if base is not None and base in participants else None,
        tokens=s.tokens,
        input_of=lambda p: participants.index(input_of(p)),
        names=[models[i].name for i in participants],
        pad_to_multiple_of=s.pad_to_multiple_of,
    )
    rows = [models[i].rows or 0 for i in participants]
    remapper = None if plan.is_identity(rows) else RowRemapper(plan, [models[i].checkpoint for i in participants], set(names))
    if plan.out_rows != plan.real_rows:
        summary += f", padded to {plan.out_rows} rows"
    return VocabularyPlan(remapper, plan.out_rows, files, summary)


def _shared_vocab_names(models: Sequence[VocabModel]) -> list[str]:
    names: list[str] = []
    for m in models:
        names += [n for n in m.vocab_names if n not in names]
    for name in names:
        lacking = [m.name for m in models if name not in m.checkpoint]
        if lacking:
            raise IncompatibleCheckpointsError(
                f"{name} is missing from {', '.join(lacking)}, so the vocabularies cannot be lined up",
                hint="merge models of the same architecture (tied and untied output heads do not mix)",
            )
        shapes = {m.name: m.checkpoint.info(name).shape for m in models}
        check_rows(name, shapes, {m.name: m.rows or 0 for m in models})
    return names


def _union(ref: VocabModel, models: Sequence[VocabModel]) -> tuple[TokenizerFiles, dict[str, int] | int, str]:
    if ref.vocab is None:
        rows = max(m.rows or 0 for m in models)
        return dict(ref.files), rows, f"the union of the vocabulary rows ({rows}, matched by index: no tokenizer)"
    from merge_studio.core.hf.tokenizer_build import TokenizerInput, union_tokenizer

    base_files = strip_vocab(ref.files, ref.rows or 0)
    others = [TokenizerInput(m.folder, m.rows or 0) for m in models if m.folder is not None and has_tokenizer(m.files)]
    files = union_tokenizer(base_files, others)
    vocab = vocab_from_files(files) or {}
    base_vocab = vocab_from_files(base_files) or {}
    new = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in base_vocab]
    summary = f"the union of the models' tokenizers ({len(vocab)} tokens"
    summary += f"; {len(new)} more than {ref.name}: {_named(new)})" if new else ")"
    return files, vocab, summary


def vocabulary_differences(paths: Sequence[str], checkpoints: Sequence[Checkpoint], labels: Sequence[str]) -> dict[str, str]:
    """In words, for each vocabulary tensor whose models differ only in rows, how their vocabularies differ.

    Returns ``{tensor name: sentence}``, e.g. "model B has 2 more tokens: <|im_start|>,
    <|im_end|>". Empty when the models are not Hugging Face folders or agree.
    """
    models = [describe_model(p, ck) for p, ck in zip(paths, checkpoints, strict=True)]
    with_rows = [(m, label) for m, label in zip(models, labels, strict=True) if m.rows is not None]
    if len({m.rows for m, _ in with_rows}) <= 1:
        return {}
    try:
        names = _shared_vocab_names([m for m, _ in with_rows])
    except IncompatibleCheckpointsError:
        return {}
    ref, ref_label = with_rows[0]
    parts: list[str] = []
    for m, label in with_rows[1:]:
        diff = (m.rows or 0) - (ref.rows or 0)
        if diff == 0:
            continue
        more, fewer = (m, ref) if diff > 0 else (ref, m)
        extra = _extra_tokens(more, fewer)
        who, other = (label, ref_label) if diff > 0 else (ref_label, label)
        sentence = f"{who} has {abs(diff)} more token{'s' * (abs(diff) != 1)} than {other}"
        parts.append(sentence + (f": {_named(extra)}" if extra else ""))
    text = "; ".join(parts) + " (vocabularies differ: the merge keeps the base's, or the union with tokenizer source 'union')"
    return {name: text for name in names}


def _extra_tokens(more: VocabModel, fewer: VocabModel) -> list[str]:
    if more.vocab is None:
        return []
    known = {t for t, i in (fewer.vocab or {}).items() if i < (fewer.rows or 0)}
    if fewer.vocab is None:  # no tokenizer to compare with: the tokens past its rows
        return [t for t, i in sorted(more.vocab.items(), key=lambda kv: kv[1]) if (fewer.rows or 0) <= i < (more.rows or 0)]
    return [t for t, i in sorted(more.vocab.items(), key=lambda kv: kv[1]) if i < (more.rows or 0) and t not in known]
