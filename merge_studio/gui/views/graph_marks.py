"""Marks and fixed scales on a graph picture, on top of an overlay.

An overlay colours layers by a number; some layers need saying apart from any
number (re-basin's layers that could not be permuted). ``marks`` maps a module
path to a colour; marked nodes take that colour and the legend gains a line for
it. A fixed ``scale`` (vmin, vmax) keeps shares on 0..1, so 99 % does not look
like 0 % when every layer moved. Qt-free on purpose: this runs inside the Graph
view's layout jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from typing import Any

from merge_studio.core.progress import CancelToken, check_cancel
from merge_studio.graph.jobs import GraphPicture, Overlay, iter_recolor
from merge_studio.graph.model import ModuleGraph
from merge_studio.graph.overlay import color_nodes, font_for
from merge_studio.graph.render import GraphvizUnavailable, render_svg

MARKS_LEGEND_ID = "ms_marks_legend"
# Distinct, colour-blind-friendly fills for the models a stacked model's layers came from
# (the Graph tab's "source model" overlay and the slice editor's columns share them).
SOURCE_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d")
DEFAULT_MARK_LABEL = "could not be permuted"


class Marks(dict):
    """Module path → colour, with an optional legend label per colour (``labels``).

    Re-basin marks one kind of layer (one label for all); a stacked model marks each
    layer with the colour of the model it came from, and the legend names each model.
    """

    def __init__(self, colours: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None) -> None:
        super().__init__(colours or {})
        self.labels: dict[str, str] = dict(labels if labels is not None else getattr(colours, "labels", {}) or {})

    def label(self, colour: str, default: str) -> str:
        return self.labels.get(colour, default)


def marked_path(path: str, marks: Mapping[str, str]) -> str | None:
    """The mark colour for a drawn module path: its own, its block's (a layer's parts), or one inside it."""
    if not path:
        return None
    if path in marks:
        return marks[path]
    outer = path
    while "." in outer:
        outer = outer.rsplit(".", 1)[0]
        if outer in marks:
            return marks[outer]
    prefix = path + "."
    return next((colour for layer, colour in marks.items() if layer.startswith(prefix)), None)


def _marked(path: str, graph: ModuleGraph, marks: Mapping[str, str]) -> str | None:
    """A drawn block that stands for many layers (×32) is marked when any of them is."""
    if not graph.repeats or not path:
        return marked_path(path, marks)
    from merge_studio.graph.repeats import instance_paths

    return next((c for p in instance_paths(path, graph.repeats) if (c := marked_path(p, marks)) is not None), None)


def _legend_dot(marks: Mapping[str, str], label: str) -> str:
    lines = []
    named = Marks(marks)
    for i, colour in enumerate(dict.fromkeys(marks.values())):
        node = f"{MARKS_LEGEND_ID}_{i}"
        text = named.label(colour, label).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f'{{rank=source; {node} [id={node} shape=box style="filled,rounded" fillcolor="{colour}" '
            f'fontcolor="{font_for(colour)}" fontsize=10 label="{text}"]}}\n'
        )
    return "".join(lines)


def mark_graph(graph: ModuleGraph, marks: Mapping[str, str], label: str = DEFAULT_MARK_LABEL) -> ModuleGraph:
    """A copy of ``graph`` whose marked layers are filled with their mark colour."""
    if not marks:
        return graph
    fills, fonts = dict(graph.fills), dict(graph.font_colors)
    hit = False
    for node in graph.nodes:
        colour = _marked(node.module_path, graph, marks)
        if colour is not None:
            fills[node.node_id], fonts[node.node_id] = colour, font_for(colour)
            hit = True
    # Marks with their own labels (a stacked model's source models) are the whole story: no colour scale.
    scale_legend = "" if Marks(marks).labels else graph.legend_dot
    legend = scale_legend + (_legend_dot(marks, label) if hit else "")
    return graph.with_fills(fills, fonts, graph.legend, legend)


Scale = tuple[float | None, float | None]


def style_picture(
    picture: GraphPicture, overlay: Overlay | None, marks: Mapping[str, str] | None, scale: Scale | None = None
) -> GraphPicture:
    """Colour ``picture.base`` by ``overlay`` on ``scale``, paint the marks, lay it out once."""
    if overlay is None or picture.graph.kind != "module":
        return picture
    vmin, vmax = scale or (None, None)
    graph = color_nodes(picture.base, overlay.values, cmap=overlay.cmap, vmin=vmin, vmax=vmax, title=overlay.title)
    graph = mark_graph(graph, marks or {})
    svg = picture.svg
    if svg is not None:
        try:
            svg = render_svg(graph.dot)
        except GraphvizUnavailable:
            svg = None
    return replace(picture, graph=graph, svg=svg, overlay=overlay)


def with_style(
    job: Callable[[CancelToken], Generator[Any, None, GraphPicture]],
    overlay: Overlay | None,
    marks: Mapping[str, str] | None,
    scale: Scale | None = None,
) -> Callable[[CancelToken], Generator[Any, None, GraphPicture]]:
    """Wrap a picture job so its result carries ``marks`` and ``scale`` (unchanged when there are none)."""
    if not marks and not scale:
        return job
    frozen = Marks(marks)

    def run(cancel: CancelToken) -> Generator[Any, None, GraphPicture]:
        picture = yield from job(cancel)
        check_cancel(cancel)
        return style_picture(picture, overlay, frozen, scale)

    return run


def iter_restyle(
    picture: GraphPicture,
    overlay: Overlay | None,
    marks: Mapping[str, str] | None,
    scale: Scale | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Any, None, GraphPicture]:
    """:func:`iter_recolor`, with marks and a fixed scale when given (one layout pass either way)."""
    if not marks and not scale:
        return (yield from iter_recolor(picture, overlay, cancel))
    yield from ()
    check_cancel(cancel)
    return style_picture(picture, overlay, marks, scale)
