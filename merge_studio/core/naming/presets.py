"""Block-weight presets under the names supermerger and merge-block-weighted ship.

Each preset is defined on the 26 SD 1.x/2.x blocks (BASE, IN00–IN11, M00,
OUT00–OUT11) by a formula over the 25 UNet blocks, which reproduces the tools'
tables; BASE is 0 as in supermerger's table (1 in ALL_B). For SDXL's 20 blocks
a preset takes the values of the blocks with the same names (BASE, IN00–IN08,
M00, OUT00–OUT08), which is how supermerger converts a 26-value list for SDXL.
``IN_ONLY``, ``MID_ONLY`` and ``OUT_ONLY`` are ours (OUT_ONLY equals OUT12).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

SD_BLOCKS = ("BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12)))
_N = 25  # UNet blocks: IN00..IN11, M00, OUT00..OUT11


def _smoothstep(t: float) -> float:
    return t * t * (3 - 2 * t)


def _between(lo: int, hi: int, inside: float = 1.0) -> Callable[[int], float]:
    return lambda k: inside if lo <= k <= hi else 0.0


def _two_rings(a: tuple[int, int], b: tuple[int, int], soft: bool = False) -> Callable[[int], float]:
    def f(k: int) -> float:
        for lo, hi in (a, b):
            if lo <= k <= hi:
                return 0.5 if soft and k in (lo, hi) else 1.0
        return 0.0

    return f


def _wrap(n: int) -> Callable[[int], float]:
    return lambda k: 1.0 if k < n or k >= _N - n else 0.0


# k is the UNet block's position: 0 = IN00 … 12 = M00 … 24 = OUT11.
_FORMULAS: dict[str, Callable[[int], float]] = {
    "GRAD_V": lambda k: abs(12 - k) / 12,
    "GRAD_A": lambda k: 1 - abs(12 - k) / 12,
    "FLAT_25": lambda k: 0.25,
    "FLAT_50": lambda k: 0.5,
    "FLAT_75": lambda k: 0.75,
    "IN_ONLY": _between(0, 11),
    "MID_ONLY": _between(12, 12),
    "OUT_ONLY": _between(13, 24),
    "WRAP08": _wrap(4),
    "WRAP12": _wrap(6),
    "WRAP14": _wrap(7),
    "WRAP16": _wrap(8),
    "MID12_50": _between(5, 18, 0.5),
    "OUT07": _between(18, 24),
    "OUT12": _between(13, 24),
    "OUT12_5": lambda k: 0.5 if k == 12 else (1.0 if k > 12 else 0.0),
    "RING08_SOFT": _two_rings((5, 9), (15, 19), soft=True),
    "RING08_5": _two_rings((6, 9), (15, 18)),
    "RING10_5": _two_rings((5, 9), (15, 19)),
    "RING10_3": _two_rings((6, 10), (14, 18)),
    "SMOOTHSTEP": lambda k: _smoothstep(k / 24),
    "REVERSE-SMOOTHSTEP": lambda k: 1 - _smoothstep(k / 24),
    "COSINE": lambda k: (1 + math.cos(math.pi * k / 24)) / 2,
    "REVERSE_COSINE": lambda k: (1 - math.cos(math.pi * k / 24)) / 2,
    "ALL_A": lambda k: 0.0,
    "ALL_B": lambda k: 1.0,
}
PRESET_NAMES = tuple(_FORMULAS)
DESCRIPTIONS = {
    "GRAD_V": "1 at the ends, 0 in the middle block",
    "GRAD_A": "0 at the ends, 1 in the middle block",
    "IN_ONLY": "only the input blocks",
    "MID_ONLY": "only the middle block",
    "OUT_ONLY": "only the output blocks",
    "ALL_A": "every block 0 (the first model in a weighted sum)",
    "ALL_B": "every block 1, BASE too",
}


def sd_preset(name: str) -> list[float]:
    """The 26 SD 1.x/2.x values of a preset, BASE first."""
    try:
        formula = _FORMULAS[name]
    except KeyError:
        raise KeyError(f"unknown block-weight preset {name!r}; known: {', '.join(PRESET_NAMES)}") from None
    base = 1.0 if name == "ALL_B" else 0.0
    return [base, *(round(formula(k), 10) for k in range(_N))]


def preset_for(name: str, blocks: Sequence[str]) -> list[float]:
    """A preset for another block list: each block takes the value of its namesake."""
    values = dict(zip(SD_BLOCKS, sd_preset(name), strict=True))
    missing = [b for b in blocks if b not in values]
    if missing:
        raise KeyError(f"preset {name} has no value for {', '.join(missing)}")
    return [values[b] for b in blocks]
