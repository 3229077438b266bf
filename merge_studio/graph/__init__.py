"""Model graphs, Qt-free: torchview traces, graphviz lays out, overlays colour layers."""

from merge_studio.graph.build import module_graph
from merge_studio.graph.key_tree import key_tree_graph
from merge_studio.graph.model import GraphNode, Legend, ModuleGraph
from merge_studio.graph.overlay import color_nodes
from merge_studio.graph.render import GraphvizUnavailable, dot_available, render_png, render_svg

__all__ = [
    "GraphNode",
    "GraphvizUnavailable",
    "Legend",
    "ModuleGraph",
    "color_nodes",
    "dot_available",
    "key_tree_graph",
    "module_graph",
    "render_png",
    "render_svg",
]
