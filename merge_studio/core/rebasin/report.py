"""The permutation report (JSON) and the metadata an aligned checkpoint carries.

The report says, for every group, which tensors it reorders, the permutation
found, the share of units moved, and, for the whole alignment, the objective after
each sweep, the largest output difference the check measured, and every point the
spec could not permute. The inspection view and ``merge-studio align --report``
both read it; :func:`spec_from_report` rebuilds the spec from it.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from merge_studio.core.rebasin.matching import MatchingResult, moved_fraction
from merge_studio.core.rebasin.spec import PermutationSpec
from merge_studio.errors import OutputError, RecipeError

REPORT_FORMAT = "merge_studio.permutation_report"
REPORT_VERSION = 1
PERMUTATION_METADATA_KEY = "merge_studio.permutation"


def build_report(
    spec: PermutationSpec,
    result: MatchingResult,
    *,
    arch: str | None = None,
    models: tuple[str, ...] = ("A", "B"),
    max_output_difference: float | None = None,
    tolerance: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything about one alignment, as plain JSON-ready values."""
    groups = []
    for g in spec.groups:
        perm = torch.as_tensor(result.perms.get(g.name, torch.arange(g.size)))
        groups.append({**g.to_json(), "perm": [int(i) for i in perm.tolist()], "moved_fraction": moved_fraction(perm)})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "arch": arch,
        "models": list(models),
        "groups": groups,
        "unpermuted": [p.to_json() for p in spec.unpermuted],
        "blocked": {k: list(v) for k, v in spec.blocked.items()},
        "initial_objective": _finite(result.initial_objective),
        "objective_per_sweep": [_finite(v) for v in result.objective],
        "sweeps": result.sweeps,
        "converged": result.converged,
        "seed": result.seed,
        "restarts": result.restarts,
        "best_seed": result.best_seed,
        "seconds": round(result.seconds, 4),
        "max_output_difference": _finite(max_output_difference),
        "tolerance": tolerance,
        "method": result.method,
    }
    if result.method == "activation":
        report["correlation"] = dict(result.correlation)
        report["matched_by_weights"] = list(result.by_weights)
    if extra:
        report.update(extra)
    return report


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def perms_from_report(report: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {g["name"]: torch.tensor(g["perm"], dtype=torch.long) for g in report.get("groups", [])}


def spec_from_report(report: Mapping[str, Any]) -> PermutationSpec:
    return PermutationSpec.from_json(dict(report))


def permutation_metadata(report: Mapping[str, Any]) -> dict[str, str]:
    """Safetensors metadata: the permutation of every group (and the architecture)."""
    compact = {
        "groups": {g["name"]: g["perm"] for g in report.get("groups", [])},
        "moved_fraction": {g["name"]: round(g["moved_fraction"], 4) for g in report.get("groups", [])},
        "unpermuted": [p["node"] for p in report.get("unpermuted", [])],
        "sweeps": report.get("sweeps"),
        "seed": report.get("seed"),
        "max_output_difference": report.get("max_output_difference"),
    }
    meta = {PERMUTATION_METADATA_KEY: json.dumps(compact, separators=(",", ":"))}
    if report.get("arch"):
        meta["merge_studio.arch"] = str(report["arch"])
    return meta


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write the report atomically (temporary file beside it, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the permutation report {target}: {exc.strerror or exc}") from exc
    return target


def read_report(path: str | Path) -> dict[str, Any]:
    """Read a report written by :func:`write_report`; anything else is a :class:`RecipeError`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise RecipeError(f"cannot read the permutation report {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise RecipeError(f"{path} is not a Merge Studio permutation report", hint="give the JSON written by 'align --report'")
    return data


def layer_of(tensor: str) -> str:
    """The module path owning a tensor (``layer1.0.conv1.weight`` -> ``layer1.0.conv1``)."""
    return tensor.rsplit(".", 1)[0] if "." in tensor else tensor


def layer_fractions(report: Mapping[str, Any]) -> dict[str, float]:
    """Per layer, the share of its output units that moved (or of its input units when its
    outputs are fixed); layers the spec could not permute are ``nan``."""
    out_frac: dict[str, float] = {}
    any_frac: dict[str, list[float]] = {}
    for g in report.get("groups", []):
        for m in g["members"]:
            layer = layer_of(m["tensor"])
            any_frac.setdefault(layer, []).append(g["moved_fraction"])
            if m["axis"] == 0 and m["offset"] == 0 and layer not in out_frac:
                out_frac[layer] = g["moved_fraction"]
    values = {layer: out_frac.get(layer, max(fr)) for layer, fr in any_frac.items()}
    for layer in blocked_layers(report):
        if layer not in out_frac:
            values[layer] = math.nan
    return values


def blocked_layers(report: Mapping[str, Any]) -> dict[str, list[str]]:
    """Layers with a tensor kept in place by an unpermutable point, with the reasons."""
    out: dict[str, list[str]] = {}
    for tensor, reasons in report.get("blocked", {}).items():
        layer = layer_of(tensor)
        out.setdefault(layer, [])
        out[layer].extend(r for r in reasons if r not in out[layer])
    return out
