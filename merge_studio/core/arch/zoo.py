"""The built-in zoo: small models for the demo and tests, recognisable from tensor shapes.

Each entry builds its model from keyword arguments, makes an example input of the
right shape, and can guess its keyword arguments back from a state dict's names and
shapes (``infer``). A guess is only accepted after building the model on the meta
device and comparing every name and shape, so recognition never binds the wrong
model. Arguments that change no shape (attention heads) cannot be read back and
keep their defaults; our own files record the full spec in metadata instead.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from merge_studio.core.arch.zoo_transformers import GPT, ViT
from merge_studio.core.arch.zoo_vision import MLP, VGG, ResNet20

Shapes = Mapping[str, tuple[int, ...]]
EXAMPLE_SEED = 0


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: how to build it, feed it, and recognise its state dict."""

    name: str
    description: str
    builder: Callable[..., nn.Module]
    make_input: Callable[[dict[str, Any], int], torch.Tensor]
    infer: Callable[[Shapes], dict[str, Any] | None]

    @property
    def defaults(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults."""
        return {
            name: p.default
            for name, p in inspect.signature(self.builder).parameters.items()
            if p.default is not inspect.Parameter.empty
        }

    def resolve(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``kwargs``; unknown names are an error for the caller to report."""
        return {**self.defaults, **kwargs}

    def example_input(self, kwargs: Mapping[str, Any], batch_size: int = 2) -> torch.Tensor:
        """A deterministic input of the right shape and dtype for this model."""
        return self.make_input(self.resolve(kwargs), batch_size)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(EXAMPLE_SEED)


def _image_input(kw: dict[str, Any], batch: int) -> torch.Tensor:
    side = int(kw.get("image_size", 8))
    return torch.rand(batch, int(kw["in_channels"]), side, side, generator=_generator())


def _vector_input(kw: dict[str, Any], batch: int) -> torch.Tensor:
    return torch.rand(batch, int(kw["in_features"]), generator=_generator())


def _token_input(kw: dict[str, Any], batch: int) -> torch.Tensor:
    return torch.randint(0, int(kw["vocab_size"]), (batch, int(kw["block_size"])), generator=_generator())


def _indices(shapes: Shapes, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (e.g. block numbers) over all names."""
    found = {int(m.group(1)) for name in shapes if (m := re.fullmatch(pattern, name))}
    return sorted(found)


def _infer_mlp(shapes: Shapes) -> dict[str, Any] | None:
    layers = _indices(shapes, r"hidden\.(\d+)\.weight")
    if not layers or "head.weight" not in shapes:
        return None
    widths = [shapes[f"hidden.{i}.weight"][0] for i in layers]
    return {
        "in_features": shapes["hidden.0.weight"][1],
        "hidden": ",".join(map(str, widths)),
        "num_classes": shapes["head.weight"][0],
    }


def _infer_vgg(shapes: Shapes) -> dict[str, Any] | None:
    blocks = _indices(shapes, r"blocks\.(\d+)\.conv\.weight")
    if not blocks or "head.weight" not in shapes:
        return None
    widths = [shapes[f"blocks.{i}.conv.weight"][0] for i in blocks]
    flat = shapes["head.weight"][1]
    side = math.isqrt(flat // widths[-1])
    return {
        "in_channels": shapes["blocks.0.conv.weight"][1],
        "widths": ",".join(map(str, widths)),
        "num_classes": shapes["head.weight"][0],
        "image_size": side * 2 ** len(widths),
    }


def _infer_resnet20(shapes: Shapes) -> dict[str, Any] | None:
    if "conv1.weight" not in shapes or "fc.weight" not in shapes:
        return None
    stem = shapes["conv1.weight"]
    if len(stem) != 4 or stem[0] % 16:
        return None
    return {
        "width": stem[0] // 16,
        "in_channels": stem[1],
        "num_classes": shapes["fc.weight"][0],
        "blocks": len(_indices(shapes, r"layer1\.(\d+)\.conv1\.weight")) or 3,
    }


def _infer_vit(shapes: Shapes) -> dict[str, Any] | None:
    if "patch_embed.weight" not in shapes or "pos_embed" not in shapes or "head.weight" not in shapes:
        return None
    dim, in_channels, patch, _ = shapes["patch_embed.weight"]
    tokens = shapes["pos_embed"][1] - 1
    depth = len(_indices(shapes, r"blocks\.(\d+)\.ln1\.weight"))
    mlp_hidden = shapes.get("blocks.0.mlp.fc1.weight", (dim * 2,))[0]
    return {
        "image_size": math.isqrt(tokens) * patch,
        "patch": patch,
        "in_channels": in_channels,
        "dim": dim,
        "depth": depth,
        "mlp_ratio": mlp_hidden // dim,
        "num_classes": shapes["head.weight"][0],
    }


def _infer_gpt(shapes: Shapes) -> dict[str, Any] | None:
    if "tok_emb.weight" not in shapes or "pos_emb.weight" not in shapes:
        return None
    vocab, d_model = shapes["tok_emb.weight"]
    mlp_hidden = shapes.get("blocks.0.mlp.fc1.weight", (d_model * 4,))[0]
    return {
        "vocab_size": vocab,
        "block_size": shapes["pos_emb.weight"][0],
        "d_model": d_model,
        "n_layer": len(_indices(shapes, r"blocks\.(\d+)\.ln1\.weight")),
        "mlp_ratio": mlp_hidden // d_model,
    }


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry(
            "mlp",
            "MLP for 64-feature vectors (flattened 8×8 digits): 64-512-512-512-10 with ReLU",
            MLP,
            _vector_input,
            _infer_mlp,
        ),
        ZooEntry(
            "vgg",
            "VGG-style CNN: Conv-BatchNorm-ReLU-MaxPool blocks (widths=32,64,128), Linear head",
            VGG,
            _image_input,
            _infer_vgg,
        ),
        ZooEntry(
            "resnet20",
            "CIFAR-style ResNet-20: 3 stages × 3 BasicBlocks with BatchNorm; width multiplier (16 × width)",
            ResNet20,
            _image_input,
            _infer_resnet20,
        ),
        ZooEntry(
            "vit",
            "Small ViT for 8×8 images: Conv2d patches, cls token, learned positions, pre-LN blocks",
            ViT,
            _image_input,
            _infer_vit,
        ),
        ZooEntry(
            "gpt",
            "Small GPT-style decoder: token+position embeddings, causal pre-LN blocks, lm head",
            GPT,
            _token_input,
            _infer_gpt,
        ),
    )
}


def expected_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a module's state dict (works on the meta device)."""
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def recognise(shapes: Shapes) -> tuple[str, dict[str, Any]] | None:
    """The zoo entry and keyword arguments whose state dict matches ``shapes`` exactly, if any.

    ``num_batches_tracked`` buffers may be absent (some exporters drop them).
    """
    observed = {k: tuple(v) for k, v in shapes.items()}
    for entry in ZOO.values():
        try:
            kwargs = entry.infer(observed)
        except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError):
            continue
        if kwargs is None:
            continue
        try:
            with torch.device("meta"):
                module = entry.builder(**kwargs)
        except (ValueError, TypeError, RuntimeError):
            continue
        wanted = expected_shapes(module)
        optional = {k for k in wanted if k.endswith("num_batches_tracked")}
        if {k: v for k, v in wanted.items() if k not in optional or k in observed} == observed:
            return entry.name, kwargs
    return None
