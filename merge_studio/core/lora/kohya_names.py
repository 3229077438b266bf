"""Which tensor of a Stable Diffusion single-file checkpoint a kohya LoRA module adapts.

kohya names a module by its path with dots turned into underscores, behind a
prefix: ``lora_unet_`` (the UNet), ``lora_te_`` / ``lora_te1_`` / ``lora_te2_``
(the text encoders). The UNet path is either the original (ldm) one —
``input_blocks_4_1_proj_in``, as SDXL LoRAs write it — or the diffusers one —
``down_blocks_1_attentions_0_proj_in``, as SD 1.x LoRAs write it. Text encoders are
named with Hugging Face CLIP paths (``text_model_encoder_layers_0_self_attn_q_proj``)
even where the checkpoint holds an OpenCLIP encoder with a fused ``in_proj``:
there q, k and v are the three row blocks of ``in_proj_weight``.

:func:`kohya_lookup` lists, for a checkpoint's own tensor names, every kohya name
that can address them, so matching never guesses from the underscores.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

UNET_PREFIX = "model.diffusion_model."
TEXT_ENCODERS = {  # checkpoint prefix -> kohya prefix
    "cond_stage_model.transformer.": "lora_te_",
    "conditioner.embedders.0.transformer.": "lora_te1_",
}
OPEN_CLIP_ENCODERS = {
    "cond_stage_model.model.": "lora_te_",
    "conditioner.embedders.1.model.": "lora_te2_",
}
_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_TOP = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
        "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
        "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}


class Target(NamedTuple):
    """A base tensor a LoRA module changes, and the rows it changes (``None``: all)."""

    name: str
    rows: tuple[int, int] | None = None


def _resnet_inner(rest: str) -> str | None:
    for ldm, diff in _RESNET.items():
        if rest == ldm or rest.startswith(ldm + "."):
            return diff + rest[len(ldm):]
    return None


def diffusers_unet_path(module: str, n_levels: int, attention_levels: set[int]) -> str | None:
    """The diffusers UNet2DConditionModel path of an ldm UNet module (``None`` when it has none)."""
    for ldm, diff in _TOP.items():
        if module == ldm:
            return diff
    m = re.match(r"input_blocks\.(\d+)\.(\d+)(?:\.(.+))?$", module)
    if m:
        index, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3) or ""
        level, j = divmod(index - 1, 3)
        if j == 2:  # the downsampler closing a level
            return f"down_blocks.{level}.downsamplers.0.conv" if rest == "op" else None
        if sub == 0:
            inner = _resnet_inner(rest)
            return f"down_blocks.{level}.resnets.{j}.{inner}" if inner else None
        return f"down_blocks.{level}.attentions.{j}" + (f".{rest}" if rest else "")
    m = re.match(r"middle_block\.(\d+)(?:\.(.+))?$", module)
    if m:
        sub, rest = int(m.group(1)), m.group(2) or ""
        if sub == 1:
            return "mid_block.attentions.0" + (f".{rest}" if rest else "")
        inner = _resnet_inner(rest)
        return f"mid_block.resnets.{sub // 2}.{inner}" if inner else None
    m = re.match(r"output_blocks\.(\d+)\.(\d+)(?:\.(.+))?$", module)
    if m:
        index, sub, rest = int(m.group(1)), int(m.group(2)), m.group(3) or ""
        level, j = divmod(index, 3)
        has_attention = (n_levels - 1 - level) in attention_levels
        if sub == 0:
            inner = _resnet_inner(rest)
            return f"up_blocks.{level}.resnets.{j}.{inner}" if inner else None
        if sub == 1 and has_attention:
            return f"up_blocks.{level}.attentions.{j}" + (f".{rest}" if rest else "")
        if rest == "conv":
            return f"up_blocks.{level}.upsamplers.0.conv"
    return None


def _unet_shape(names: list[str]) -> tuple[int, set[int]]:
    """Number of levels and the levels with attention, from the input blocks."""
    inputs = {int(m.group(1)) for n in names if (m := re.search(r"input_blocks\.(\d+)\.", n))}
    n_levels = (max(inputs, default=0) + 1) // 3 + ((max(inputs, default=0) + 1) % 3 > 0)
    attention = {(int(m.group(1)) - 1) // 3 for n in names if (m := re.search(r"input_blocks\.(\d+)\.1\.", n))}
    return max(n_levels, 1), attention


def _flat(path: str) -> str:
    return path.replace(".", "_")


def _open_clip_names(kohya_prefix: str, rest: str, width: int | None) -> Iterator[tuple[str, Target | None]]:
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.+)$", rest)
    if m is None:
        return
    layer, inner = m.group(1), m.group(2)
    base = f"{kohya_prefix}text_model_encoder_layers_{layer}_"
    if inner == "attn.in_proj_weight" and width:
        for i, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            yield f"{base}self_attn_{proj}", Target("", (i * width, (i + 1) * width))
    simple = {"attn.out_proj.weight": "self_attn_out_proj", "mlp.c_fc.weight": "mlp_fc1", "mlp.c_proj.weight": "mlp_fc2"}
    if inner in simple:
        yield base + simple[inner], None


def kohya_lookup(shapes: Mapping[str, Any]) -> dict[str, Target]:
    """``{kohya module name: base tensor (and rows)}`` for a checkpoint's tensor names and shapes."""
    names = list(shapes)
    n_levels, attention = _unet_shape(names)
    table: dict[str, Target] = {}
    for name in names:
        if name.startswith(UNET_PREFIX) and name.endswith(".weight"):
            module = name[len(UNET_PREFIX):-len(".weight")]
            table[f"lora_unet_{_flat(module)}"] = Target(name)
            diff = diffusers_unet_path(module, n_levels, attention)
            if diff:
                table.setdefault(f"lora_unet_{_flat(diff)}", Target(name))
            continue
        for prefix, kohya in TEXT_ENCODERS.items():
            if name.startswith(prefix) and name.endswith(".weight"):
                table[kohya + _flat(name[len(prefix):-len(".weight")])] = Target(name)
        for prefix, kohya in OPEN_CLIP_ENCODERS.items():
            if name.startswith(prefix):
                shape = tuple(getattr(shapes[name], "shape", shapes[name]) or ())
                width = shape[0] // 3 if shape else None
                for kname, target in _open_clip_names(kohya, name[len(prefix):], width):
                    table[kname] = Target(name, target.rows if target else None)
    return table
