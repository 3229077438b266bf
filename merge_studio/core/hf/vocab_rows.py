"""Line up the embedding and output rows of models whose vocabularies differ.

Before merging, each model's vocabulary-indexed tensors are re-ordered into the output
vocabulary: row ``i`` of every model then means the same token, and the method merges
them like any other tensor. A token a model lacks gets a stand-in row, chosen as
mergekit chooses it, so both tools give the same tensors:

* the row of the only model that has the token;
* the base model's row when several have it and the base is one of them;
* the mean of the rows of the models that have it otherwise;
* zeros when no model has it (a token added by name only).

A recipe may name a token's source (a model, another token of a model, or zeros) and
``force`` it, so that every model uses that row. Rows added to reach a multiple
(``pad_to_multiple_of``) get each model's mean row.

:class:`RemappedCheckpoint` presents a checkpoint with its rows re-ordered, lazily: the
engine, the methods and the writer see ordinary tensors of the output's shape.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.hf.settings import TokenRowSource, TokenSettings
from merge_studio.errors import IncompatibleCheckpointsError, RecipeError

ZERO = -2  # donor code: a row of zeros
MEAN = -3  # donor code: the mean of the models that have the token


@dataclass(frozen=True)
class RowPlan:
    """For each output row: each model's own row (or -1), and the stand-in when it has none."""

    real_rows: int
    out_rows: int
    perms: torch.Tensor  # (models, real_rows) long: the model's row for this output row, -1 if absent
    forced: torch.Tensor  # (real_rows,) bool: every model takes the stand-in
    donor: torch.Tensor  # (real_rows,) long: model index, ZERO or MEAN
    donor_row: torch.Tensor  # (real_rows,) long: the row to take from the donor

    def is_identity(self, rows: Sequence[int]) -> bool:
        """Nothing to do: every model already has exactly these rows in this order."""
        if any(r != self.out_rows for r in rows) or self.out_rows != self.real_rows or bool(self.forced.any()):
            return False
        ids = torch.arange(self.real_rows)
        return all(bool(torch.equal(p, ids)) for p in self.perms)

    def remap(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each model's tensor in the output's row order (its own dtype kept)."""
        real = self.real_rows
        needs = ((self.perms < 0).any(0) | self.forced).nonzero().flatten()
        row_shape = tuple(tensors[0].shape[1:])
        stand_in = torch.zeros((len(needs), *row_shape), dtype=torch.float32)
        if len(needs):
            donor, donor_row = self.donor[needs], self.donor_row[needs]
            for m, t in enumerate(tensors):
                take = (donor == m).nonzero().flatten()
                if len(take):
                    stand_in[take] = t[donor_row[take]].float()
            mean_at = (donor == MEAN).nonzero().flatten()
            if len(mean_at):
                total = torch.zeros((len(mean_at), *row_shape), dtype=torch.float32)
                count = torch.zeros(len(mean_at), dtype=torch.float32)
                for m, t in enumerate(tensors):
                    src = self.perms[m, needs[mean_at]]
                    have = (src >= 0).nonzero().flatten()
                    total[have] += t[src[have]].float()
                    count[have] += 1
                stand_in[mean_at] = total / count.clamp(min=1).reshape(-1, *([1] * len(row_shape)))
        slot = torch.full((real,), -1, dtype=torch.long)
        slot[needs] = torch.arange(len(needs))
        out: list[torch.Tensor] = []
        ids = torch.arange(real)
        for m, t in enumerate(tensors):
            rows = torch.empty((self.out_rows, *row_shape), dtype=t.dtype)
            own = (self.perms[m] >= 0) & ~self.forced
            # The rows a model keeps in place (usually all but the added tokens) are one slice copy.
            in_place = own & (self.perms[m] == ids)
            keep = int(in_place.int().cumprod(0).sum())
            rows[:keep] = t[:keep]
            at = own[keep:].nonzero().flatten() + keep
            rows[at] = t[self.perms[m, at]]
            other = (~own).nonzero().flatten()
            rows[other] = stand_in[slot[other]].to(t.dtype)
            if self.out_rows > real:
                rows[real:] = rows[:real].float().mean(0).to(t.dtype)
            out.append(rows)
        return out


def _pad(rows: int, multiple: int | None) -> int:
    return rows if not multiple or rows % multiple == 0 else (rows // multiple + 1) * multiple


def plan_rows(
    out_vocab: Mapping[str, int] | int,
    vocabs: Sequence[Mapping[str, int] | None],
    rows: Sequence[int],
    *,
    base: int | None,
    tokens: Mapping[str, TokenSettings] | None = None,
    input_of: Callable[[str], int] | None = None,
    names: Sequence[str] = (),
    pad_to_multiple_of: int | None = None,
) -> RowPlan:
    """Decide every output row.

    ``out_vocab`` is the output tokenizer's token -> id, or a row count when the models
    have no tokenizers (rows then line up by index). ``vocabs``/``rows`` describe each
    model (``None``: no tokenizer, read as the output's order by index); ``base`` is the
    base model's index when the merge has one; ``input_of`` turns a model path in
    ``tokens`` into an index.
    """
    n_models = len(rows)
    if isinstance(out_vocab, int):
        real = out_vocab
        ids = torch.arange(real)
        perms = torch.stack([torch.where(ids < r, ids, -1) for r in rows])
        by_id: list[str | None] = [None] * real
    else:
        real = max([len(out_vocab), *(i + 1 for i in out_vocab.values())])
        by_id = [None] * real
        for tok, i in out_vocab.items():
            by_id[i] = tok
        table = []
        for vocab, r in zip(vocabs, rows, strict=True):
            own = out_vocab if vocab is None else vocab
            row = [-1] * real
            for tok, i in out_vocab.items():
                j = own.get(tok, -1)
                row[i] = j if j < r else -1
            table.append(row)
        perms = torch.tensor(table, dtype=torch.long).reshape(n_models, real)
    present = perms >= 0
    count = present.sum(0)
    first = present.float().argmax(0)
    donor = torch.full((real,), MEAN, dtype=torch.long)
    donor_row = torch.zeros(real, dtype=torch.long)
    single = count == 1
    donor[single] = first[single]
    donor[count == 0] = ZERO
    if base is not None:
        from_base = (count > 1) & present[base]
        donor[from_base] = base
    pick = donor >= 0
    donor_row[pick] = perms[donor[pick], pick.nonzero().flatten()]
    forced = torch.zeros(real, dtype=torch.bool)
    for token, setting in (tokens or {}).items():
        if isinstance(out_vocab, int) or token not in out_vocab:
            raise RecipeError(f"tokenizer.tokens: {token!r} is not in the output vocabulary")
        i = out_vocab[token]
        _apply_token(token, i, setting, perms, vocabs, rows, donor, donor_row, input_of, names)
        forced[i] = setting.force
    return RowPlan(real, _pad(real, pad_to_multiple_of), perms, forced, donor, donor_row)


def _apply_token(token, i, setting: TokenSettings, perms, vocabs, rows, donor, donor_row, input_of, names) -> None:
    src = setting.source
    if src is None:
        return
    if isinstance(src, TokenRowSource) and src.kind == "zero":
        donor[i] = ZERO
        return
    if input_of is None:
        raise RecipeError("tokenizer.tokens names models, but the merge has no model list to find them in")
    model_path = src if isinstance(src, str) else src.model
    m = input_of(str(model_path))
    label = names[m] if m < len(names) else str(model_path)
    if isinstance(src, str):
        row = int(perms[m, i])
        if row < 0:
            raise RecipeError(f"tokenizer.tokens: {token!r} takes its row from {label}, which does not have that token")
    elif src.token_id is not None:
        row = src.token_id
    else:
        vocab = vocabs[m] or {}
        if src.token not in vocab:
            raise RecipeError(f"tokenizer.tokens: {token!r} takes the row of {src.token!r} in {label}, which has no such token")
        row = vocab[str(src.token)]
    if not 0 <= row < rows[m]:
        raise RecipeError(f"tokenizer.tokens: row {row} for {token!r} is outside {label}'s {rows[m]} rows")
    donor[i] = m
    donor_row[i] = row


@dataclass
class _Remapped:
    lock: threading.Lock
    tensors: list[torch.Tensor] | None = None


class RowRemapper:
    """Re-orders one tensor of every model at once, and keeps the result for the next reads.

    The engine reads a tensor from each model (large tensors chunk by chunk, on several
    worker threads); the stand-in rows need the other models' rows, so all models'
    versions of a tensor are computed together, once, and kept for the reads that
    follow. The last :data:`KEEP` tensors are kept: the embedding and the output head
    are often neighbours in a file, so workers may be on both at the same time.
    """

    KEEP = 2

    def __init__(self, plan: RowPlan, inputs: Sequence[Checkpoint], names: set[str]) -> None:
        self.plan = plan
        self.inputs = list(inputs)
        self.names = names
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, _Remapped] = OrderedDict()

    def tensors(self, name: str) -> list[torch.Tensor]:
        with self._lock:
            entry = self._kept.get(name)
            if entry is None:
                entry = self._kept[name] = _Remapped(threading.Lock())
                while len(self._kept) > self.KEEP:
                    self._kept.popitem(last=False)
            else:
                self._kept.move_to_end(name)
        with entry.lock:  # one thread computes; the others wait for its result
            if entry.tensors is None:
                entry.tensors = self.plan.remap([ck.get_tensor(name) for ck in self.inputs])
            return entry.tensors

    def wrap(self, ck: Checkpoint) -> Checkpoint:
        index = next(i for i, c in enumerate(self.inputs) if c is ck)
        return RemappedCheckpoint(ck, self, index)


class RemappedCheckpoint(Checkpoint):
    """A checkpoint whose vocabulary-indexed tensors come in the output vocabulary's rows."""

    def __init__(self, inner: Checkpoint, remapper: RowRemapper, index: int) -> None:
        super().__init__(inner.path)
        self.inner = inner
        self.format = inner.format
        self.metadata = inner.metadata
        self.skipped = inner.skipped
        self._remapper = remapper
        self._index = index
        for name, info in inner.infos.items():
            if name in remapper.names:
                info = TensorInfo(name, (remapper.plan.out_rows, *info.shape[1:]), info.dtype)
            self._infos[name] = info

    @property
    def name(self) -> str:
        return self.inner.name

    def source_files(self) -> list:
        return self.inner.source_files()

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        if name not in self._remapper.names:
            return self.inner.get_tensor(name) if flat_range is None else self.inner.get_flat(name, *flat_range)
        full = self._remapper.tensors(name)[self._index]
        if flat_range is None:
            return full.clone()
        return full.reshape(-1)[flat_range[0] : flat_range[1]].clone()

    def close(self) -> None:
        self.inner.close()


def check_rows(name: str, shapes: Mapping[str, tuple[int, ...]], rows: Mapping[str, int]) -> None:
    """Every model's copy of a vocabulary tensor has its vocabulary's rows and the same row shape."""
    tails = {s[1:] for s in shapes.values()}
    bad = [m for m, s in shapes.items() if s[0] != rows[m]]
    if len(tails) > 1 or bad:
        detail = ", ".join(f"{m} {tuple(s)}" for m, s in shapes.items())
        raise IncompatibleCheckpointsError(
            f"{name}: the rows cannot be lined up by token ({detail})",
            hint="only the number of rows (tokens) may differ between the models",
        )
