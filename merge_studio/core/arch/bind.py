"""Strict state-dict binding that explains a mismatch by naming keys.

Two things a saved checkpoint legitimately differs in from ``module.state_dict()``:
tied tensors (an output head sharing the embedding matrix is saved once, under
either name) and non-persistent buffers (rotary caches, causal masks) that older
exporters still wrote. Both are accepted; everything else must match by name and shape.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from merge_studio.errors import ArchitectureError

_SHOWN = 8


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def tied_names(module: nn.Module) -> dict[str, str]:
    """State-dict names that hold the same tensor as an earlier name (``lm_head.weight`` → embeddings)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[name] = first[id(tensor)]
        else:
            first[id(tensor)] = name
    return aliases


def transient_buffers(module: nn.Module) -> set[str]:
    """Buffers the module keeps out of its state dict (non-persistent: rotary caches, masks)."""
    wanted = module.state_dict(keep_vars=True).keys()
    return {name for name, _ in module.named_buffers() if name not in wanted}


def state_dict_mismatch(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """A sentence naming missing, unexpected and mis-shaped keys, or ``None`` when they fit.

    ``num_batches_tracked`` may be missing: it is bookkeeping, not a weight. A tied
    tensor needs only one of its names; non-persistent buffers in the checkpoint (by
    name, or by leaf name where a cache moved between library versions) are ignored.
    """
    wanted = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    aliases = tied_names(module)
    groups: dict[str, set[str]] = {}
    for alias, canonical in aliases.items():
        groups.setdefault(canonical, {canonical}).add(alias)
        groups[alias] = groups[canonical]
    transient = transient_buffers(module)
    transient_leaves = {name.rpartition(".")[2] for name in transient}  # caches moved between versions
    missing = [
        k for k in wanted
        if k not in state_dict and not k.endswith("num_batches_tracked")
        and not any(other in state_dict for other in groups.get(k, ()))
    ]
    unexpected = [
        k for k in state_dict
        if k not in wanted and k not in transient and k.rpartition(".")[2] not in transient_leaves
    ]
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


def _set_tensor(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, attr, tensor)


def bind_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, arch: str = "", assign: bool | None = None
) -> nn.Module:
    """Load ``state_dict`` into ``module`` strictly; raise :class:`ArchitectureError` naming keys.

    ``assign=True`` makes the given tensors the module's (no copy, their dtype kept);
    by default only a module on the meta device is assigned to.
    """
    problem = state_dict_mismatch(module, state_dict)
    if problem:
        raise ArchitectureError(
            f"checkpoint does not fit architecture {arch or type(module).__name__}: {problem}",
            hint="pick the architecture the checkpoint was trained with, or adjust its arguments "
            "(e.g. zoo:resnet20?width=2)",
        )
    aliases = tied_names(module)
    wanted = module.state_dict(keep_vars=True).keys()
    if assign is None:
        assign = any(t.is_meta for t in module.state_dict().values())
    module.load_state_dict({k: v for k, v in state_dict.items() if k in wanted}, strict=False, assign=assign)
    # Loading replaces (assign) or fills one name of a tied pair; point every name at one tensor again.
    for alias, canonical in aliases.items():
        source = canonical if canonical in state_dict or alias not in state_dict else alias
        target = alias if source == canonical else canonical
        _set_tensor(module, target, module.state_dict(keep_vars=True)[source])
    return module
