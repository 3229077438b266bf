"""Colour graph nodes (and tree rows) by a per-layer value, with a legend.

A node drawing a whole block (``layer1`` at low depth) gets the mean of the values
of the layers inside it, so an overlay stays meaningful at every depth.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from merge_studio.graph.model import GraphNode, Legend, ModuleGraph, LEGEND_NODE_ID, html_escape

MISSING_COLOR = "#f4f4f4"
NEUTRAL_COLOR = "#ffffff"  # inputs, outputs and functions while an overlay is shown
_LEGEND_STEPS = 6


DIVERGING_CMAP = "RdBu_r"


@dataclass(frozen=True)
class OverlayScale:
    """What an overlay's colours mean, fixed before looking at the values.

    ``fixed``: ``low``–``high`` (similarities and shares: 0–1), whatever the values;
    ``from_zero``: 0 up to the largest value (a change: no change is the bottom colour);
    ``diverging``: a two-sided map centred on ``reference`` (signed values);
    ``stretch``: the values' own min–max over the whole map, only when asked for,
    since it makes 0.469 and 0.472 look as different as 0 and 1.
    """

    kind: Literal["fixed", "from_zero", "diverging", "stretch"] = "from_zero"
    low: float = 0.0
    high: float = 1.0
    reference: float = 0.0

    @classmethod
    def share(cls) -> OverlayScale:
        return cls("fixed", 0.0, 1.0)

    @classmethod
    def for_values(cls, values: Mapping[str, float]) -> OverlayScale:
        """The natural scale for values of unknown meaning: from 0 when all are ≥ 0, else diverging around 0."""
        finite = [v for v in values.values() if math.isfinite(v)]
        return cls("from_zero") if all(v >= 0 for v in finite) else cls("diverging", reference=0.0)

    def resolve(self, values: Mapping[str, float], cmap: str) -> tuple[float, float, str, str]:
        """(vmin, vmax, colour map, words for the legend) for these values."""
        finite = [float(v) for v in values.values() if math.isfinite(v)]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if self.kind == "fixed":
            return self.low, self.high, cmap, f"scale {format_value(self.low)} to {format_value(self.high)}"
        if self.kind == "from_zero":
            top = high if high > 0 else 1.0
            return 0.0, top, cmap, f"from 0 (no change) to {format_value(top)}"
        if self.kind == "diverging":
            reach = max((abs(v - self.reference) for v in finite), default=1.0) or 1.0
            return (self.reference - reach, self.reference + reach, DIVERGING_CMAP,
                    f"diverging around {format_value(self.reference)}")
        return low, high, cmap, f"stretched over the values: {format_value(low)} to {format_value(high)}"


def layer_value(path: str, values: Mapping[str, float]) -> float | None:
    """The value of ``path``, or the mean over the layers inside it; ``None`` when none."""
    if path in values and math.isfinite(values[path]):
        return float(values[path])
    if not path:
        return None
    prefix = path + "."
    inside = [v for k, v in values.items() if k.startswith(prefix) and math.isfinite(v)]
    return sum(inside) / len(inside) if inside else None


def _colormap(name: str):  # noqa: ANN202 - a matplotlib Colormap
    import matplotlib

    return matplotlib.colormaps[name]


def value_colors(
    paths: Iterable[str],
    values: Mapping[str, float],
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
    missing_color: str = MISSING_COLOR,
) -> tuple[dict[str, str], Legend]:
    """Hex colours for each path that has a value, and the legend that explains them."""
    from matplotlib.colors import to_hex

    finite = [float(v) for v in values.values() if math.isfinite(v)]
    low = vmin if vmin is not None else (min(finite) if finite else 0.0)
    high = vmax if vmax is not None else (max(finite) if finite else 1.0)
    if high <= low:
        high = low + (abs(low) * 1e-6 or 1e-12)
    colormap = _colormap(cmap)

    def color(value: float) -> str:
        return to_hex(colormap(min(1.0, max(0.0, (value - low) / (high - low)))))

    colors = {}
    for path in paths:
        value = layer_value(path, values)
        if value is not None:
            colors[path] = color(value)
    stops = tuple((low + (high - low) * i / (_LEGEND_STEPS - 1), "") for i in range(_LEGEND_STEPS))
    stops = tuple((v, color(v)) for v, _ in stops)
    return colors, Legend(title, low, high, stops, missing_color)


def font_for(fill: str) -> str:
    """White text on dark fills, dark text on light ones (legible on any colormap)."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(fill)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#ffffff" if luminance < 0.45 else "#1b2733"


def format_value(value: float) -> str:
    """Short legend numbers: 0.0123, 1.5e-05, 12.3."""
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e4:
        return f"{value:.2g}"
    return f"{value:.3g}"


def legend_dot(legend: Legend) -> str:
    """A small HTML-table node showing the colour scale, placed at the top of the graph."""
    cells = "".join(
        f'<TD BGCOLOR="{c}" WIDTH="34" HEIGHT="14"></TD>' for _, c in legend.stops
    )
    numbers = "".join(f'<TD><FONT POINT-SIZE="8">{format_value(v)}</FONT></TD>' for v, _ in legend.stops)
    span = len(legend.stops)
    label = (
        f'<<TABLE BORDER="1" COLOR="#9aa3ad" CELLBORDER="0" CELLSPACING="1" CELLPADDING="2" BGCOLOR="white">'
        f'<TR><TD COLSPAN="{span}"><B>{html_escape(legend.title or "value")}</B></TD></TR>'
        f"<TR>{cells}</TR><TR>{numbers}</TR>"
        f'<TR><TD BGCOLOR="{legend.missing_color}" BORDER="1" COLOR="#9aa3ad"></TD>'
        f'<TD COLSPAN="{span - 1}" ALIGN="LEFT"><FONT POINT-SIZE="8">no value</FONT></TD></TR>'
        f"</TABLE>>"
    )
    return f'{{rank=source; {LEGEND_NODE_ID} [shape=plaintext style="" margin=0 id={LEGEND_NODE_ID} label={label}]}}\n'


def color_nodes(
    graph: ModuleGraph,
    values: Mapping[str, float],
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    missing_color: str = MISSING_COLOR,
    title: str = "",
) -> ModuleGraph:
    """A copy of ``graph`` whose layer nodes are filled by ``values`` (module path → value).

    Layers without a value get ``missing_color``; inputs, outputs and functions turn
    white so the coloured layers stand out. A legend node explains the scale. A block
    drawn once for many layers (``×32``) shows their mean, and its tooltip note their spread.
    """
    paths = {n.module_path for n in graph.nodes if n.module_path}
    notes: dict[str, str] = {}
    if graph.repeats:
        from merge_studio.graph.repeats import fold_values, spread_of

        per_layer = values
        values, _ = fold_values(values, graph.repeats)
        for node in graph.nodes:
            spread = spread_of(node.module_path, per_layer, graph.repeats) if node.module_path else None
            if spread is not None:
                notes[node.node_id] = f"{title or 'value'}: {spread.describe()}"
    colors, legend = value_colors(
        paths, values, cmap=cmap, vmin=vmin, vmax=vmax, title=title, missing_color=missing_color
    )
    fills: dict[str, str] = {}
    fonts: dict[str, str] = {}
    for node in graph.nodes:
        fills[node.node_id] = _fill_for(node, colors, missing_color)
        fonts[node.node_id] = font_for(fills[node.node_id])
    return graph.with_fills(fills, fonts, legend, legend_dot(legend), notes)


def _fill_for(node: GraphNode, colors: Mapping[str, str], missing_color: str) -> str:
    if node.module_path in colors:
        return colors[node.module_path]
    if node.kind in ("module", "tree") and node.module_path:
        return missing_color
    return NEUTRAL_COLOR


def clear_overlay(graph: ModuleGraph, original: ModuleGraph) -> ModuleGraph:
    """Back to the original fills (the graph as first built)."""
    return graph.with_fills(original.fills, original.font_colors, None, "", {})
