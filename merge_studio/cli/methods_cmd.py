"""``merge-studio methods list|describe``: what the declarations say, in a terminal."""

from __future__ import annotations

import argparse
import json
import textwrap
import typing
from typing import Any

from pydantic import BaseModel

from merge_studio.core.methods import get_method, list_methods
from merge_studio.core.methods.spec import MethodSpec, NoModelParams


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("methods", help="list merge methods or describe one")
    msub = parser.add_subparsers(dest="methods_command", metavar="ACTION", required=True)
    lst = msub.add_parser("list", help="list every merge method")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=run_list)
    desc = msub.add_parser("describe", help="explain a method and its parameters")
    desc.add_argument("name", help="method name, e.g. ties")
    desc.add_argument("--json", action="store_true", help="machine-readable output")
    desc.set_defaults(func=run_describe)


def field_rows(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One row per parameter: name (as written in recipes), type, default, bounds, description."""
    rows = []
    for fname, field in model.model_fields.items():
        bounds = {}
        for m in field.metadata:
            for attr in ("ge", "gt", "le", "lt"):
                if getattr(m, attr, None) is not None:
                    bounds[attr] = getattr(m, attr)
        ann = field.annotation
        choices = typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()
        if choices:
            type_name = "one of " + "|".join(str(c) for c in choices)
        else:
            type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        rows.append(
            {
                "name": field.alias or fname,
                "type": type_name,
                "default": None if field.is_required() else field.default,
                "required": field.is_required(),
                "bounds": bounds,
                "per_layer": extra.get("per_layer", True),
                "description": field.description or "",
            }
        )
    return rows


def _bounds_text(bounds: dict[str, Any]) -> str:
    lo = f"{bounds['ge']} ≤ " if "ge" in bounds else f"{bounds['gt']} < " if "gt" in bounds else ""
    hi = f" ≤ {bounds['le']}" if "le" in bounds else f" < {bounds['lt']}" if "lt" in bounds else ""
    return f"{lo}x{hi}" if (lo or hi) else ""


def describe(spec: MethodSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "label": spec.label,
        "family": spec.family,
        "description": spec.description,
        "details": spec.details,
        "reference": spec.reference,
        "models": {"min": spec.n_models[0], "max": spec.n_models[1]},
        "base": spec.base,
        "needs_arch": spec.needs_arch,
        "needs_data": spec.needs_data,
        "outputs": spec.outputs,
        "mergekit_name": spec.mergekit_name,
        "params": field_rows(spec.params),
        "model_params": [] if spec.model_params is NoModelParams else field_rows(spec.model_params),
    }


def run_list(args: argparse.Namespace) -> int:
    specs = list_methods()
    if args.json:
        print(json.dumps([{"name": s.name, "label": s.label, "family": s.family, "description": s.description} for s in specs], indent=2))
        return 0
    width = max(len(s.name) for s in specs)
    family = None
    for s in specs:
        if s.family != family:
            family = s.family
            print(f"\n{family}")
        print(f"  {s.name:<{width}}  {s.description}")
    print("\nRun 'merge-studio methods describe NAME' for parameters.")
    return 0


def _print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    if not rows:
        print("  (none)")
    for r in rows:
        default = "required" if r["required"] else f"default {r['default']!r}"
        bounds = _bounds_text(r["bounds"])
        print(f"  {r['name']} ({r['type']}, {default}{', ' + bounds if bounds else ''})")
        for line in textwrap.wrap(r["description"], 76):
            print(f"      {line}")


def run_describe(args: argparse.Namespace) -> int:
    spec = get_method(args.name)
    info = describe(spec)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    hi = spec.n_models[1]
    count = f"{spec.n_models[0]}" if hi == spec.n_models[0] else f"{spec.n_models[0]}+" if hi is None else f"{spec.n_models[0]}–{hi}"
    print(f"{spec.label} ({spec.name}) — {spec.family}")
    print(textwrap.fill(spec.description, 80))
    if spec.details:
        print()
        print(textwrap.fill(spec.details, 80))
    print(f"\nModels: {count}; base model: {spec.base}" + ("; needs an architecture" if spec.needs_arch else "") + ("; needs data" if spec.needs_data else ""))
    if spec.mergekit_name:
        print(f"mergekit name: {spec.mergekit_name}")
    if spec.reference:
        print(f"Reference: {spec.reference}")
    _print_rows("Parameters (params:)", info["params"])
    _print_rows("Per-model parameters (models[i].params:)", info["model_params"])
    print("\nNumeric parameters marked per-layer accept a list (interpolated over depth) or")
    print("[{filter: PATTERN, value: V}, ...] entries; see 'merge-studio merge --help'.")
    return 0
