"""``BASE+ADAPTER`` paths (mergekit's LoRA syntax), told apart from file names that hold a ``+``."""

from __future__ import annotations

from pathlib import Path


def _exists(text: str, root: Path | None) -> bool:
    p = Path(text).expanduser()
    if root is not None and not p.is_absolute():
        p = root / p
    try:
        return p.exists()
    except OSError:
        return False


def split_adapted_path(text: str, root: Path | None = None) -> tuple[str, str] | None:
    """``"base+adapter"`` -> ``("base", "adapter")`` when the whole does not exist and both
    sides do (the base may itself be ``base+adapter``). Relative sides are taken against ``root``."""
    if "+" not in text or _exists(text, root):
        return None
    for i in range(len(text) - 1, 0, -1):
        if text[i] != "+":
            continue
        left, right = text[:i], text[i + 1:]
        if right and _exists(right, root) and (_exists(left, root) or split_adapted_path(left, root)):
            return left, right
    return None
