"""What the data-aware whole-model methods (Fisher, RegMean, AdaMerging) share: the
architecture, one module per checkpoint, and the data each model is shown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from merge_studio.core.lazy_torch import nn, torch
from merge_studio.core.methods.spec import ModelJobContext
from merge_studio.errors import MethodError


def resolve_arch(checkpoints: Sequence[Any], ctx: ModelJobContext, label: str) -> str:
    """The recipe's architecture, else the one the first checkpoint's metadata names."""
    arch = ctx.arch
    if arch is None:
        from merge_studio.core.arch import detect_arch

        arch = detect_arch(checkpoints[0])
    if arch is None:
        raise MethodError(
            f"{label} needs the architecture of {checkpoints[0].name}",
            hint="choose one (e.g. zoo:mlp) in the window or give --arch / 'arch:' in the recipe",
        )
    return arch


def module_for(arch: str, state: Mapping[str, torch.Tensor], device: torch.device) -> nn.Module:
    """A float32 module holding ``state`` on ``device``, in eval mode."""
    from merge_studio.core.arch import build_module

    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return build_module(arch, floats).to(device).eval()


def data_for(ctx: ModelJobContext, source: str, module: nn.Module) -> Any:
    """The :class:`EvalData` one model is shown: the recipe's data, or with ``source`` this
    model's own (a file or factory; the other data settings are the recipe's)."""
    from merge_studio.core.evaluate.data import DataSpec, load_data

    raw = dict(ctx.data or {})
    if source.strip():
        raw["source"] = source.strip()
    return load_data(DataSpec.model_validate(raw), for_module=module)


def data_source_field_description(what: str) -> str:
    return (
        f"This model's own data ({what}): a .safetensors/.pt/.npz file or 'file.py:make_dataset'. "
        "Empty: the recipe's data."
    )
