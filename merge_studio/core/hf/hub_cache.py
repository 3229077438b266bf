"""Hugging Face hub ids (``org/name``) in mergekit configs, found in the local cache, never downloaded.

mergekit configs name models by hub id and let mergekit download them. Merge Studio
never goes on the network; a hub id is looked up in the Hugging Face cache on disk
(where ``huggingface-cli download`` and transformers put models) and read from its
snapshot folder. A model that is not there gets an error that says it is a hub id,
not a path, and how to fetch it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from merge_studio.errors import RecipeError

# org/name, optionally @revision (mergekit's spelling); names as the hub allows them.
_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+)(?:@(?P<revision>[A-Za-z0-9_./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir() -> Path:
    """Where the Hugging Face libraries keep downloaded models (their own order of settings)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def parse_hub_id(ref: str) -> tuple[str, str] | None:
    """``("org/name", revision)`` for something spelled like a hub id, else None."""
    if ref.startswith((".", "~", "/")) or "\\" in ref:
        return None
    m = _HUB_ID.match(ref)
    if m is None or ".." in m.group("repo"):
        return None
    return m.group("repo"), m.group("revision") or "main"


def find_in_hub_cache(ref: str, cache: Path | None = None) -> Path | None:
    """The snapshot folder of a hub id in the local cache, or None (nothing is downloaded)."""
    parsed = parse_hub_id(ref)
    if parsed is None:
        return None
    repo, revision = parsed
    root = (cache or hub_cache_dir()) / ("models--" + repo.replace("/", "--"))
    commit = revision if _COMMIT.match(revision) else None
    if commit is None:
        ref_file = root / "refs" / revision
        try:
            commit = ref_file.read_text(encoding="utf-8").strip() if ref_file.is_file() else None
        except OSError:
            commit = None
    if not commit or not _COMMIT.match(commit):
        return None
    snapshot = root / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def resolve_model_reference(ref: str, base_dir: str | Path | None = None) -> str:
    """A model path from a config: a local path when one exists, else a hub id found in the cache.

    Raises :class:`RecipeError` for a hub id that is not in the cache, saying how to get it.
    Anything else is returned as given (opening it later reports a missing path).
    """
    local = Path(ref).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = Path(base_dir) / local
    if local.exists():
        return ref
    parsed = parse_hub_id(ref)
    if parsed is None:
        return ref
    found = find_in_hub_cache(ref)
    if found is not None:
        return str(found)
    repo, revision = parsed
    rev = f" --revision {revision}" if revision != "main" else ""
    raise RecipeError(
        f"{ref} is a Hugging Face hub id, not a path (there is no folder {local}), and it is not in "
        f"the local Hugging Face cache ({hub_cache_dir()}); Merge Studio does not download models",
        hint=f"run `huggingface-cli download {repo}{rev}` (it prints the folder), then use that folder, "
        "or write the path of a folder you already have",
    )
