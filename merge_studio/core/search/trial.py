"""One trial: merge a recipe, score the merged model, clean up. Runs in a worker process or a Ray task.

Everything here is a plain function of plain data (a recipe mapping, objective
dicts), so it pickles to a ``spawn`` process or a Ray worker on another machine.
The merged model is written to a temporary folder in memory (``/dev/shm``) when
the inputs fit in a quarter of its free space, else to the system's temporary
folder, and removed after scoring.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_SHM = Path("/dev/shm")


def _input_bytes(recipe: Mapping[str, Any]) -> int:
    paths = [m["path"] for m in recipe["models"]] + ([recipe["base"]] if recipe.get("base") else [])
    total = 0
    for p in paths:
        path = Path(p)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def scratch_root(recipe: Mapping[str, Any]) -> str | None:
    """Where trial outputs go: memory-backed when the merged model fits comfortably."""
    try:
        if _SHM.is_dir() and os.access(_SHM, os.W_OK):
            free = shutil.disk_usage(_SHM).free
            if _input_bytes(recipe) / max(len(recipe["models"]), 1) * 4 < free / 4:
                return str(_SHM)
    except OSError:
        pass
    return None


def init_worker(threads: int = 1) -> None:
    """Process-pool initialiser: one intra-op thread per worker (the workers are the parallelism)."""
    import torch

    torch.set_num_threads(max(1, threads))


def run_trial(recipe: Mapping[str, Any], objectives: Sequence[Mapping[str, Any]], device: str = "auto") -> dict[str, Any]:
    """Merge ``recipe`` to a temporary output and return ``{"values": [...], "seconds": s}``.

    Errors are returned as ``{"error": message}`` rather than raised, so a worker stays
    alive and the driver records the trial as failed with a readable reason.
    """
    from merge_studio.core.engine import run_merge
    from merge_studio.core.recipe import Recipe
    from merge_studio.core.search.objectives import Objective, scores
    from merge_studio.errors import MergeStudioError

    start = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="merge-studio-trial-", dir=scratch_root(recipe))
    try:
        suffix = Path(recipe.get("output") or "merged.safetensors").suffix
        out = Path(folder) / (f"trial{suffix}" if suffix else "trial")
        data = {**recipe, "output": str(out), "hash_sources": False}
        result = run_merge(Recipe.from_mapping(data, source="search trial"))
        values = scores([Objective(**o) for o in objectives], result.output, data, device)
        return {"values": values, "seconds": time.perf_counter() - start, "pid": os.getpid()}
    except MergeStudioError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - a worker reports, the driver decides
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - start}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
