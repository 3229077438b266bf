"""The zoo's image and vector models, sized for scikit-learn's digits (8×8, 1 channel, 10 classes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def int_list(value: str | int | Sequence[int]) -> list[int]:
    """Read ``"512,512"`` (how lists are spelled in an arch spec), an int, or a sequence."""
    if isinstance(value, str):
        return [int(part) for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class MLP(nn.Module):
    """``in_features`` → hidden Linear+ReLU layers → ``head``; keys ``hidden.N.*`` and ``head.*``."""

    def __init__(self, in_features: int = 64, hidden: str | Sequence[int] = "512,512,512", num_classes: int = 10):
        super().__init__()
        widths = [in_features, *int_list(hidden)]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.act = nn.ReLU()
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.head(x)


class ConvBlock(nn.Module):
    """Conv3×3 → BatchNorm → ReLU → MaxPool(2) (halves the image)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class VGG(nn.Module):
    """VGG-style CNN: one :class:`ConvBlock` per width, flatten, then a Linear ``head``."""

    def __init__(
        self,
        in_channels: int = 1,
        widths: str | Sequence[int] = "32,64,128",
        num_classes: int = 10,
        image_size: int = 8,
    ) -> None:
        super().__init__()
        channels = [in_channels, *int_list(widths)]
        side = image_size
        for _ in channels[1:]:
            if side < 2:
                raise ValueError(f"image_size {image_size} is too small for {len(channels) - 1} pooling blocks")
            side //= 2
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True))
        self.flatten = nn.Flatten()
        self.head = nn.Linear(channels[-1] * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(self.flatten(x))


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and a residual addition.

    The shortcut is ``nn.Identity`` when shapes match, else a 1×1 conv + BN
    (``shortcut.0``/``shortcut.1``).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet: stem, 3 stages × ``blocks`` BasicBlocks (16, 32, 64 channels × ``width``)."""

    def __init__(self, width: int = 1, in_channels: int = 1, num_classes: int = 10, blocks: int = 3) -> None:
        super().__init__()
        base = 16 * int(width)
        self.conv1 = nn.Conv2d(in_channels, base, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU()
        stages = []
        channels = base
        for stage, out_channels in enumerate((base, base * 2, base * 4)):
            layers = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))
