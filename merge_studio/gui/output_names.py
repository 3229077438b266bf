"""Suggested output names: what the merge is, in a folder the user chose, never in an app's cache."""

from __future__ import annotations

import re
from pathlib import Path

OUTPUTS_FOLDER = "merge-studio-outputs"
MAX_STEM = 80
CHECKPOINT_SUFFIX = re.compile(r"(\.safetensors(\.index\.json)?|\.pth?|\.bin|\.ckpt|\.pt2)$", re.IGNORECASE)


def output_stem(method: str, paths: list[Path]) -> str:
    """``slerp-llama-a+llama-b``; ``ties-ft1+2-more`` for many inputs; safe for any file system."""
    names = [CHECKPOINT_SUFFIX.sub("", p.name) for p in paths]
    if not names:
        return f"merged-{method}"
    joined = "+".join(names) if len(names) <= 2 else f"{names[0]}+{len(names) - 1}-more"
    stem = re.sub(r"[^\w.+-]+", "_", f"{method}-{joined}").strip("._")
    return stem[:MAX_STEM].rstrip("._-+")


def inside_app_folders(folder: Path) -> bool:
    """Whether ``folder`` is in Merge Studio's data or cache folder, or in a ``.cache`` folder."""
    from merge_studio.core.hash_cache import cache_dir
    from merge_studio.core.user_dirs import user_data_dir

    try:
        resolved = folder.expanduser().resolve()
    except (OSError, RuntimeError):
        return False
    for app in (user_data_dir(), cache_dir()):
        try:
            if resolved.is_relative_to(app.expanduser().resolve()):
                return True
        except (OSError, RuntimeError):
            continue
    return ".cache" in resolved.parts
