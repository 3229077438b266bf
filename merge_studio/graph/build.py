"""Trace a module with torchview into a :class:`ModuleGraph` (dot source + layer map).

Tracing runs on the meta device where it can: a meta copy of the module (made
without copying any weight) is fed meta inputs, so even big models trace in no
memory. Modules whose forward does not run on meta are traced for real, on a
copy-free path with ``torch.no_grad``.

torchview identifies a module node by ``id(module)``; we map those ids to dotted
paths with ``named_modules()`` of the module that was actually traced, so every
node knows its layer (``layer1.0.conv1``) whatever its depth.

Repeated blocks (a transformer's decoder layers) are traced and drawn once, in a
box captioned ``×32`` (:mod:`merge_studio.graph.repeats`); a block the user expands
is drawn layer by layer, with inputs every layer shares (positions, masks) wired to
the first layer only, so the layout stays quick and the picture readable.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from merge_studio.errors import ArchitectureError
from merge_studio.graph import style
from merge_studio.graph.model import (
    LEGEND_PLACEHOLDER,
    GraphNode,
    ModuleGraph,
    fill_placeholder,
    font_placeholder,
    format_count,
    format_shape,
    html_escape,
)
from merge_studio.graph.repeats import RepeatedBlock, box_repeats, broadcast_edges, collapsed, find_repeated_blocks


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` on the meta device, made without copying weight data."""
    memo: dict[int, Any] = {}
    for tensor in list(module.parameters()) + list(module.buffers()):
        meta = tensor.detach().to("meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def _to_device(data: Any, device: str) -> Any:
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, (list, tuple)):
        return type(data)(_to_device(d, device) for d in data)
    if isinstance(data, Mapping):
        return {k: _to_device(v, device) for k, v in data.items()}
    return data


def _shapes(shapes: Any) -> tuple[tuple[int, ...], ...]:
    out = []
    for s in shapes or ():
        try:
            out.append(tuple(int(d) for d in s))
        except TypeError:
            continue
    return tuple(out)


def _node_label(title: str, subtitle: str, shapes_line: str) -> str:
    parts = [f"<B>{html_escape(title)}</B>"]
    if subtitle:
        parts.append(f'<FONT POINT-SIZE="9">{html_escape(subtitle)}</FONT>')
    if shapes_line:
        parts.append(f'<FONT POINT-SIZE="8">{html_escape(shapes_line)}</FONT>')
    return "<" + "<BR/>".join(parts) + ">"


def _shapes_line(inputs: tuple[tuple[int, ...], ...], outputs: tuple[tuple[int, ...], ...]) -> str:
    def side(shapes: tuple[tuple[int, ...], ...]) -> str:
        unique = list(dict.fromkeys(shapes))
        text = ", ".join(format_shape(s) for s in unique[:2])
        return text + (" …" if len(unique) > 2 else "")

    if not inputs and not outputs:
        return ""
    return f"{side(inputs)} → {side(outputs)}"


def _recording_graph_class() -> type:
    """A torchview ComputationGraph that writes our labels and ids and records each node."""
    from torchview.computation_graph import ComputationGraph
    from torchview.computation_node import FunctionNode, ModuleNode, TensorNode

    class RecordingGraph(ComputationGraph):
        paths: dict[int, str]
        modules: dict[int, nn.Module]
        recorded: dict[str, GraphNode]
        default_fills: dict[str, str]
        clusters: dict[str, str]  # module path -> torchview's cluster name (expand_nested)
        input_names: dict[tuple[int, ...], str]  # keyword inputs told apart by shape (input_ids, attention_mask)
        spread_blocks: Sequence[RepeatedBlock]  # expanded blocks: shared inputs wired to layer one only

        def collect_graph(self, **kwargs: Any) -> None:
            super().collect_graph(**kwargs)
            node = kwargs["cur_node"]
            if isinstance(node, ModuleNode) and node.node_id in self.subgraph_dict:
                path = self.paths.get(node.compute_unit_id)
                if path is not None:
                    self.clusters.setdefault(path, f"cluster_{self.subgraph_dict[node.node_id]}")

        def render_edges(self) -> None:
            counts: dict[tuple[int, int], int] = {}
            for tail, head in self.edge_list:
                key = (self.id_dict[tail.node_id], self.id_dict[head.node_id])
                counts[key] = counts.get(key, 0) + 1
            dropped, labels = broadcast_edges(list(counts), self.recorded, self.spread_blocks)
            for edge, count in counts.items():
                if edge not in dropped:
                    self.add_edge(edge, count, labels.get(edge))

        def add_node(self, node: Any, subgraph: Any = None) -> None:
            if node.node_id not in self.id_dict:
                self.id_dict[node.node_id] = self.running_node_id
                self.running_node_id += 1
            node_id = f"n{self.id_dict[node.node_id]}"
            graph_node, fill, attrs = self._describe(node, node_id)
            self.recorded[node_id] = graph_node
            self.default_fills[node_id] = fill
            target = self.visual_graph if subgraph is None else subgraph
            target.node(node_id, graph_node.label, id=node_id, fillcolor=fill_placeholder(node_id),
                        fontcolor=font_placeholder(node_id), **attrs)
            self.node_set.add(id(node))

        def add_edge(self, edge_ids: tuple[int, int], edg_cnt: int, note: str | None = None) -> None:
            tail, head = edge_ids
            label = None if edg_cnt == 1 else f" ×{edg_cnt}"
            if note:
                self.visual_graph.edge(f"n{tail}", f"n{head}", label=note, style="dashed")
            else:
                self.visual_graph.edge(f"n{tail}", f"n{head}", label=label)

        def _describe(self, node: Any, node_id: str) -> tuple[GraphNode, str, dict[str, str]]:
            if isinstance(node, TensorNode):
                shape = tuple(int(d) for d in node.tensor_shape)
                title = node.name.replace("-tensor", "")
                if title == "input":
                    title = self.input_names.get(shape, title)
                label = _node_label(title, format_shape(shape), "")
                gnode = GraphNode(node_id, label, "", "tensor", (), (shape,), 0, "tensor")
                return gnode, style.FILL_TENSOR, {"style": "filled"}
            inputs, outputs = _shapes(node.input_shape), _shapes(node.output_shape)
            if isinstance(node, ModuleNode):
                path = self.paths.get(node.compute_unit_id, "")
                module = self.modules.get(node.compute_unit_id)
                params = sum(p.numel() for p in module.parameters()) if module is not None else 0
                subtitle = node.name + (f" · {format_count(params)} params" if params else "")
                label = _node_label(path or node.name, subtitle, _shapes_line(inputs, outputs))
                fill = style.FILL_PARAMETRIC if params else style.FILL_PARAMETERLESS
                gnode = GraphNode(node_id, label, path, node.name, inputs, outputs, params, "module")
                return gnode, fill, {}
            assert isinstance(node, FunctionNode)
            label = _node_label(node.name, "", _shapes_line(inputs, outputs))
            gnode = GraphNode(node_id, label, "", node.name, inputs, outputs, 0, "function", owner=self._owner(node))
            return gnode, style.FILL_FUNCTION, {"shape": "ellipse", "style": "filled"}

        def _owner(self, node: Any) -> str:
            """The innermost module whose forward called this function."""
            if not hasattr(self, "owners"):
                self.owners = {}
                self._collect_owners(self.node_hierarchy, "")
            return self.owners.get(id(node), "")

        def _collect_owners(self, tree: Any, owner: str) -> None:
            """Walk torchview's nesting ({module: [calls inside it]}) noting each function's module."""
            if isinstance(tree, dict):
                for module_node, inside in tree.items():
                    path = self.paths.get(getattr(module_node, "compute_unit_id", None), owner)
                    for item in inside:
                        self._collect_owners(item, path)
            elif isinstance(tree, FunctionNode):
                self.owners[id(tree)] = owner

    return RecordingGraph


def _keyword_input_names(data: Any) -> dict[tuple[int, ...], str]:
    """Keyword inputs by shape, where shapes tell them apart (``input_ids`` 1×16, ``attention_mask`` 1×1×16×16)."""
    if not isinstance(data, Mapping):
        return {}
    shapes: dict[tuple[int, ...], list[str]] = {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            shapes.setdefault(tuple(value.shape), []).append(str(key))
    return {shape: keys[0] for shape, keys in shapes.items() if len(keys) == 1}


def quote(text: str) -> str:
    """A dot double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def finish_template(source: str, title: str) -> str:
    """Add the legend placeholder before the closing brace, and a title on top."""
    body = source.rstrip()
    assert body.endswith("}")
    body = body[:-1] + f"\t{LEGEND_PLACEHOLDER}\n}}\n"
    if title:
        head, brace, rest = body.partition("{")
        body = f"{head}{brace}\n\tlabel={quote(title)} labelloc=t fontsize=15{rest}"
    return body


def _trace(
    module: nn.Module,
    data: Any,
    device: str,
    depth: int,
    expand_nested: bool,
    title: str,
    collapse: Sequence[RepeatedBlock] = (),
    spread: Sequence[RepeatedBlock] = (),
) -> ModuleGraph:
    import graphviz
    from torchview.torchview import forward_prop, process_input

    visual = graphviz.Digraph(
        name="model",
        graph_attr=dict(style.GRAPH_ATTR),
        node_attr=dict(style.NODE_ATTR),
        edge_attr=dict(style.EDGE_ATTR),
    )
    inputs, kwargs, input_nodes = process_input(data, None, {}, device, None, False)
    graph = _recording_graph_class()(visual, input_nodes, True, expand_nested, True, True, False, depth, False)
    graph.paths, graph.modules, graph.recorded, graph.default_fills = {}, {}, {}, {}
    graph.clusters, graph.spread_blocks = {}, tuple(spread)
    graph.input_names = _keyword_input_names(data)
    with collapsed(module, collapse):
        for path, sub in module.named_modules():
            graph.paths.setdefault(id(sub), path)
            graph.modules.setdefault(id(sub), sub)
        forward_prop(module, inputs, device, graph, "eval", **kwargs)
    graph.fill_visual_graph()
    visual.graph_attr.pop("size", None)  # torchview caps the drawing size; we let viewers zoom
    nodes = tuple(graph.recorded.values())
    template = box_repeats(visual.source, nodes, collapse, graph.clusters if expand_nested else {})
    return ModuleGraph(
        template=finish_template(template, title),
        nodes=nodes,
        fills=dict(graph.default_fills),
        kind="module",
        title=title,
        repeats=tuple(collapse),
        expanded=tuple(spread),
    )


def _device_of(module: nn.Module) -> str:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return str(tensor.device)
    return "cpu"


SMALL_MODEL_PARAMS = 10_000_000
"""Below this many parameters a real forward pass is cheaper than the meta path.

The first meta-device forward in a process imports torch's reference kernels
(seconds); a small model runs for real in milliseconds instead."""


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_graph(
    module: nn.Module,
    example_input: Any,
    *,
    depth: int = 3,
    expand_nested: bool = False,
    title: str = "",
    on_meta: bool | None = None,
    collapse_repeats: bool = True,
    expand: Collection[str] = (),
) -> ModuleGraph:
    """Trace ``module`` on ``example_input`` into a graph of its layers.

    ``depth`` is how many levels of submodules are opened; ``expand_nested`` draws
    the opened containers as dashed boxes. ``on_meta`` forces (or forbids) the meta
    device; by default big models trace on meta and small ones for real. The
    caller's module is never moved (a collapsed block is restored after tracing).

    ``collapse_repeats`` draws each block of identical layers once (``×32``), except
    the containers named in ``expand`` (``{"model.layers"}``), drawn layer by layer.
    """
    if depth < 0:
        raise ArchitectureError(f"graph depth must be 0 or more, not {depth}")
    blocks = find_repeated_blocks(module)
    collapse = [b for b in blocks if b.path not in expand] if collapse_repeats else []
    spread = [b for b in blocks if b not in collapse]
    try:
        return _module_graph(module, example_input, depth, expand_nested, title, on_meta, collapse, spread)
    except ArchitectureError:
        if not collapse:
            raise
    # a forward that needs every layer (it indexes them by number): draw them all
    return _module_graph(module, example_input, depth, expand_nested, title, on_meta, [], blocks)


def _module_graph(
    module: nn.Module,
    example_input: Any,
    depth: int,
    expand_nested: bool,
    title: str,
    on_meta: bool | None,
    collapse: Sequence[RepeatedBlock],
    spread: Sequence[RepeatedBlock],
) -> ModuleGraph:
    device = _device_of(module)
    if on_meta is None:
        on_meta = device == "meta" or parameter_count(module) > SMALL_MODEL_PARAMS
    errors: list[Exception] = []
    if on_meta:
        try:
            meta = module if device == "meta" else _meta_copy(module)
            return _trace(meta, _to_device(example_input, "meta"), "meta", depth, expand_nested, title,
                          collapse, spread)
        except Exception as exc:  # some forwards need real data (data-dependent shapes, .item())
            errors.append(exc)
        if device == "meta":
            cause = errors[0].__cause__ or errors[0]
            raise ArchitectureError(
                f"cannot trace {type(module).__name__} on the meta device: {type(cause).__name__}: {cause}",
                hint="build the model on a real device to draw its graph",
            ) from errors[0]
    try:
        return _trace(module, _to_device(example_input, device), device, depth, expand_nested, title, collapse, spread)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ArchitectureError(
            f"cannot trace {type(module).__name__} with its example input: {type(cause).__name__}: {cause}",
            hint="check that the example input matches what the model's forward() expects",
        ) from exc
