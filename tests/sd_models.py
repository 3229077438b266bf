"""Tiny Stable Diffusion single-file checkpoints for tests, built in code (never downloaded).

``make_sd_state("sd1", seed=1)`` returns a state dict with the key layout of a
real SD 1.x, SD 2.x or SDXL single-file checkpoint (the original ldm / sgm
names: ``model.diffusion_model.input_blocks.N…``, ``middle_block``,
``output_blocks``, ``time_embed``, ``out``; the CLIP / OpenCLIP text encoder(s);
the VAE under ``first_stage_model``) at a few hundred kilobytes: every block,
every sub-module and every tensor name of the real model is there, only the
widths are tiny. The structure follows the published UNet configurations
(channel multipliers, two residual blocks per level, attention levels, the
transformer depths of SDXL, linear projections in SD 2.x and SDXL), so a block
mapping that is right here is right on the real files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

FAMILIES = ("sd1", "sd2", "sdxl")
UNET = "model.diffusion_model."


@dataclass(frozen=True)
class UNetConfig:
    """The published UNet structure, with the channel width shrunk."""

    channel_mult: tuple[int, ...]
    attention_levels: tuple[int, ...]
    transformer_depth: tuple[int, ...]  # per level (0 where there is no attention)
    middle_depth: int
    context_dim: int
    linear_proj: bool
    adm_in_channels: int | None = None
    model_channels: int = 8
    num_res_blocks: int = 2


def unet_config(family: str) -> UNetConfig:
    if family == "sd1":
        return UNetConfig((1, 2, 4, 4), (0, 1, 2), (1, 1, 1, 0), 1, context_dim=16, linear_proj=False)
    if family == "sd2":
        return UNetConfig((1, 2, 4, 4), (0, 1, 2), (1, 1, 1, 0), 1, context_dim=24, linear_proj=True)
    if family == "sdxl":
        return UNetConfig((1, 2, 4), (1, 2), (0, 2, 10), 10, context_dim=40, linear_proj=True, adm_in_channels=48,
                          model_channels=4)
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


class _Builder:
    def __init__(self, seed: int, scale: float = 0.1) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.sd: dict[str, torch.Tensor] = {}

    def t(self, name: str, *shape: int) -> None:
        self.sd[name] = torch.randn(*shape, generator=self.g) * self.scale

    def linear(self, prefix: str, out: int, inp: int, bias: bool = True) -> None:
        self.t(f"{prefix}.weight", out, inp)
        if bias:
            self.t(f"{prefix}.bias", out)

    def conv(self, prefix: str, out: int, inp: int, k: int = 3) -> None:
        self.t(f"{prefix}.weight", out, inp, k, k)
        self.t(f"{prefix}.bias", out)

    def norm(self, prefix: str, ch: int) -> None:
        self.t(f"{prefix}.weight", ch)
        self.t(f"{prefix}.bias", ch)


def _resblock(b: _Builder, p: str, inp: int, out: int, emb: int) -> None:
    b.norm(f"{p}.in_layers.0", inp)
    b.conv(f"{p}.in_layers.2", out, inp)
    b.linear(f"{p}.emb_layers.1", out, emb)
    b.norm(f"{p}.out_layers.0", out)
    b.conv(f"{p}.out_layers.3", out, out)
    if inp != out:
        b.conv(f"{p}.skip_connection", out, inp, k=1)


def _transformer(b: _Builder, p: str, ch: int, depth: int, cfg: UNetConfig) -> None:
    b.norm(f"{p}.norm", ch)
    if cfg.linear_proj:
        b.linear(f"{p}.proj_in", ch, ch)
    else:
        b.conv(f"{p}.proj_in", ch, ch, k=1)
    for i in range(depth):
        t = f"{p}.transformer_blocks.{i}"
        for attn, ctx in (("attn1", ch), ("attn2", cfg.context_dim)):
            b.linear(f"{t}.{attn}.to_q", ch, ch, bias=False)
            b.linear(f"{t}.{attn}.to_k", ch, ctx, bias=False)
            b.linear(f"{t}.{attn}.to_v", ch, ctx, bias=False)
            b.linear(f"{t}.{attn}.to_out.0", ch, ch)
        b.linear(f"{t}.ff.net.0.proj", ch * 8, ch)  # GEGLU: two halves of 4·ch
        b.linear(f"{t}.ff.net.2", ch, ch * 4)
        for n in (1, 2, 3):
            b.norm(f"{t}.norm{n}", ch)
    if cfg.linear_proj:
        b.linear(f"{p}.proj_out", ch, ch)
    else:
        b.conv(f"{p}.proj_out", ch, ch, k=1)


def _unet(b: _Builder, cfg: UNetConfig) -> None:
    c = cfg.model_channels
    emb = 4 * c
    b.linear(f"{UNET}time_embed.0", emb, c)
    b.linear(f"{UNET}time_embed.2", emb, emb)
    if cfg.adm_in_channels:
        b.linear(f"{UNET}label_emb.0.0", emb, cfg.adm_in_channels)
        b.linear(f"{UNET}label_emb.0.2", emb, emb)
    b.conv(f"{UNET}input_blocks.0.0", c, 4)
    chans = [c]
    ch = c
    index = 1
    levels = len(cfg.channel_mult)
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            p = f"{UNET}input_blocks.{index}"
            _resblock(b, f"{p}.0", ch, mult * c, emb)
            ch = mult * c
            if level in cfg.attention_levels:
                _transformer(b, f"{p}.1", ch, cfg.transformer_depth[level], cfg)
            chans.append(ch)
            index += 1
        if level != levels - 1:
            b.conv(f"{UNET}input_blocks.{index}.0.op", ch, ch)
            chans.append(ch)
            index += 1
    _resblock(b, f"{UNET}middle_block.0", ch, ch, emb)
    _transformer(b, f"{UNET}middle_block.1", ch, cfg.middle_depth, cfg)
    _resblock(b, f"{UNET}middle_block.2", ch, ch, emb)
    index = 0
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
        for i in range(cfg.num_res_blocks + 1):
            p = f"{UNET}output_blocks.{index}"
            skip = chans.pop()
            _resblock(b, f"{p}.0", ch + skip, mult * c, emb)
            ch = mult * c
            sub = 1
            if level in cfg.attention_levels:
                _transformer(b, f"{p}.1", ch, cfg.transformer_depth[level], cfg)
                sub = 2
            if level and i == cfg.num_res_blocks:
                b.conv(f"{p}.{sub}.conv", ch, ch)
            index += 1
    b.norm(f"{UNET}out.0", ch)
    b.conv(f"{UNET}out.2", 4, ch)


def _clip_text(b: _Builder, p: str, width: int, layers: int, vocab: int = 64) -> None:
    """Hugging Face CLIPTextModel names (SD 1.x, SDXL's first encoder)."""
    tm = f"{p}.transformer.text_model"
    b.t(f"{tm}.embeddings.token_embedding.weight", vocab, width)
    b.t(f"{tm}.embeddings.position_embedding.weight", 77, width)
    b.sd[f"{tm}.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64).unsqueeze(0)
    for i in range(layers):
        layer = f"{tm}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            b.linear(f"{layer}.self_attn.{proj}", width, width)
        b.norm(f"{layer}.layer_norm1", width)
        b.linear(f"{layer}.mlp.fc1", 4 * width, width)
        b.linear(f"{layer}.mlp.fc2", width, 4 * width)
        b.norm(f"{layer}.layer_norm2", width)
    b.norm(f"{tm}.final_layer_norm", width)


def _open_clip_text(b: _Builder, p: str, width: int, layers: int, vocab: int = 64) -> None:
    """OpenCLIP names (SD 2.x, SDXL's second encoder): fused in_proj attention."""
    m = f"{p}.model"
    b.t(f"{m}.positional_embedding", 77, width)
    b.t(f"{m}.text_projection", width, width)
    b.sd[f"{m}.logit_scale"] = torch.tensor(4.6052)
    b.t(f"{m}.token_embedding.weight", vocab, width)
    for i in range(layers):
        r = f"{m}.transformer.resblocks.{i}"
        b.norm(f"{r}.ln_1", width)
        b.t(f"{r}.attn.in_proj_weight", 3 * width, width)
        b.t(f"{r}.attn.in_proj_bias", 3 * width)
        b.linear(f"{r}.attn.out_proj", width, width)
        b.norm(f"{r}.ln_2", width)
        b.linear(f"{r}.mlp.c_fc", 4 * width, width)
        b.linear(f"{r}.mlp.c_proj", width, 4 * width)
    b.norm(f"{m}.ln_final", width)


def _vae(b: _Builder, p: str, ch: int = 4, mult: tuple[int, ...] = (1, 2, 4, 4), z: int = 4) -> None:
    """The autoencoder (AutoencoderKL) names shared by every SD family."""

    def res(q: str, inp: int, out: int) -> None:
        b.norm(f"{q}.norm1", inp)
        b.conv(f"{q}.conv1", out, inp)
        b.norm(f"{q}.norm2", out)
        b.conv(f"{q}.conv2", out, out)
        if inp != out:
            b.conv(f"{q}.nin_shortcut", out, inp, k=1)

    def mid(q: str, c: int) -> None:
        res(f"{q}.block_1", c, c)
        b.norm(f"{q}.attn_1.norm", c)
        for name in ("q", "k", "v", "proj_out"):
            b.conv(f"{q}.attn_1.{name}", c, c, k=1)
        res(f"{q}.block_2", c, c)

    enc = f"{p}.encoder"
    b.conv(f"{enc}.conv_in", ch, 3)
    c = ch
    for i, m in enumerate(mult):
        for j in range(2):
            res(f"{enc}.down.{i}.block.{j}", c, ch * m)
            c = ch * m
        if i != len(mult) - 1:
            b.conv(f"{enc}.down.{i}.downsample.conv", c, c)
    mid(f"{enc}.mid", c)
    b.norm(f"{enc}.norm_out", c)
    b.conv(f"{enc}.conv_out", 2 * z, c)
    dec = f"{p}.decoder"
    c = ch * mult[-1]
    b.conv(f"{dec}.conv_in", c, z)
    mid(f"{dec}.mid", c)
    for i in reversed(range(len(mult))):
        for j in range(3):
            res(f"{dec}.up.{i}.block.{j}", c, ch * mult[i])
            c = ch * mult[i]
        if i != 0:
            b.conv(f"{dec}.up.{i}.upsample.conv", c, c)
    b.norm(f"{dec}.norm_out", c)
    b.conv(f"{dec}.conv_out", 3, c)
    b.conv(f"{p}.quant_conv", 2 * z, 2 * z, k=1)
    b.conv(f"{p}.post_quant_conv", z, z, k=1)


def _schedule(b: _Builder) -> None:
    """The noise-schedule buffers SD 1.x/2.x files carry (the same in every model)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    b.sd["betas"] = betas.float()
    b.sd["alphas_cumprod"] = alphas_cumprod.float()
    b.sd["alphas_cumprod_prev"] = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]]).float()
    b.sd["sqrt_alphas_cumprod"] = alphas_cumprod.sqrt().float()


def make_sd_state(family: str = "sd1", seed: int = 0, *, unet_only: bool = False, compact: bool = False,
                  dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A state dict with the real single-file key layout of ``family`` (sd1, sd2, sdxl).

    Different seeds give different weights (the schedule buffers and position ids
    stay equal, as in real models). ``unet_only`` keeps only ``model.diffusion_model``.
    ``compact`` repeats less (two text-encoder layers, SDXL transformer depths 1 and 2)
    but keeps every block and part: a third of the tensors, for merge tests.
    """
    cfg = unet_config(family)
    if compact and family == "sdxl":
        cfg = replace(cfg, transformer_depth=(0, 1, 2), middle_depth=2)
    layers = (lambda n: 2) if compact else (lambda n: n)
    b = _Builder(seed)
    if family != "sdxl" and not unet_only:
        _schedule(b)
    _unet(b, cfg)
    if not unet_only:
        if family == "sd1":
            _clip_text(b, "cond_stage_model", cfg.context_dim, layers=layers(12))
        elif family == "sd2":
            _open_clip_text(b, "cond_stage_model", cfg.context_dim, layers=layers(24))
        else:
            _clip_text(b, "conditioner.embedders.0", 16, layers=layers(12))
            _open_clip_text(b, "conditioner.embedders.1", cfg.context_dim - 16, layers=layers(32))
        _vae(b, "first_stage_model")
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in b.sd.items()}


def make_sd_checkpoint(path: Path, family: str = "sd1", seed: int = 0, **kwargs) -> Path:
    """Write :func:`make_sd_state` to ``path``: ``.safetensors``, or ``.ckpt`` the way
    the original training code saved it (``{"state_dict": …}`` through ``torch.save``)."""
    path = Path(path)
    state = make_sd_state(family, seed, **kwargs)
    if path.suffix == ".ckpt":
        torch.save({"state_dict": state, "global_step": 1000}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    return path
