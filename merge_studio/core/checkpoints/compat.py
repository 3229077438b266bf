"""Do these checkpoints fit together? Which keys are missing, which shapes differ.

Computed from headers only (names, shapes, dtypes), so it is instant even for
huge models; the checkpoint list shows it as badges and tooltips, the CLI and
the inspector print :meth:`CompatibilityReport.lines`. Findings that need the data
(NaN or infinite values, from :func:`merge_studio.core.finite.scan_checkpoint`) are
passed in when a caller has scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.errors import MergeStudioError

MAX_LISTED = 5


def _listed(keys: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" … and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def unique_names(names: Sequence[str]) -> list[str]:
    """Make display names unique: ``["a", "a"]`` -> ``["a", "a (2)"]``."""
    seen: dict[str, int] = {}
    out: list[str] = []
    taken = set(names)
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        candidate = name
        while count > 1 and (candidate == name or candidate in taken):
            candidate = f"{name} ({count})"
            count += 1
        taken.add(candidate)
        out.append(candidate)
    return out


@dataclass(frozen=True)
class CompatibilityReport:
    """How a set of checkpoints lines up, tensor by tensor.

    ``ok`` is true when every checkpoint has every key with the same shape.
    Dtype differences are reported but do not make it false (merging casts).
    """

    model_names: list[str]
    all_keys: list[str]  # union, in first-seen order
    common_keys: list[str]  # in every checkpoint, in first-seen order
    missing: dict[str, list[str]]  # model -> keys others have but it lacks (every model listed)
    shape_mismatches: dict[str, dict[str, tuple[int, ...]]]  # key -> model -> shape
    dtype_mismatches: dict[str, dict[str, str]]  # key -> model -> dtype name
    non_finite: dict[str, list[Any]] = field(default_factory=dict)  # model -> [NonFinite] (scanned ones)
    # key -> how the vocabularies differ, for embedding/output rows the merge can line up by token
    vocabulary: dict[str, str] = field(default_factory=dict)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        ok = not self.shape_mismatches and not any(self.missing.values()) and not any(self.non_finite.values())
        object.__setattr__(self, "ok", ok)

    def extra_keys(self, model: str) -> list[str]:
        """Keys this model has that at least one other lacks."""
        lacking = {k for m, keys in self.missing.items() if m != model for k in keys}
        mine = set(self.missing.get(model, []))
        common = set(self.common_keys)
        return [k for k in self.all_keys if k in lacking and k not in mine and k not in common]

    def issues_for(self, model: str) -> list[str]:
        """Short sentences about one model, for a badge tooltip (empty when it fits)."""
        if model not in self.missing:
            raise KeyError(f"no model named {model!r} in this report")
        issues: list[str] = []
        missing = self.missing[model]
        if missing:
            issues.append(f"lacks {len(missing)} tensor{'s' * (len(missing) != 1)} the others have: "
                          f"{_listed(missing)}")
        extra = self.extra_keys(model)
        if extra:
            issues.append(f"has {len(extra)} tensor{'s' * (len(extra) != 1)} some others lack: {_listed(extra)}")
        shapes = [(k, s) for k, s in self.shape_mismatches.items() if model in s]
        if shapes:
            parts = []
            for key, per_model in shapes[:MAX_LISTED]:
                others = sorted({_shape(v) for m, v in per_model.items() if m != model and v != per_model[model]})
                parts.append(f"{key!r} is {_shape(per_model[model])} here but {' or '.join(others)} elsewhere")
            more = f" … and {len(shapes) - MAX_LISTED} more" if len(shapes) > MAX_LISTED else ""
            issues.append(f"shape differs for {len(shapes)} tensor{'s' * (len(shapes) != 1)}: "
                          + "; ".join(parts) + more)
        bad = self.non_finite.get(model) or []
        if bad:
            issues.append(_non_finite_line(model, bad))
        if self.vocabulary:
            issues.append(f"vocabulary differs: {next(iter(self.vocabulary.values()))}")
        dtypes = [(k, d) for k, d in self.dtype_mismatches.items() if model in d]
        if dtypes:
            parts = [f"{k!r} is {d[model]} here" for k, d in dtypes[:MAX_LISTED]]
            more = f" … and {len(dtypes) - MAX_LISTED} more" if len(dtypes) > MAX_LISTED else ""
            issues.append(f"dtype differs for {len(dtypes)} tensor{'s' * (len(dtypes) != 1)} "
                          f"(they are cast when merged): " + "; ".join(parts) + more)
        return issues

    def lines(self) -> list[str]:
        """A readable report, one finding a line."""
        n = len(self.model_names)
        verdict = "compatible" if self.ok else "NOT compatible"
        out = [f"{n} checkpoint{'s' * (n != 1)}, {len(self.all_keys)} tensor names in all, "
               f"{len(self.common_keys)} in every one: {verdict}"]
        for model, keys in self.missing.items():
            if keys:
                out.append(f"  {model} lacks {len(keys)}: {_listed(keys)}")
        for key, per_model in list(self.shape_mismatches.items())[:20]:
            out.append(f"  shape of {key!r}: " + ", ".join(f"{m} {_shape(s)}" for m, s in per_model.items()))
        if len(self.shape_mismatches) > 20:
            out.append(f"  … and {len(self.shape_mismatches) - 20} more shape mismatches")
        if self.vocabulary:
            out.append(f"  vocabulary ({', '.join(self.vocabulary)}): {next(iter(self.vocabulary.values()))}")
        for key, per_model in list(self.dtype_mismatches.items())[:20]:
            out.append(f"  dtype of {key!r}: " + ", ".join(f"{m} {d}" for m, d in per_model.items())
                       + " (cast when merged)")
        if len(self.dtype_mismatches) > 20:
            out.append(f"  … and {len(self.dtype_mismatches) - 20} more dtype differences")
        for model, bad in self.non_finite.items():
            if bad:
                out.append(f"  {_non_finite_line(model, bad)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (shapes as lists)."""
        return {
            "ok": self.ok,
            "model_names": list(self.model_names),
            "all_keys": list(self.all_keys),
            "common_keys": list(self.common_keys),
            "missing": {m: list(k) for m, k in self.missing.items()},
            "shape_mismatches": {k: {m: list(s) for m, s in v.items()} for k, v in self.shape_mismatches.items()},
            "dtype_mismatches": {k: dict(v) for k, v in self.dtype_mismatches.items()},
            "non_finite": {m: [{"name": b.name, "nan": b.nan, "inf": b.inf} for b in v]
                           for m, v in self.non_finite.items() if v},
            "vocabulary": dict(self.vocabulary),
        }


def _non_finite_line(model: str, bad: Sequence[Any]) -> str:
    shown = ", ".join(b.describe() for b in bad[:MAX_LISTED])
    more = f" … and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return f"{model} holds NaN or infinite values: {shown}{more}"


def check_compatibility(
    checkpoints: Sequence[Checkpoint],
    names: Sequence[str] | None = None,
    non_finite: dict[str, list[Any]] | None = None,
) -> CompatibilityReport:
    """Compare the tensor names, shapes and dtypes of ``checkpoints`` (headers only).

    ``names`` label the models in the report (default: the checkpoints' names),
    made unique when two are equal. ``non_finite`` maps a checkpoint's name to the
    tensors a value scan found holding NaN or infinity.
    """
    if names is not None and len(names) != len(checkpoints):
        raise ValueError(f"{len(names)} names given for {len(checkpoints)} checkpoints")
    labels = unique_names(list(names) if names is not None else [ck.name for ck in checkpoints])
    infos = [ck.infos for ck in checkpoints]
    all_keys: dict[str, None] = {}
    for table in infos:
        all_keys.update(dict.fromkeys(table))
    common = [k for k in all_keys if all(k in table for table in infos)]
    missing = {label: [k for k in all_keys if k not in table] for label, table in zip(labels, infos)}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    dtypes: dict[str, dict[str, str]] = {}
    for key in all_keys:
        present = [(label, table[key]) for label, table in zip(labels, infos) if key in table]
        if len({info.shape for _, info in present}) > 1:
            shapes[key] = {label: info.shape for label, info in present}
        if len({info.dtype_name for _, info in present}) > 1:
            dtypes[key] = {label: info.dtype_name for label, info in present}
    vocabulary = _vocabulary_differences(checkpoints, labels, shapes)
    for key in vocabulary:
        shapes.pop(key, None)
    by_label = {label: (non_finite or {}).get(ck.name, []) for label, ck in zip(labels, checkpoints)}
    return CompatibilityReport(labels, list(all_keys), common, missing, shapes, dtypes,
                               {m: list(v) for m, v in by_label.items() if v}, vocabulary)


def _vocabulary_differences(
    checkpoints: Sequence[Checkpoint], labels: Sequence[str], shapes: dict[str, dict[str, tuple[int, ...]]]
) -> dict[str, str]:
    """Embedding/output rows that differ only in number (added tokens), said in words.

    Only for Hugging Face folders, whose config says which tensors are indexed by the
    vocabulary; the merge lines them up by token (base vocabulary or union).
    """
    if not shapes or not any(len({s[1:] for s in per.values()}) == 1 for per in shapes.values()):
        return {}
    from merge_studio.core.hf.vocabulary import vocabulary_differences

    try:
        found = vocabulary_differences([str(ck.path) for ck in checkpoints], checkpoints, labels)
    except MergeStudioError:  # an unreadable config or tokenizer: the plain shape report stands
        return {}
    return {k: v for k, v in found.items() if k in shapes}
