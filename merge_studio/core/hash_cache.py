"""Remember each file's SHA-256, so re-running a merge on the same inputs does not hash them again.

Users tweak a parameter and merge the same checkpoints again and again; hashing two
2 GB inputs costs ~3 CPU-seconds every time. A digest is reused only while the file's
path, size, inode, modification and change times all match (the test git uses for its
index; the change time cannot be set back by a program), so an edited or replaced
file is hashed afresh. The cache is a small JSON file in the user cache folder; an
unreadable or unwritable cache only means hashing again.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path

CACHE_FILE = "sha256-cache.json"
MAX_ENTRIES = 2000
_lock = threading.Lock()


def cache_dir() -> Path:
    """``$MERGE_STUDIO_CACHE_DIR``, else ``$XDG_CACHE_HOME/merge-studio``, else ``~/.cache/merge-studio``."""
    explicit = os.environ.get("MERGE_STUDIO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "merge-studio"


def file_key(path: Path) -> str:
    """What must stay the same for a remembered digest to still be the file's."""
    st = os.stat(path)
    return f"{Path(path).resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _load(where: Path) -> dict[str, str]:
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def remembered(key: str) -> str | None:
    """The digest stored for ``key``, if any."""
    with _lock:
        return _load(cache_dir() / CACHE_FILE).get(key)


def remember(key: str, digest: str) -> None:
    """Store a digest (the newest :data:`MAX_ENTRIES` are kept); failures are ignored."""
    folder = cache_dir()
    where = folder / CACHE_FILE
    with _lock:
        entries = _load(where)
        entries.pop(key, None)
        entries[key] = digest
        kept = dict(list(entries.items())[-MAX_ENTRIES:])
        tmp = folder / f".{CACHE_FILE}.{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(kept), encoding="utf-8")
            os.replace(tmp, where)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # the folder itself is unusable
                pass
