"""The zoo's transformers: a small ViT for digits and a small GPT-style decoder."""

from __future__ import annotations

import torch
from torch import nn

from merge_studio.core.arch.layers import TransformerBlock


def _embedding(count: int, dim: int) -> nn.Embedding:
    """``nn.Embedding`` with its usual N(0, 1) init, skipped on the meta device.

    A first ``normal_`` on meta imports torch's compiler (seconds); meta tensors hold
    no values anyway. On real devices the random stream is the same as nn.Embedding's.
    """
    weight = torch.empty(count, dim)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return nn.Embedding(count, dim, _weight=weight)


class ViT(nn.Module):
    """Small ViT: Conv2d patch embedding, cls token, learned positions, pre-LN blocks, ``head``."""

    def __init__(
        self,
        image_size: int = 8,
        patch: int = 2,
        in_channels: int = 1,
        dim: int = 64,
        depth: int = 2,
        n_heads: int = 4,
        mlp_ratio: int = 2,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        if not self.cls_token.is_meta:  # meta normal_ would import torch's compiler (seconds)
            nn.init.normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, n_heads, dim * mlp_ratio, causal=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


class GPT(nn.Module):
    """Small GPT-style decoder: token + position embeddings, causal pre-LN blocks, ``ln_f``, ``lm_head``."""

    def __init__(
        self,
        vocab_size: int = 64,
        block_size: int = 32,
        d_model: int = 64,
        n_layer: int = 2,
        n_head: int = 4,
        mlp_ratio: int = 4,
        tied: bool = False,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok_emb = _embedding(vocab_size, d_model)
        self.pos_emb = _embedding(block_size, d_model)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_head, d_model * mlp_ratio, causal=True) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tied:
            self.lm_head.weight = self.tok_emb.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))
