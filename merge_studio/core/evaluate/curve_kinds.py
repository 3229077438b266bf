"""The curves a barrier comparison can draw, by name (no torch: the CLI's --help lists them)."""

from __future__ import annotations

CURVE_KINDS = ("naive", "bn_reset", "aligned", "repaired", "merged")
CURVE_LABELS = {"naive": "naive", "bn_reset": "BN reset", "aligned": "aligned", "repaired": "aligned + REPAIR",
                "merged": "via merged"}
