"""The data a graph view needs: dot source, and which node is which layer.

A :class:`ModuleGraph` keeps its dot source as a template with one fill-colour
placeholder per node, so overlays recolour nodes without re-tracing the model and
without editing dot text by pattern.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from merge_studio.graph.repeats import RepeatedBlock

NodeKind = Literal["module", "function", "tensor", "tree"]

LEGEND_NODE_ID = "legend"
_FILL = "@@FILL:{}@@"
_FONT = "@@FONT:{}@@"
_LEGEND = "@@LEGEND@@"
DEFAULT_FONT_COLOR = "#1b2733"


def fill_placeholder(node_id: str) -> str:
    """The text a builder writes where a node's fill colour goes."""
    return _FILL.format(node_id)


def font_placeholder(node_id: str) -> str:
    """The text a builder writes where a node's font colour goes (light on dark fills)."""
    return _FONT.format(node_id)


LEGEND_PLACEHOLDER = _LEGEND
_PLACEHOLDER = re.compile(r"@@(FILL|FONT):([^@]+)@@")


@dataclass(frozen=True)
class GraphNode:
    """One drawn node. ``node_id`` is both the graphviz name and the SVG element id.

    ``module_path`` is the dotted module path (``layer1.0.conv1``); empty for the
    model's inputs/outputs and for functions. ``owner`` is, for a function, the module
    whose forward called it (the residual ``add`` of ``model.layers.0``).
    """

    node_id: str
    label: str
    module_path: str
    module_type: str
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shapes: tuple[tuple[int, ...], ...] = ()
    param_count: int = 0
    kind: NodeKind = "module"
    tensors: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (tensor name, shape) held directly
    owner: str = ""

    def tooltip(self) -> str:
        """A short description for hover: type, shapes, parameter count."""
        lines = [f"{self.module_path or self.label} ({self.module_type})"]
        if self.input_shapes:
            lines.append("in: " + ", ".join(format_shape(s) for s in self.input_shapes))
        if self.output_shapes:
            lines.append("out: " + ", ".join(format_shape(s) for s in self.output_shapes))
        for name, shape in self.tensors[:12]:
            lines.append(f"{name}: {format_shape(shape)}")
        if len(self.tensors) > 12:
            lines.append(f"… {len(self.tensors) - 12} more tensors")
        if self.param_count:
            lines.append(f"{format_count(self.param_count)} parameters")
        return "\n".join(lines)


@dataclass(frozen=True)
class Legend:
    """What an overlay's colours mean: a title, a value range and colour stops."""

    title: str
    vmin: float
    vmax: float
    stops: tuple[tuple[float, str], ...]  # (value, hex colour), from vmin to vmax
    missing_color: str


@dataclass(frozen=True)
class ModuleGraph:
    """Nodes, their layers and the dot source of a model or module-tree picture."""

    template: str
    nodes: tuple[GraphNode, ...]
    fills: Mapping[str, str] = field(default_factory=dict)
    font_colors: Mapping[str, str] = field(default_factory=dict)
    legend: Legend | None = None
    legend_dot: str = ""
    kind: Literal["module", "tree"] = "module"
    title: str = ""
    repeats: tuple[RepeatedBlock, ...] = ()  # blocks drawn once for all their layers ("×32")
    expanded: tuple[RepeatedBlock, ...] = ()  # repeated blocks drawn layer by layer
    notes: Mapping[str, str] = field(default_factory=dict)  # node id -> extra tooltip line (overlay spread)

    @property
    def dot(self) -> str:
        """The dot source with current fills and legend."""
        def fill_in(match: re.Match[str]) -> str:
            kind, node_id = match.group(1), match.group(2)
            if kind == "FILL":
                return self.fills.get(node_id, "white")
            return self.font_colors.get(node_id, DEFAULT_FONT_COLOR)

        text = _PLACEHOLDER.sub(fill_in, self.template)  # one pass, however many nodes
        return text.replace(LEGEND_PLACEHOLDER, self.legend_dot)

    def node(self, node_id: str) -> GraphNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def nodes_for(self, module_path: str) -> list[GraphNode]:
        """Nodes drawing ``module_path`` itself, else the nearest drawn ancestor(s).

        A layer inside a collapsed block (``model.layers.7.mlp``) is found where its
        block is drawn (``model.layers.0.mlp``).
        """
        if self.repeats:
            from merge_studio.graph.repeats import canonical_path

            module_path = canonical_path(module_path, self.repeats)
        exact = [n for n in self.nodes if n.module_path == module_path]
        if exact:
            return exact
        best: list[GraphNode] = []
        best_len = -1
        for n in self.nodes:
            if n.module_path and module_path.startswith(n.module_path + "."):
                if len(n.module_path) > best_len:
                    best, best_len = [n], len(n.module_path)
                elif len(n.module_path) == best_len:
                    best.append(n)
        return best

    def describe(self, node: GraphNode) -> str:
        """The node's tooltip, with what a collapsed block stands for and the overlay's spread."""
        lines = [node.tooltip()]
        if self.repeats:
            from merge_studio.graph.repeats import block_of

            block = block_of(node.module_path or node.owner, self.repeats)
            if block is not None:
                lines.append(f"drawn once for {block.count} layers: {block.span}")
        if node.node_id in self.notes:
            lines.append(self.notes[node.node_id])
        return "\n".join(lines)

    def search(self, text: str) -> list[GraphNode]:
        """Nodes whose module path, label or type contains ``text`` (case-insensitive)."""
        needle = text.strip().lower()
        if not needle:
            return []
        hits = [n for n in self.nodes if needle in n.module_path.lower()]
        hits += [n for n in self.nodes if n not in hits and needle in (n.label + " " + n.module_type).lower()]
        return hits

    def with_fills(
        self,
        fills: Mapping[str, str],
        font_colors: Mapping[str, str],
        legend: Legend | None,
        legend_dot: str,
        notes: Mapping[str, str] | None = None,
    ) -> ModuleGraph:
        """A copy with new node colours and legend (the layout input is otherwise unchanged).

        ``notes`` replaces the per-node tooltip lines; ``None`` keeps them.
        """
        return replace(self, fills=dict(fills), font_colors=dict(font_colors), legend=legend, legend_dot=legend_dot,
                       notes=dict(self.notes if notes is None else notes))


def format_shape(shape: tuple[int, ...]) -> str:
    """``(2, 16, 8, 8)`` → ``2×16×8×8``; a scalar is ``scalar``."""
    return "×".join(str(s) for s in shape) if shape else "scalar"


def format_count(count: int) -> str:
    """``1234567`` → ``1.23M``: parameter counts at a glance."""
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= factor:
            return f"{count / factor:.3g}{suffix}"
    return str(count)


def elide_middle(text: str, limit: int = 48) -> str:
    """``text`` cut to ``limit`` characters in the middle, keeping both ends (``…-seed1`` stays told apart)."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]


def html_escape(text: str) -> str:
    """Escape text for a graphviz HTML-like label.

    Control characters (a newline inside a tensor name) are written as escapes,
    and a blank text as ``(empty)``: graphviz refuses the whole graph otherwise.
    """
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if not text.strip():
        text = "(empty)"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
