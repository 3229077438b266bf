"""Strict state-dict binding that explains a mismatch by naming keys."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from merge_studio.errors import ArchitectureError

_SHOWN = 8


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def state_dict_mismatch(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """A sentence naming missing, unexpected and mis-shaped keys, or ``None`` when they fit.

    ``num_batches_tracked`` may be missing: it is bookkeeping, not a weight.
    """
    wanted = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    missing = [k for k in wanted if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in wanted]
    mis_shaped = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {wanted[k]})"
        for k in wanted
        if k in state_dict and tuple(state_dict[k].shape) != wanted[k]
    ]
    parts = []
    if missing:
        parts.append(f"missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_listing(unexpected)}")
    if mis_shaped:
        parts.append(f"different shapes: {_listing(mis_shaped)}")
    return "; ".join(parts) or None


def bind_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, arch: str = "") -> nn.Module:
    """Load ``state_dict`` into ``module`` strictly; raise :class:`ArchitectureError` naming keys."""
    problem = state_dict_mismatch(module, state_dict)
    if problem:
        raise ArchitectureError(
            f"checkpoint does not fit architecture {arch or type(module).__name__}: {problem}",
            hint="pick the architecture the checkpoint was trained with, or adjust its arguments "
            "(e.g. zoo:resnet20?width=2)",
        )
    on_meta = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict(dict(state_dict), strict=False, assign=on_meta)
    return module
