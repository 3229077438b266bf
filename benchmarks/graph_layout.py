"""How long a ResNet-50-sized graph takes to trace and lay out.

A ResNet-50 (bottleneck blocks 3-4-6-3, 25.6M parameters) is built here on the meta
device (torchvision is not a dependency), traced by torchview and laid out by
Graphviz at several depths. Prints one row per setting, with the node count and
the ratio of layout time to the 2 s budget.

    python benchmarks/graph_layout.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from merge_studio.graph import module_graph, render_svg
from merge_studio.graph.build import parameter_count
from merge_studio.graph.overlay import color_nodes

BUDGET_S = 2.0


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or in_channels != out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages = []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(channels, width, stride if i == 0 else 1))
                channels = width * 4
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _time(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with torch.device("meta"):
        model = ResNet50()
    data = torch.zeros(1, 3, 224, 224, device="meta")
    print(f"ResNet-50: {parameter_count(model) / 1e6:.1f}M parameters, traced on the meta device")
    start = time.perf_counter()
    module_graph(model, data, depth=1)
    print(f"first trace in this process (loads torch's meta kernels): {time.perf_counter() - start:.2f} s\n")

    print(f"{'setting':<26}{'nodes':>7}{'trace s':>10}{'layout s':>10}{'overlay+layout s':>18}{'layout/budget':>15}")
    for depth, nested in ((1, False), (2, False), (3, False), (3, True), (4, False)):
        trace_s, graph = _time(lambda d=depth, n=nested: module_graph(model, data, depth=d, expand_nested=n), args.repeat)
        layout_s, _ = _time(lambda g=graph: render_svg(g.dot), args.repeat)
        values = {n.module_path: float(i) for i, n in enumerate(graph.nodes) if n.module_path}
        overlay_s, _ = _time(lambda g=graph: render_svg(color_nodes(g, values, title="bench").dot), args.repeat)
        name = f"depth={depth}" + (" expand-nested" if nested else "")
        print(f"{name:<26}{len(graph.nodes):>7}{trace_s:>10.3f}{layout_s:>10.3f}{overlay_s:>18.3f}{layout_s / BUDGET_S:>15.2f}")


if __name__ == "__main__":
    main()
