"""Which existing files or folders an output would replace, so front ends can ask first.

The writer replaces an existing output atomically; whether that is wanted is the
user's call. The CLI refuses unless ``--force``; the window asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from merge_studio.core.recipe import Recipe
from merge_studio.errors import OutputError


def merge_targets(recipe: Recipe) -> list[Path]:
    """The paths a merge writes (``out-1``, ``out-2`` … for methods that make one model per input)."""
    from merge_studio.core.writer import output_targets

    if not recipe.output:
        return []
    count = len(recipe.models) if recipe.spec.outputs == "per_model" else 1
    return output_targets(Path(recipe.output).expanduser(), count)


def existing(paths: Iterable[str | Path]) -> list[Path]:
    """Those of ``paths`` that already exist (a file or a folder, empty or not)."""
    return [Path(p) for p in paths if Path(p).expanduser().exists()]


def refuse_existing(paths: Iterable[str | Path], *, force: bool, flag: str = "--force") -> None:
    """Raise a one-line :class:`OutputError` naming the first existing path unless ``force``."""
    if force:
        return
    found = existing(paths)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutputError(f"{found[0]} already exists{more}", hint=f"pass {flag} to overwrite it, or choose another output")
