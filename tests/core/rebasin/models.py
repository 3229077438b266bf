"""Small test architectures for re-basin, written here so the tests do not depend on the zoo."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from merge_studio.core.rebasin.spec import PermutationSpec


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))


class VGGish(nn.Module):
    """Conv-BN-ReLU-pool twice, flatten (channels × positions), then two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 10, 3, padding=1), nn.BatchNorm2d(10), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(10 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """Residual stages with identity and 1×1 conv + BN shortcuts."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.layer1 = nn.Sequential(BasicBlock(6, 6, 1), BasicBlock(6, 6, 1))
        self.layer2 = nn.Sequential(BasicBlock(6, 12, 2), BasicBlock(12, 12, 1))
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SelfAttention(nn.Module):
    """Attention with separate q/k/v/out projections and ``n_heads`` (the duck-typed kind)."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.n_heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, c // h).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        att = (q @ k.transpose(-2, -1) / (c // h) ** 0.5).softmax(-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, t, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: residual attention, residual MLP (fc1/fc2), with a class token and positions."""

    def __init__(self, dim: int = 12, n_heads: int = 3, tokens: int = 4, builtin_attention: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(5, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.ln1 = nn.LayerNorm(dim)
        self.builtin = builtin_attention
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True) if builtin_attention else SelfAttention(dim, n_heads)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        y = self.ln1(x)
        x = x + (self.attn(y, y, y)[0] if self.builtin else self.attn(y))
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return self.head(x[:, 0])


class SortsHiddenUnitsLike(nn.Module):
    """``torch.cumsum`` over hidden units depends on their order, so the spec must stop there."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc3(torch.cumsum(torch.relu(self.fc2(h)), dim=1))


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN layers non-trivial running statistics, so forgetting to permute them shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


def random_perms(spec: PermutationSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random permutation for every group (attention groups keep heads whole, sharing the head order)."""
    from merge_studio.core.rebasin.heads import random_head_perms

    g = torch.Generator().manual_seed(seed)
    perms: dict[str, torch.Tensor] = {}
    for group in spec.groups:
        if group.name in perms:
            continue
        if group.n_heads <= 1:
            perms[group.name] = torch.randperm(group.size, generator=g)
            continue
        unit = [group] + ([spec.group(group.head_partner)] if group.head_partner else [])
        made = random_head_perms(group.n_heads, group.n_kv_heads, [u.head_dim for u in unit], [u.fixed_within for u in unit], g)
        perms.update({u.name: p for u, p in zip(unit, made, strict=True)})
    return perms


ARCHITECTURES = {
    "mlp": (mlp, lambda: torch.randn(3, 8)),
    "vgg": (VGGish, lambda: torch.randn(3, 1, 8, 8)),
    "resnet": (TinyResNet, lambda: torch.randn(3, 1, 8, 8)),
    "transformer": (TransformerBlock, lambda: torch.randn(3, 4, 5)),
    "transformer_mha": (lambda: TransformerBlock(builtin_attention=True), lambda: torch.randn(3, 4, 5)),
}
