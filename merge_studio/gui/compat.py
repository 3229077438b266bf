"""Compatibility of the loaded models, for badges and the inspector's report.

Uses the core's ``check_compatibility`` when it is available; until then (or if
it fails) compares names, shapes and dtypes from the lazily read headers here,
which is all the model list needs for its badges.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from merge_studio.gui.session import LoadedModel

MAX_LISTED = 6


@dataclass(frozen=True)
class CompatSummary:
    """Per-row problems (by model id) and a readable report for the whole list."""

    issues: dict[int, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.issues.values())


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" … and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def check_models(models: Sequence[LoadedModel], base_id: int | None = None) -> CompatSummary:
    """Compare every ready model with the others; only the odd ones get issues (the majority, or else the
    base, sets what is normal), each naming its tensors."""
    ready = [m for m in models if m.status == "ready" and m.checkpoint is not None and not m.is_adapter]
    if len(ready) < 2:
        return CompatSummary({m.id: [] for m in ready}, ["Load two or more models to compare them."])
    try:
        from merge_studio.core.checkpoints.compat import check_compatibility, unique_names
    except ImportError:
        return _compare_headers(ready)
    names = unique_names([m.name for m in ready])
    non_finite = {m.checkpoint.name: m.non_finite for m in ready if m.non_finite}  # type: ignore[union-attr]
    report = check_compatibility([m.checkpoint for m in ready], names, non_finite=non_finite)
    from merge_studio.core.checkpoints.odd_ones import odd_models

    reference = next((name for m, name in zip(ready, names, strict=True) if m.id == base_id), None)
    odd = odd_models(names, report.all_keys, report.missing, report.shape_mismatches, reference)
    issues: dict[int, list[str]] = {}
    for m, name in zip(ready, names, strict=True):
        reasons = list(odd.get(name, []))
        if report.non_finite.get(name):
            reasons += [line for line in report.issues_for(name) if "NaN or infinite" in line]
        issues[m.id] = reasons
    return CompatSummary(issues, list(report.lines()))


def _compare_headers(ready: Sequence[LoadedModel]) -> CompatSummary:
    infos = {m.id: m.checkpoint.infos for m in ready}  # type: ignore[union-attr]
    all_keys: list[str] = []
    seen: set[str] = set()
    for m in ready:
        for k in infos[m.id]:
            if k not in seen:
                seen.add(k)
                all_keys.append(k)
    issues: dict[int, list[str]] = {m.id: [] for m in ready}
    lines: list[str] = []
    for m in ready:
        mine = infos[m.id]
        missing = [k for k in all_keys if k not in mine]
        if missing:
            issues[m.id].append(f"lacks {len(missing)} tensor(s) the others have: {_listed(missing)}")
            lines.append(f"{m.name}: missing {len(missing)} tensor(s): {_listed(missing)}")
    shape_bad: list[str] = []
    dtype_bad: list[str] = []
    for key in all_keys:
        present = [(m, infos[m.id][key]) for m in ready if key in infos[m.id]]
        shapes = {i.shape for _, i in present}
        dtypes = {i.dtype_name for _, i in present}
        if len(shapes) > 1:
            shape_bad.append(key)
            detail = ", ".join(f"{m.name} {tuple(i.shape)}" for m, i in present)
            lines.append(f"shape differs for {key}: {detail}")
            for m, _ in present:
                if len(issues[m.id]) < 8:
                    issues[m.id].append(f"shape of {key} differs from the other models")
        if len(dtypes) > 1:
            dtype_bad.append(key)
    if dtype_bad:
        lines.append(
            f"{len(dtype_bad)} tensor(s) differ in dtype (they are cast to the compute dtype, "
            f"so this is only a note): {_listed(dtype_bad)}"
        )
    if not lines:
        lines.append(f"All {len(ready)} models have the same {len(all_keys)} tensor names, shapes and dtypes.")
    elif not shape_bad and not any(issues.values()):
        lines.insert(0, "Names and shapes match.")
    return CompatSummary(issues, lines)
