"""Marks on a graph picture: layers drawn in a colour of their own on top of an overlay.

An overlay colours layers by a number; some layers need saying apart from any
number (re-basin's layers that could not be permuted). ``marks`` maps a module
path to a colour; marked nodes take that colour and the legend gains a line for
it. Qt-free on purpose: this runs inside the Graph view's layout jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from typing import Any

from merge_studio.core.progress import CancelToken, check_cancel
from merge_studio.graph.jobs import GraphPicture, Overlay, iter_recolor
from merge_studio.graph.model import ModuleGraph
from merge_studio.graph.overlay import font_for
from merge_studio.graph.render import GraphvizUnavailable, render_svg

MARKS_LEGEND_ID = "ms_marks_legend"
DEFAULT_MARK_LABEL = "could not be permuted"


def marked_path(path: str, marks: Mapping[str, str]) -> str | None:
    """The mark colour for a drawn module path: its own, or one inside it (a collapsed block)."""
    if not path:
        return None
    if path in marks:
        return marks[path]
    prefix = path + "."
    return next((colour for layer, colour in marks.items() if layer.startswith(prefix)), None)


def _legend_dot(marks: Mapping[str, str], label: str) -> str:
    lines = []
    for i, colour in enumerate(dict.fromkeys(marks.values())):
        node = f"{MARKS_LEGEND_ID}_{i}"
        lines.append(
            f'{{rank=source; {node} [id={node} shape=box style="filled,rounded" fillcolor="{colour}" '
            f'fontcolor="{font_for(colour)}" fontsize=10 label="{label}"]}}\n'
        )
    return "".join(lines)


def mark_graph(graph: ModuleGraph, marks: Mapping[str, str], label: str = DEFAULT_MARK_LABEL) -> ModuleGraph:
    """A copy of ``graph`` whose marked layers are filled with their mark colour."""
    if not marks:
        return graph
    fills, fonts = dict(graph.fills), dict(graph.font_colors)
    hit = False
    for node in graph.nodes:
        colour = marked_path(node.module_path, marks)
        if colour is not None:
            fills[node.node_id], fonts[node.node_id] = colour, font_for(colour)
            hit = True
    legend = graph.legend_dot + (_legend_dot(marks, label) if hit else "")
    return graph.with_fills(fills, fonts, graph.legend, legend)


def mark_picture(picture: GraphPicture, marks: Mapping[str, str], label: str = DEFAULT_MARK_LABEL) -> GraphPicture:
    """The picture with marks applied and laid out again (the SVG stays ``None`` without Graphviz)."""
    if not marks or picture.graph.kind != "module":
        return picture
    graph = mark_graph(picture.graph, marks, label)
    svg = picture.svg
    if svg is not None:
        try:
            svg = render_svg(graph.dot)
        except GraphvizUnavailable:
            svg = None
    return replace(picture, graph=graph, svg=svg)


def with_marks(
    job: Callable[[CancelToken], Generator[Any, None, GraphPicture]], marks: Mapping[str, str] | None
) -> Callable[[CancelToken], Generator[Any, None, GraphPicture]]:
    """Wrap a picture job so its result carries ``marks`` (unchanged when there are none)."""
    if not marks:
        return job
    frozen = dict(marks)

    def run(cancel: CancelToken) -> Generator[Any, None, GraphPicture]:
        picture = yield from job(cancel)
        check_cancel(cancel)
        return mark_picture(picture, frozen)

    return run


def iter_recolor_marked(
    picture: GraphPicture, overlay: Overlay | None, marks: Mapping[str, str] | None, cancel: CancelToken | None = None
) -> Generator[Any, None, GraphPicture]:
    """:func:`iter_recolor`, then the marks."""
    result = yield from iter_recolor(picture, overlay, cancel)
    check_cancel(cancel)
    return mark_picture(result, marks) if marks else result
