"""Stable Diffusion single-file checkpoints (SD 1.x, 2.x, SDXL): parts, blocks and labels.

The blocks are the ones supermerger and the A1111 merge-block-weighted extension
weight: ``BASE``, ``IN00``…, ``M00``, ``OUT00``… — 26 for SD 1.x/2.x (twelve
input and twelve output blocks), 20 for SDXL (nine and nine). A tensor's block
follows those tools' rule: ``input_blocks.N`` is INnn, ``middle_block`` is M00,
``output_blocks.N`` is OUTnn, the time embedding (and SDXL's class embedding)
counts as IN00, the final norm and convolution (``out.``) as the last OUT block,
and everything outside the UNet's blocks — text encoder(s), VAE, the rest — is
BASE.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from merge_studio.core.naming.base import LayerNaming, Part, register_naming

_BLOCK = re.compile(r"(?:^|\.)(input_blocks|middle_block|output_blocks)\.(\d+)\.")
_SUB = re.compile(r"^(input_blocks|output_blocks)\.(\d+)$")
TEXT_ENCODER_LABELS = {
    "cond_stage_model.transformer": "CLIP ViT-L",
    "cond_stage_model.model": "OpenCLIP ViT-H",
}


class StableDiffusionNaming(LayerNaming):
    """The ldm/sgm UNet layout with ``n_in`` input and ``n_out`` output blocks."""

    def __init__(self, family: str, label: str, unet_prefix: str, n_in: int, n_out: int, parts: tuple[Part, ...],
                 encoder_labels: Mapping[str, str]) -> None:
        self.family = family
        self.label = label
        self.unet_prefix = unet_prefix
        self.n_in, self.n_out = n_in, n_out
        self.blocks = ("BASE", *(f"IN{i:02d}" for i in range(n_in)), "M00", *(f"OUT{i:02d}" for i in range(n_out)))
        self.parts = parts
        self._encoder_labels = dict(encoder_labels)
        self._unet_blocks = self.blocks[1:]
        self._embeddings_in = ("time_embed.", "label_emb.") if family == "sdxl" else ("time_embed.",)

    # --- blocks -----------------------------------------------------------------------
    def block_of(self, name: str) -> str:
        if not name.startswith(self.unet_prefix):
            return "BASE"
        rest = name[len(self.unet_prefix):]
        if rest.startswith(self._embeddings_in):
            return "IN00"
        if rest.startswith("out."):
            return f"OUT{self.n_out - 1:02d}"
        m = _BLOCK.match("." + rest)
        if m is None:
            return "BASE"
        kind, index = m.group(1), int(m.group(2))
        if kind == "middle_block":
            return "M00"
        return f"IN{index:02d}" if kind == "input_blocks" else f"OUT{index:02d}"

    def depths(self, names: Iterable[str]) -> dict[str, float]:
        """UNet tensors by their block (IN00 at 0 … the last OUT block at 1); the rest at 0."""
        top = max(len(self._unet_blocks) - 1, 1)
        order = {b: i / top for i, b in enumerate(self._unet_blocks)}
        return {n: order.get(self.block_of(n), 0.0) for n in names}

    # --- labels -------------------------------------------------------------------------
    def module_label(self, path: str) -> str | None:
        unet = self.unet_prefix.rstrip(".")
        if path == unet:
            return "UNet"
        if unet and not path.startswith(self.unet_prefix):
            return self._outside_unet_label(path)
        rest = path[len(self.unet_prefix):]
        if rest == "input_blocks":
            return f"Input blocks (IN00–IN{self.n_in - 1:02d})"
        if rest == "output_blocks":
            return f"Output blocks (OUT00–OUT{self.n_out - 1:02d})"
        if rest == "middle_block":
            return "M00"
        if rest == "time_embed":
            return "Time embedding (IN00)"
        if rest == "label_emb":
            return f"Class embedding ({'IN00' if 'label_emb.' in self._embeddings_in else 'BASE'})"
        if rest == "out":
            return f"Output layer (OUT{self.n_out - 1:02d})"
        m = _SUB.match(rest)
        if m:
            return f"{'IN' if m.group(1) == 'input_blocks' else 'OUT'}{int(m.group(2)):02d}"
        return None

    def display_rank(self, path: str) -> int:
        """The UNet's parts in the order data flows through them."""
        if not path.startswith(self.unet_prefix):
            return 0
        order = ("time_embed", "label_emb", "input_blocks", "middle_block", "output_blocks", "out")
        rest = path[len(self.unet_prefix):]
        return order.index(rest) if rest in order else len(order)

    def _outside_unet_label(self, path: str) -> str | None:
        if path == "first_stage_model":
            return "VAE"
        if path == "cond_stage_model":
            kind = next((v for k, v in self._encoder_labels.items() if k.startswith("cond_stage_model")), "")
            return f"Text encoder ({kind})" if kind else "Text encoder"
        if path == "conditioner.embedders":
            return "Text encoders"
        if path.startswith("conditioner.embedders.") and path.count(".") == 2:
            index = int(path.rsplit(".", 1)[1]) if path.rsplit(".", 1)[1].isdigit() else 0
            kind = self._encoder_labels.get(path, "")
            return f"Text encoder {index + 1}" + (f" ({kind})" if kind else "")
        return None


def _unet_layout(names: Iterable[str]) -> tuple[str, int, int, bool] | None:
    """``(prefix, input blocks, output blocks, has a middle block)`` of an ldm UNet, if any."""
    prefixes: dict[str, list[set[int]]] = {}
    for name in names:
        m = _BLOCK.search(name)
        if m is None:
            continue
        prefix = name[: m.start(1)]
        sets = prefixes.setdefault(prefix, [set(), set(), set()])
        sets[("input_blocks", "middle_block", "output_blocks").index(m.group(1))].add(int(m.group(2)))
    if not prefixes:
        return None
    prefix, (ins, mids, outs) = max(prefixes.items(), key=lambda kv: sum(map(len, kv[1])))
    if not ins or not outs or not mids:
        return None
    # the blocks must be numbered 0..n-1 (a few may hold no tensors, never a gap at the end)
    return prefix, max(ins) + 1, max(outs) + 1, True


def _family(shapes: Mapping[str, Any], prefix: str, n_in: int) -> tuple[str, str]:
    names = shapes.keys()
    if n_in == 9 or any(n.startswith("conditioner.embedders.") for n in names):
        return "sdxl", "Stable Diffusion XL"
    if any(n.startswith("cond_stage_model.model.") for n in names):
        return "sd2", "Stable Diffusion 2.x"
    if any(n.startswith("cond_stage_model.transformer.") for n in names):
        return "sd1", "Stable Diffusion 1.x"
    proj = shapes.get(f"{prefix}input_blocks.1.1.proj_in.weight")
    shape = tuple(getattr(proj, "shape", proj) or ())
    if len(shape) == 2:
        return "sd2", "Stable Diffusion 2.x"
    if len(shape) == 4:
        return "sd1", "Stable Diffusion 1.x"
    return "sd", "Stable Diffusion"


def _encoder_labels(names: Iterable[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for name in names:
        for head, label in TEXT_ENCODER_LABELS.items():
            if name.startswith(head + "."):
                labels.setdefault("cond_stage_model", label)
        m = re.match(r"(conditioner\.embedders\.\d+)\.(transformer|model)\.", name)
        if m:
            labels.setdefault(m.group(1), "CLIP ViT-L" if m.group(2) == "transformer" else "OpenCLIP ViT-bigG")
    return labels


@register_naming
def detect_stable_diffusion(shapes: Mapping[str, Any]) -> StableDiffusionNaming | None:
    """An ldm/sgm UNet (with or without text encoder and VAE) by its block names."""
    layout = _unet_layout(shapes.keys())
    if layout is None:
        return None
    prefix, n_in, n_out, _ = layout
    family, label = _family(shapes, prefix, n_in)
    names = list(shapes.keys())
    parts = [Part("unet", "UNet", (prefix,))] if prefix else []
    encoder = [p for p in ("cond_stage_model.", "conditioner.") if any(n.startswith(p) for n in names)]
    if encoder:
        parts.append(Part("text_encoder", "Text encoder" + ("s" if family == "sdxl" else ""), tuple(encoder)))
    if any(n.startswith("first_stage_model.") for n in names):
        parts.append(Part("vae", "VAE", ("first_stage_model.",)))
    if not any(p.key in ("text_encoder", "vae") for p in parts):
        label += " UNet"
    return StableDiffusionNaming(family, label, prefix, n_in, n_out, tuple(parts), _encoder_labels(names))
