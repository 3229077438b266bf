"""Repeated blocks (a transformer's 32 decoder layers) drawn once, with "×32".

A container (``nn.ModuleList`` or ``nn.Sequential``) whose children all have the same
structure — same class, same parameter and buffer names and shapes, same submodule
types — is a :class:`RepeatedBlock`. For the picture, the container briefly holds
only its first child, so tracing costs one layer instead of 32 and the drawing stays
readable; the first child then stands for all of them. Nothing here knows any model
family: Llama's ``model.layers``, GPT-2's ``transformer.h`` and a ViT's ``blocks``
are found the same way.

Per-layer values (overlays, marks) are folded onto the drawn layer: the node of
``model.layers.0.mlp`` shows the mean over ``model.layers.{0..31}.mlp``, and
:func:`fold_values` also returns the spread so a view can say "0.01–0.03 over 32 layers".
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from merge_studio.graph.model import GraphNode

MIN_REPEATS = 4
"""Fewer identical children than this are drawn as they are (3 blocks read fine)."""


@dataclass(frozen=True)
class RepeatedBlock:
    """A container of identical children: ``model.layers`` holding 32 ``LlamaDecoderLayer``."""

    path: str  # the container, e.g. "model.layers"
    names: tuple[str, ...]  # its children's names, e.g. ("0", ..., "31")
    module_type: str  # the children's class name
    params_each: int = 0

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def representative(self) -> str:
        """The path of the child that is drawn for all of them (the first)."""
        return self.child_path(self.names[0])

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def instance_paths(self) -> list[str]:
        return [self.child_path(n) for n in self.names]

    def split(self, module_path: str) -> tuple[str, str] | None:
        """``("5", "mlp.up_proj")`` for ``model.layers.5.mlp.up_proj``; ``None`` when outside."""
        prefix = f"{self.path}." if self.path else ""
        if not module_path.startswith(prefix):
            return None
        name, _, rest = module_path[len(prefix):].partition(".")
        return (name, rest) if name in self.names else None

    @property
    def span(self) -> str:
        """``model.layers.0–31``: the children this block stands for."""
        first, last = self.names[0], self.names[-1]
        return self.child_path(f"{first}–{last}" if first.isdigit() and last.isdigit() else f"{first}…{last}")

    def caption(self) -> str:
        """The words on the drawn block: ``model.layers.0–31 · LlamaDecoderLayer ×32 · 6.48B params``."""
        from merge_studio.graph.model import format_count

        total = f" · {format_count(self.params_each * self.count)} params" if self.params_each else ""
        return f"{self.span} · {self.module_type} ×{self.count}{total}"


def _signature(module: nn.Module) -> tuple[object, ...]:
    """What must agree for two children to be drawn as one (works on the meta device)."""
    params = tuple((n, tuple(p.shape), str(p.dtype)) for n, p in module.named_parameters())
    buffers = tuple((n, tuple(b.shape)) for n, b in module.named_buffers())
    kinds = tuple((n, type(m).__name__) for n, m in module.named_modules())
    return type(module).__name__, params, buffers, kinds


def find_repeated_blocks(module: nn.Module, min_count: int = MIN_REPEATS) -> list[RepeatedBlock]:
    """Every container of at least ``min_count`` identical children, outermost first.

    Blocks inside a repeated child are found in its first child only (the one drawn).
    """
    found: list[RepeatedBlock] = []
    for path, sub in module.named_modules():
        if not isinstance(sub, nn.ModuleList | nn.Sequential) or len(sub) < min_count:
            continue
        if any(_inside_other_child(block, path) for block in found):
            continue
        children = list(sub.named_children())
        first = _signature(children[0][1])
        if all(_signature(child) == first for _, child in children[1:]):
            params = sum(p.numel() for p in children[0][1].parameters())
            found.append(RepeatedBlock(path, tuple(n for n, _ in children), type(children[0][1]).__name__, params))
    return found


def _inside_other_child(block: RepeatedBlock, path: str) -> bool:
    where = block.split(path)
    return where is not None and where[0] != block.names[0]


@contextlib.contextmanager
def collapsed(module: nn.Module, blocks: Sequence[RepeatedBlock]) -> Iterator[None]:
    """While inside, each block's container holds only its first child (restored after)."""
    saved: list[tuple[nn.Module, OrderedDict[str, nn.Module]]] = []
    try:
        for block in blocks:
            container = module.get_submodule(block.path)
            children = container._modules  # noqa: SLF001 - swapping the dict keeps the object others hold
            saved.append((container, children))
            first = block.names[0]
            container._modules = OrderedDict([(first, children[first])])  # noqa: SLF001
        yield
    finally:
        for container, children in reversed(saved):
            container._modules = children  # noqa: SLF001


def block_of(path: str, blocks: Iterable[RepeatedBlock]) -> RepeatedBlock | None:
    """The collapsed block whose drawn child holds ``path`` (or is it)."""
    for block in blocks:
        rep = block.representative
        if path == rep or path.startswith(rep + "."):
            return block
    return None


def canonical_path(path: str, blocks: Iterable[RepeatedBlock]) -> str:
    """Where ``model.layers.7.mlp`` is drawn when the layers are collapsed: ``model.layers.0.mlp``."""
    for block in blocks:
        where = block.split(path)
        if where is not None:
            name, rest = where
            return block.child_path(block.names[0]) + (f".{rest}" if rest else "")
    return path


def instance_paths(path: str, blocks: Iterable[RepeatedBlock]) -> list[str]:
    """Every layer a drawn path stands for (itself when it is not in a collapsed block)."""
    for block in blocks:
        where = block.split(path)
        if where is not None and where[0] == block.names[0]:
            rest = where[1]
            return [block.child_path(n) + (f".{rest}" if rest else "") for n in block.names]
    return [path]


@dataclass(frozen=True)
class Spread:
    """How a folded value varies over the layers it stands for."""

    mean: float
    low: float
    high: float
    count: int

    def describe(self) -> str:
        return f"mean {self.mean:.4g} over {self.count} layers (min {self.low:.4g}, max {self.high:.4g})"


def fold_values(
    values: Mapping[str, float], blocks: Sequence[RepeatedBlock]
) -> tuple[dict[str, float], dict[str, Spread]]:
    """Per-layer values moved onto the drawn child: the mean, and the spread per drawn path.

    ``{"model.layers.3.mlp.up_proj": 0.2, ...}`` becomes ``{"model.layers.0.mlp.up_proj":
    mean over layers, ...}``; values outside collapsed blocks pass through.
    """
    if not blocks:
        return dict(values), {}
    groups: dict[str, list[float]] = {}
    folded: dict[str, float] = {}
    for key, value in values.items():
        target = canonical_path(key, blocks)
        if target == key and block_of(key, blocks) is None:
            folded[key] = value
        elif math.isfinite(value):
            groups.setdefault(target, []).append(float(value))
    spreads = {}
    for target, numbers in groups.items():
        mean = sum(numbers) / len(numbers)
        folded[target] = mean
        spreads[target] = Spread(mean, min(numbers), max(numbers), len(numbers))
    return folded, spreads


def spread_of(path: str, values: Mapping[str, float], blocks: Sequence[RepeatedBlock]) -> Spread | None:
    """The spread, over the layers a drawn block stands for, of each layer's value (or mean inside it)."""
    from merge_studio.graph.overlay import layer_value

    if block_of(path, blocks) is None:
        return None
    numbers = [v for p in instance_paths(path, blocks) if (v := layer_value(p, values)) is not None]
    if not numbers:
        return None
    return Spread(sum(numbers) / len(numbers), min(numbers), max(numbers), len(numbers))


_CLUSTER = "cluster_repeat_{}"


def cluster_dot(index: int, block: RepeatedBlock, node_ids: Sequence[str]) -> str:
    """A dashed box around the drawn child's nodes, captioned ``… ×32``."""
    from merge_studio.graph.build import quote

    members = " ".join(node_ids)
    return (
        f"\tsubgraph {_CLUSTER.format(index)} {{\n"
        f"\t\tlabel={quote(block.caption())} labeljust=l fontsize=12 style=\"dashed,rounded\" "
        f"color=\"#5b7fa6\" penwidth=1.4 fontcolor=\"#2d4f73\"\n"
        f"\t\t{members}\n\t}}\n"
    )


def relabel_cluster(template: str, cluster_name: str, caption: str) -> str:
    """Give an existing (torchview) cluster the ``×32`` caption instead of its class name."""
    from merge_studio.graph.build import quote

    pattern = re.compile(rf"(subgraph {re.escape(cluster_name)} \{{[^\n]*\n[^\n]*?)label=(\"[^\"]*\"|\S+)")
    return pattern.sub(lambda m: f"{m.group(1)}label={quote(caption)}", template, count=1)


# --- drawing -------------------------------------------------------------------------------
def box_repeats(
    source: str, nodes: Sequence[GraphNode], blocks: Sequence[RepeatedBlock], clusters: Mapping[str, str]
) -> str:
    """Caption each collapsed block ``×N``: its torchview box when there is one, else a new box."""
    boxes = []
    members: dict[RepeatedBlock, list[str]] = {block: [] for block in blocks}
    for node in nodes:
        block = _innermost(node.module_path or node.owner, blocks)
        if block is not None:
            members[block].append(node.node_id)
    for block in blocks:
        cluster = clusters.get(block.representative)
        if cluster is not None:
            source = relabel_cluster(source, cluster, block.caption())
        elif members[block]:
            boxes.append((block, members[block]))
    boxes = [(b, m) for b, m in boxes if not any(_contains(other, b) for other, _ in boxes if other is not b)]
    if not boxes:  # nested repeats inside a repeated layer keep their own captions only via torchview boxes
        return source
    body = source.rstrip()
    assert body.endswith("}")
    text = "".join(cluster_dot(i, block, ids) for i, (block, ids) in enumerate(boxes))
    return body[:-1] + text + "}\n"


def _innermost(path: str, blocks: Sequence[RepeatedBlock]) -> RepeatedBlock | None:
    inside = [b for b in blocks if block_of(path, [b]) is not None] if path else []
    return max(inside, key=lambda b: len(b.representative), default=None)


def _contains(outer: RepeatedBlock, inner: RepeatedBlock) -> bool:
    return inner.path.startswith(outer.representative + ".")


def broadcast_edges(
    edges: list[tuple[int, int]], recorded: Mapping[str, GraphNode], blocks: Sequence[RepeatedBlock]
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], str]]:
    """Edges from one node outside an expanded block into many of its layers.

    Rotary positions and masks feed every decoder layer; drawn, those 64 long edges
    take dot minutes to route. All but the edge into the first layer are dropped and
    that one says where the rest went. Returns ``(dropped, labels of kept edges)``.
    """
    dropped: set[tuple[int, int]] = set()
    labels: dict[tuple[int, int], str] = {}
    if not blocks:
        return dropped, labels

    def where(node_id: int) -> tuple[RepeatedBlock, int] | None:
        node = recorded.get(f"n{node_id}")
        path = (node.module_path or node.owner) if node is not None else ""
        for block in blocks:
            split = block.split(path) if path else None
            if split is not None:
                return block, block.names.index(split[0])
        return None

    fans: dict[tuple[int, RepeatedBlock], list[tuple[int, int]]] = {}
    for tail, head in edges:
        target = where(head)
        if target is not None and where(tail) is None:
            fans.setdefault((tail, target[0]), []).append((head, target[1]))
    for (tail, block), heads in fans.items():
        layers = {index for _, index in heads}
        if len(layers) < MIN_REPEATS:
            continue
        first = min(layers)
        for head, index in heads:
            if index == first:
                labels[(tail, head)] = f" to all {block.count} layers"
            else:
                dropped.add((tail, head))
    return dropped, labels
