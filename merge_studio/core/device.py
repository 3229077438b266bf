"""Choosing where to compute: ``auto`` means the GPU when there is one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else MPS, else CPU; explicit names are checked."""
    import torch  # here, so a window can paint before torch is loaded
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MergeStudioError(f"device {name!r} was asked for but no CUDA GPU is available", hint="use --device cpu or auto")
    return device


def describe_device(device: torch.device | str = "auto") -> str:
    """A short label for a status bar: ``CPU`` or ``NVIDIA H100 (71.2 GiB free)``."""
    import torch
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        try:
            free, _total = torch.cuda.mem_get_info(index)
            return f"{name} ({free / 2**30:.1f} GiB free)"
        except RuntimeError:
            return name
    return dev.type.upper()
