"""The module tree read from tensor names: a structural view for every checkpoint.

A state dict has no graph, but its names do have a tree (``layer1.0.conv1.weight``
lives in ``layer1`` → ``0`` → ``conv1``). That tree, with shapes and parameter
counts, is what the Graph tab shows when no architecture is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from merge_studio.core.naming.base import naming_for
from merge_studio.core.naming.tree import group_tree
from merge_studio.graph import style
from merge_studio.graph.build import finish_template, quote
from merge_studio.graph.model import (
    GraphNode,
    ModuleGraph,
    fill_placeholder,
    font_placeholder,
    elide_middle,
    format_count,
    format_shape,
    html_escape,
)

_TENSOR_LINES = 5
# Graphviz lays out a few thousand nodes in seconds but 20,000 siblings take minutes: a module with
# more children shows the first ones and one "… N more" node, and past a total the rest fold.
MAX_CHILDREN = 48
MAX_NODES = 1500


@dataclass
class KeyTreeNode:
    """A module in the name tree: its tensors, children and total parameter count."""

    name: str
    path: str
    tensors: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (leaf name, shape)
    children: dict[str, KeyTreeNode] = field(default_factory=dict)
    param_count: int = 0

    def walk(self) -> Iterator[KeyTreeNode]:
        """This node and every descendant, parents first."""
        yield self
        for child in self.children.values():
            yield from child.walk()


def shapes_of(source: Any) -> dict[str, tuple[int, ...]]:
    """Names and shapes from a Checkpoint, a state dict or a mapping of infos/shapes."""
    infos = source.infos if hasattr(source, "infos") else source
    if not isinstance(infos, Mapping):
        raise TypeError(f"expected a checkpoint or a mapping of tensor names, got {type(source).__name__}")
    return {name: tuple(getattr(value, "shape", value)) for name, value in infos.items()}


def from_key_node(node: Any, root_name: str = "model") -> KeyTreeNode:
    """Adopt a ``merge_studio.core.checkpoints.keys.KeyNode`` tree (the inspector's)."""
    converted = KeyTreeNode(
        node.name or root_name,
        node.path,
        [(leaf, tuple(getattr(info, "shape", info))) for leaf, info in node.tensors.items()],
    )
    converted.children = {name: from_key_node(child) for name, child in node.children.items()}
    return converted


def key_tree(source: Any, root_name: str = "model") -> KeyTreeNode:
    """Build the module tree of a checkpoint's tensor names (in file order).

    ``source`` may also be the inspector's ``KeyNode`` tree, which is adopted as is.
    """
    if isinstance(source, KeyTreeNode):
        return source
    if hasattr(source, "children") and hasattr(source, "tensors") and hasattr(source, "path"):
        root = from_key_node(source, root_name)
        _count(root)
        return root
    root = KeyTreeNode(root_name, "")
    shapes = shapes_of(source)
    for name, shape in shapes.items():
        *parents, leaf = name.split(".")
        node = root
        for depth, part in enumerate(parents):
            path = ".".join(parents[: depth + 1])
            node = node.children.setdefault(part, KeyTreeNode(part, path))
        node.tensors.append((leaf, shape))
    group_tree(root, naming_for(shapes))  # a family's parts and blocks (SD: UNet ▸ IN03 …) by name
    _count(root)
    return root


def _count(node: KeyTreeNode) -> int:
    node.param_count = sum(math.prod(s) for _, s in node.tensors) + sum(_count(c) for c in node.children.values())
    return node.param_count


def _label(node: KeyTreeNode, collapsed: int) -> str:
    parts = [f"<B>{html_escape(elide_middle(node.name))}</B>"]
    count = f"{format_count(node.param_count)} params"
    if collapsed:
        count += f" · {collapsed} modules inside"
    parts.append(f'<FONT POINT-SIZE="9">{html_escape(count)}</FONT>')
    for leaf, shape in node.tensors[:_TENSOR_LINES]:
        parts.append(f'<FONT POINT-SIZE="8">{html_escape(elide_middle(leaf))}  {html_escape(format_shape(shape))}</FONT>')
    if len(node.tensors) > _TENSOR_LINES:
        parts.append(f'<FONT POINT-SIZE="8">… {len(node.tensors) - _TENSOR_LINES} more</FONT>')
    return "<" + "<BR/>".join(parts) + ">"


def key_tree_graph(source: Any, *, depth: int | None = None, title: str = "") -> ModuleGraph:
    """The module tree as a graph (left to right), with shapes and parameter counts.

    ``source`` is a Checkpoint, a state dict, a mapping of names to TensorInfo or
    shapes, a :class:`KeyTreeNode`, or the inspector's ``KeyNode`` tree. Modules deeper than ``depth`` fold into their
    ancestor, which then says how many modules it holds.
    """
    root = key_tree(source, title or "model")
    lines = [
        "digraph tree {",
        "\t" + " ".join(f"{k}={quote(v)}" for k, v in {**style.GRAPH_ATTR, "rankdir": "LR", "ranksep": "0.5"}.items()),
        "\tnode [" + " ".join(f"{k}={quote(v)}" for k, v in style.NODE_ATTR.items()) + "]",
        "\tedge [" + " ".join(f"{k}={quote(v)}" for k, v in style.EDGE_ATTR.items()) + "]",
    ]
    nodes: list[GraphNode] = []
    fills: dict[str, str] = {}

    def emit(node: KeyTreeNode, level: int, parent_id: str | None) -> None:
        node_id = f"t{len(nodes)}"
        folded = bool(node.children) and (depth is not None and level >= depth or len(nodes) >= MAX_NODES)
        collapsed = sum(1 for _ in node.walk()) - 1 if folded else 0
        label = _label(node, collapsed)
        tensors = tuple(node.tensors) if not folded else tuple(
            (f"{d.path[len(node.path) + 1:]}.{leaf}" if node.path else f"{d.path}.{leaf}", shape)
            for d in node.walk() for leaf, shape in d.tensors
        )
        nodes.append(GraphNode(node_id, label, node.path, "module", (), (), node.param_count, "tree", tensors))
        fills[node_id] = style.FILL_TREE if node.path else style.FILL_TREE_ROOT
        lines.append(
            f"\t{node_id} [label={label} id={node_id} fillcolor={quote(fill_placeholder(node_id))} "
            f"fontcolor={quote(font_placeholder(node_id))}]"
        )
        if parent_id is not None:
            lines.append(f"\t{parent_id} -> {node_id}")
        if not folded:
            children = list(node.children.values())
            for child in children[:MAX_CHILDREN]:
                emit(child, level + 1, node_id)
            if len(children) > MAX_CHILDREN:
                emit_rest(node, children[MAX_CHILDREN:], node_id)

    def emit_rest(parent: KeyTreeNode, rest: list[KeyTreeNode], parent_id: str) -> None:
        """One node standing for the children not drawn (clicking it selects their parent)."""
        node_id = f"t{len(nodes)}"
        params = sum(c.param_count for c in rest)
        label = (f"<<B>… {len(rest):,} more</B><BR/><FONT POINT-SIZE=\"9\">{html_escape(format_count(params))} params"
                 f" · {html_escape(elide_middle(rest[0].name, 20))} to {html_escape(elide_middle(rest[-1].name, 20))}</FONT>>")
        nodes.append(GraphNode(node_id, label, parent.path, "module", (), (), params, "tree", ()))
        fills[node_id] = style.FILL_TREE
        lines.append(f"\t{node_id} [label={label} id={node_id} fillcolor={quote(fill_placeholder(node_id))} "
                     f"fontcolor={quote(font_placeholder(node_id))} style=\"rounded,filled,dashed\"]")
        lines.append(f"\t{parent_id} -> {node_id}")

    emit(root, 0, None)
    lines.append("}")
    return ModuleGraph(
        template=finish_template("\n".join(lines), title),
        nodes=tuple(nodes),
        fills=fills,
        kind="tree",
        title=title,
    )
