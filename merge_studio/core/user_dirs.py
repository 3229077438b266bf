"""Where Merge Studio keeps the user's data (demo models, merge history)."""

from __future__ import annotations

import os
from pathlib import Path


def user_data_dir() -> Path:
    """``$MERGE_STUDIO_DATA_DIR``, else ``$XDG_DATA_HOME/merge-studio``, else ``~/.local/share/merge-studio``."""
    explicit = os.environ.get("MERGE_STUDIO_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "merge-studio"
