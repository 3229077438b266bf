"""Shared look of every graph we draw: fonts, node colours, dot attributes."""

from __future__ import annotations

FONT = "Helvetica"

GRAPH_ATTR = {
    "rankdir": "TB",
    "nodesep": "0.25",
    "ranksep": "0.35",
    "fontname": FONT,
    "bgcolor": "white",
    "pad": "0.25",
}
NODE_ATTR = {
    "shape": "box",
    "style": "rounded,filled",
    "color": "#7f8c9a",
    "penwidth": "1",
    "fontname": FONT,
    "fontsize": "11",
    "margin": "0.12,0.05",
    "height": "0.3",
}
EDGE_ATTR = {"color": "#8a8f96", "arrowsize": "0.6", "fontname": FONT, "fontsize": "9"}

FILL_PARAMETRIC = "#d6e6f5"  # a layer with weights
FILL_PARAMETERLESS = "#e4efdb"  # ReLU, pooling, dropout...
FILL_FUNCTION = "#fbefd0"  # torch functions (add, cat, flatten)
FILL_TENSOR = "#f0f0f0"  # model inputs and outputs
FILL_TREE = "#d6e6f5"
FILL_TREE_ROOT = "#e8e8e8"
