"""Where a model comes from: the zoo, user factories, ``.pt2`` programs and Hugging Face
configs, in one spelling.

``build_module("zoo:resnet20?width=2", state_dict)`` gives a bound ``nn.Module``;
``example_input(spec)`` something to feed it; ``detect_arch(checkpoint)`` the spec a
checkpoint was saved with (metadata key ``merge_studio.arch``), the ``hf:`` folder its
``config.json`` describes, or the zoo entry its tensor names and shapes match.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from merge_studio.core.arch.bind import bind_state_dict, state_dict_mismatch, tied_names
from merge_studio.core.arch.spec import EXPECTED_FORMS, ArchSpec, parse_arch
from merge_studio.core.arch.zoo import ZOO, ZooEntry, recognise
from merge_studio.errors import ArchitectureError

ARCH_METADATA_KEY = "merge_studio.arch"

__all__ = [
    "ARCH_METADATA_KEY",
    "EXPECTED_FORMS",
    "ZOO",
    "ArchSpec",
    "ZooEntry",
    "arch_metadata",
    "bind_state_dict",
    "build_module",
    "detect_arch",
    "example_input",
    "parse_arch",
    "state_dict_mismatch",
    "tied_names",
]


def zoo_entry(spec: ArchSpec) -> ZooEntry:
    """The zoo entry a ``zoo:`` spec names, with its keyword arguments checked."""
    entry = ZOO.get(spec.target)
    if entry is None:
        raise ArchitectureError(
            f"the zoo has no model {spec.target!r}", hint=f"zoo models: {', '.join(sorted(ZOO))}"
        )
    unknown = sorted(set(spec.kwargs) - set(entry.defaults))
    if unknown:
        accepted = ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
        raise ArchitectureError(
            f"zoo:{spec.target} does not take {', '.join(unknown)}", hint=f"it accepts {accepted}"
        )
    return entry


def _device_context(device: str | torch.device | None) -> contextlib.AbstractContextManager[Any]:
    return torch.device(device) if device is not None else contextlib.nullcontext()


def build_module(
    spec: str | ArchSpec,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | torch.device | None = None,
    init_weights: bool | None = None,
) -> nn.Module:
    """Build the model a spec names, optionally binding a state dict strictly.

    ``init_weights=False`` skips random initialisation where the builder allows it
    (Hugging Face models: seconds saved on big ones) for weights about to be
    overwritten; by default it is skipped exactly when a state dict is given.

    ``device="meta"`` builds without allocating memory (for graph tracing of big
    models). ``.pt2`` programs are loaded as saved and ignore ``device``. A state dict
    that does not fit raises :class:`ArchitectureError` naming the keys.
    """
    parsed = parse_arch(spec)
    if parsed.kind == "hf":
        from merge_studio.core.arch.hf import build_hf_module

        initialise = state_dict is None if init_weights is None else init_weights
        module = build_hf_module(parsed, device=device, initialise=initialise)
    elif parsed.kind == "zoo":
        entry = zoo_entry(parsed)
        try:
            with _device_context(device):
                module = entry.builder(**parsed.kwargs)
        except (ValueError, TypeError) as exc:
            raise ArchitectureError(f"cannot build {parsed}: {exc}") from exc
    elif parsed.kind == "pt2":
        from merge_studio.core.arch.export import program_module

        module = program_module(parsed.target)
    else:
        from merge_studio.core.arch.factory import call_factory

        with _device_context(device):
            module, _ = call_factory(parsed, parsed.kwargs)
    if state_dict is not None:
        bind_state_dict(module, state_dict, arch=str(parsed))
    return module


def example_input(spec: str | ArchSpec, batch_size: int = 2) -> torch.Tensor | tuple[Any, ...] | dict[str, Any]:
    """A deterministic input the model accepts (digits images, 64-vectors, token ids...).

    Hugging Face models get keyword arguments (``input_ids``, a causal mask, ``use_cache``).
    """
    parsed = parse_arch(spec)
    if parsed.kind == "zoo":
        return zoo_entry(parsed).example_input(parsed.kwargs, batch_size)
    if parsed.kind == "hf":
        from merge_studio.core.arch.hf import hf_example_input

        return hf_example_input(parsed, batch_size)
    if parsed.kind == "pt2":
        from merge_studio.core.arch.export import program_example_input

        return program_example_input(parsed.target)
    from merge_studio.core.arch.factory import factory_example_input

    return factory_example_input(parsed, parsed.kwargs, batch_size)


def arch_metadata(spec: str | ArchSpec) -> dict[str, str]:
    """Metadata to store in a saved file so :func:`detect_arch` finds its architecture."""
    return {ARCH_METADATA_KEY: str(parse_arch(spec))}


def _shapes(source: Any) -> dict[str, tuple[int, ...]]:
    infos = source.infos if hasattr(source, "infos") else source
    return {name: tuple(getattr(value, "shape", value)) for name, value in infos.items()}


def detect_arch(checkpoint: Any) -> str | None:
    """The architecture spec of a checkpoint, or ``None`` when nothing fits.

    Accepts a :class:`~merge_studio.core.checkpoints.Checkpoint` or a mapping of
    names to tensors/shapes. Order: the ``merge_studio.arch`` metadata key, a
    ``.pt2`` file's own program, a Hugging Face folder's ``config.json`` (``hf:FOLDER``,
    found without importing transformers), then zoo recognition by names and shapes
    (which returns every inferred argument, e.g. ``zoo:resnet20?width=2&in_channels=1&...``).
    """
    metadata = getattr(checkpoint, "metadata", None) or {}
    recorded = metadata.get(ARCH_METADATA_KEY)
    if recorded:
        try:
            return str(parse_arch(recorded))
        except ArchitectureError:
            pass  # a foreign or damaged value: fall back to recognition
    path = getattr(checkpoint, "path", None)
    if path is not None and str(path).lower().endswith(".pt2"):
        return str(path)
    if path is not None:
        from merge_studio.core.arch.hf import hf_spec_for

        found_hf = hf_spec_for(path)
        if found_hf is not None:
            return found_hf
    found = recognise(_shapes(checkpoint))
    if found is None:
        return None
    name, kwargs = found
    return str(ArchSpec("zoo", name, None, kwargs))
