"""Graph pictures as jobs: generators that build, colour and lay out, for any front end.

The GUI runs these on a worker thread and the CLI drains them; both get a
:class:`GraphPicture`. Without an architecture the picture is the module tree of
the tensor names; without Graphviz it still carries the graph data and the tree,
and says so (``dot_missing``), so a view can fall back instead of failing.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from merge_studio.core.arch import (
    ArchSpec,
    build_module,
    detect_arch,
    example_input,
    parse_arch,
    state_dict_mismatch,
)
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import ArchitectureError, MissingExtraError
from merge_studio.graph.build import SMALL_MODEL_PARAMS, module_graph, parameter_count
from merge_studio.graph.key_tree import KeyTreeNode, key_tree, key_tree_graph, shapes_of
from merge_studio.graph.model import ModuleGraph
from merge_studio.graph.overlay import color_nodes
from merge_studio.graph.render import GraphvizUnavailable, dot_available, render_svg


@dataclass(frozen=True)
class Overlay:
    """A per-layer value to colour by: a title for the legend and values by module path."""

    title: str
    values: Mapping[str, float]
    cmap: str = "viridis"


@dataclass(frozen=True)
class GraphPicture:
    """What a view shows: the graph (plain, and coloured), its SVG, and the name tree."""

    graph: ModuleGraph  # as drawn (with the overlay, if any)
    base: ModuleGraph  # without overlay: recolour this when the overlay changes
    svg: bytes | None  # None when Graphviz is missing
    tree: KeyTreeNode | None = None  # the module tree of tensor names (checkpoints only)
    arch: str | None = None
    dot_missing: bool = False
    overlay: Overlay | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _steps(total: int):  # noqa: ANN202 - a small progress helper
    done = 0

    def step(stage: str, message: str = "") -> Progress:
        nonlocal done
        done += 1
        return Progress(stage, done, total, unit="steps", message=message)

    return step


def graph_module(spec: ArchSpec) -> nn.Module:
    """The module to trace: built on the meta device, and for real when it is small.

    Weights do not matter for a picture, so nothing is bound; a real build of a
    small model avoids the slow first meta-device forward.
    """
    if spec.kind == "pt2":
        return build_module(spec)
    module = build_module(spec, device="meta")
    if parameter_count(module) <= SMALL_MODEL_PARAMS:
        with torch.no_grad():
            module = build_module(spec)
    return module


def finish_picture(
    base: ModuleGraph,
    overlay: Overlay | None,
    *,
    tree: KeyTreeNode | None = None,
    arch: str | None = None,
    notes: tuple[str, ...] = (),
) -> GraphPicture:
    """Colour ``base`` by ``overlay`` and lay it out (when Graphviz is installed)."""
    graph = color_nodes(base, overlay.values, cmap=overlay.cmap, title=overlay.title) if overlay else base
    svg = None
    missing = not dot_available()
    if not missing:
        try:
            svg = render_svg(graph.dot)
        except GraphvizUnavailable:
            missing = True
    return GraphPicture(graph, base, svg, tree, arch, missing, overlay, notes)


def iter_arch_picture(
    arch: str,
    *,
    depth: int = 3,
    expand_nested: bool = False,
    overlay: Overlay | None = None,
    title: str = "",
    expand: Collection[str] = (),
    collapse_repeats: bool = True,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, GraphPicture]:
    """Build the named architecture (on the meta device when it can), trace it, lay it out.

    Blocks of identical layers are drawn once (``×32``) unless ``collapse_repeats`` is
    off or their container is named in ``expand`` (``{"model.layers"}``).
    """
    step = _steps(4)
    spec = parse_arch(arch)
    yield step("build", f"building {spec}")
    module = graph_module(spec)
    data = example_input(spec, batch_size=1)
    check_cancel(cancel)
    yield step("trace", "tracing the forward pass")
    base = module_graph(module, data, depth=depth, expand_nested=expand_nested, title=title,
                        collapse_repeats=collapse_repeats, expand=expand)
    check_cancel(cancel)
    yield step("layout", f"laying out {len(base.nodes)} nodes")
    tree = key_tree({name: tuple(t.shape) for name, t in module.state_dict().items()}, str(spec))
    picture = finish_picture(base, overlay, tree=tree, arch=str(spec))
    yield step("done")
    return picture


def iter_checkpoint_picture(
    checkpoint: Any,
    *,
    arch: str | None = None,
    depth: int = 3,
    expand_nested: bool = False,
    overlay: Overlay | None = None,
    expand: Collection[str] = (),
    collapse_repeats: bool = True,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, GraphPicture]:
    """The graph of a checkpoint's architecture (given or detected), else its module tree.

    ``arch=None`` detects the architecture; ``arch=""`` asks for the tree. A given
    architecture that does not fit the checkpoint's names and shapes falls
    back to the tree and says why in ``notes``; nothing is read but the header.
    """
    step = _steps(4)
    yield step("inspect", "reading tensor names")
    tree = key_tree(checkpoint, getattr(checkpoint, "name", "model"))
    chosen = detect_arch(checkpoint) if arch is None else arch  # "" means: the tree, on purpose
    notes: tuple[str, ...] = ()
    if chosen:
        try:
            spec = parse_arch(chosen)
            module = graph_module(spec)
            shapes = {n: _Shape(shape) for n, shape in shapes_of(checkpoint).items()}
            problem = state_dict_mismatch(module, shapes)
            if problem:
                raise ArchitectureError(f"{chosen} does not fit {getattr(checkpoint, 'name', 'the checkpoint')}: {problem}")
            check_cancel(cancel)
            yield step("trace", "tracing the forward pass")
            base = module_graph(module, example_input(spec, batch_size=1), depth=depth,
                                expand_nested=expand_nested, title=getattr(checkpoint, "name", ""),
                                collapse_repeats=collapse_repeats, expand=expand)
            check_cancel(cancel)
            yield step("layout", f"laying out {len(base.nodes)} nodes")
            return finish_picture(base, overlay, tree=tree, arch=str(spec))
        except (ArchitectureError, MissingExtraError) as exc:
            notes = (f"{exc} — showing the module tree instead",)
    check_cancel(cancel)
    yield step("layout", "drawing the module tree")
    base = key_tree_graph(tree, depth=depth, title=getattr(checkpoint, "name", ""))
    return finish_picture(base, overlay, tree=tree, arch=None, notes=notes)


def iter_recolor(picture: GraphPicture, overlay: Overlay | None, cancel: CancelToken | None = None) -> Generator[Progress, None, GraphPicture]:
    """The same picture with another overlay (no re-tracing; only a new layout pass)."""
    yield Progress("layout", 0, 1, unit="steps", message="colouring")
    check_cancel(cancel)
    result = finish_picture(picture.base, overlay, tree=picture.tree, arch=picture.arch, notes=picture.notes)
    yield Progress("layout", 1, 1, unit="steps")
    return result


class _Shape:
    """A stand-in with only ``.shape``, so a state-dict check needs no tensor data."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
