"""Find the state dict inside what ``torch.save`` was given.

Training scripts save ``{"state_dict": ..., "epoch": 3, "optimizer": ...}``,
Lightning saves ``{"state_dict": ...}``, EMA trainers ``{"ema": ...}``, and
``nn.DataParallel`` puts ``module.`` in front of every name. A user wants the
weights, so we unwrap the usual containers, drop the ``module.`` prefix and list
what was skipped, so nothing disappears silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from merge_studio.errors import CheckpointError

# Looked for in this order when the top level holds no tensors itself.
WRAPPER_KEYS = (
    "state_dict",
    "model",
    "model_state_dict",
    "module",
    "ema",
    "ema_state_dict",
    "model_ema",
    "state_dict_ema",
    "net",
    "network",
    "params",
    "weights",
)
PARALLEL_PREFIX = "module."
MAX_DEPTH = 8


@dataclass
class Unwrapped:
    """The tensors found, where they came from and what was left out."""

    tensors: dict[str, torch.Tensor]
    wrapper: str = ""  # e.g. "state_dict" or "model.state_dict"; "" when top level
    stripped_prefix: str = ""
    skipped: list[str] = field(default_factory=list)  # "name (type)"


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"dict of {len(value)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _has_tensors(value: Any, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping) and depth < MAX_DEPTH:
        return any(_has_tensors(v, depth + 1) for v in value.values())
    return False


def _flatten(value: Mapping[Any, Any], prefix: str, out: Unwrapped, depth: int) -> None:
    """Collect tensors under dotted names; nested dicts of tensors become dotted paths."""
    for key, item in value.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str):
            out.skipped.append(f"{name} (key is {type(key).__name__}, not text)")
        elif isinstance(item, torch.Tensor):
            if name in out.tensors:
                raise CheckpointError(f"tensor name {name!r} appears twice once nested names are joined")
            out.tensors[name] = item
        elif isinstance(item, Mapping) and depth < MAX_DEPTH and _has_tensors(item, depth):
            _flatten(item, f"{name}.", out, depth + 1)
        else:
            out.skipped.append(f"{name} ({_describe(item)})")


def unwrap_state_dict(obj: Any, label: str) -> Unwrapped:
    """Return the tensors of a loaded object, or raise :class:`CheckpointError` saying why not."""
    if isinstance(obj, torch.Tensor):
        # A name-less tensor is not a model: merging it as "tensor" would silently pair
        # unrelated files (#16).
        raise CheckpointError(
            f"{label} holds a single tensor (shape {list(obj.shape)}, {str(obj.dtype).removeprefix('torch.')}), "
            "not a checkpoint: a checkpoint maps tensor names to tensors",
            hint="save model.state_dict() with torch.save, or convert the file to safetensors",
        )
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{label} holds a {_describe(obj)}, not a checkpoint: a checkpoint maps tensor names to tensors",
            hint="save model.state_dict() with torch.save, or convert the file to safetensors",
        )
    path: list[str] = []
    current: Mapping[Any, Any] = obj
    skipped: list[str] = []
    for _ in range(MAX_DEPTH):
        if any(isinstance(v, torch.Tensor) for v in current.values()):
            break
        inner = next(
            (k for k in WRAPPER_KEYS if isinstance(current.get(k), Mapping) and _has_tensors(current[k])),
            None,
        )
        if inner is None:
            break
        skipped += [f"{'.'.join([*path, str(k)])} ({_describe(v)})" for k, v in current.items() if k != inner]
        path.append(inner)
        current = current[inner]
    out = Unwrapped({}, wrapper=".".join(path))
    _flatten(current, "", out, 0)
    out.skipped = skipped + out.skipped
    if not out.tensors:
        what = ", ".join(out.skipped[:5]) or "nothing"
        raise CheckpointError(
            f"{label} holds no tensors (found: {what})",
            hint="save model.state_dict() with torch.save",
        )
    names = list(out.tensors)
    if all(n.startswith(PARALLEL_PREFIX) for n in names):
        out.tensors = {n[len(PARALLEL_PREFIX):]: t for n, t in out.tensors.items()}
        out.stripped_prefix = PARALLEL_PREFIX
    return out
