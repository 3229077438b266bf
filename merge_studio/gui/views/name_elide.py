"""Model names that fit a narrow column and still tell models apart.

``mlp_seed0.safetensors`` and ``mlp_seed1.safetensors`` cut at the end both read
``mlp_seed…``. A name that does not fit first loses its file extension (the row
below it names the format), then its middle, so the distinguishing end stays.
The full name is always in the row's tooltip.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics

EXTENSIONS = (".safetensors", ".pt2", ".pth", ".pt", ".bin", ".ckpt", ".gguf")
SUFFIX_MARK = "  · "  # "name  · base": the note after it stays whole


def fit_name(name: str, metrics: QFontMetrics, width: int) -> str:
    """``name`` as wide as ``width`` at most: whole, else without extension, else elided in the middle."""
    if metrics.horizontalAdvance(name) <= width:
        return name
    stem, note = (name.split(SUFFIX_MARK, 1) + [""])[:2]
    note = SUFFIX_MARK + note if note else ""
    for ext in EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    if metrics.horizontalAdvance(stem + note) <= width:
        return stem + note
    room = max(width - metrics.horizontalAdvance(note), metrics.horizontalAdvance("…") * 3)
    return metrics.elidedText(stem, Qt.TextElideMode.ElideMiddle, room) + note


__all__ = ["fit_name"]
