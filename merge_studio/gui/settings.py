"""What the window remembers between runs: layout, recent files and last folders.

Typed properties over ``QSettings`` so call sites never spell keys or convert
types. Recipes are user files, not settings.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

MAX_RECENT = 10


class AppSettings:
    """Typed access to the application's ``QSettings``."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self._s = settings if settings is not None else QSettings()

    # --- window layout ---------------------------------------------------------------
    @property
    def geometry(self) -> QByteArray | None:
        value = self._s.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    @geometry.setter
    def geometry(self, value: QByteArray) -> None:
        self._s.setValue("window/geometry", value)

    @property
    def window_state(self) -> QByteArray | None:
        value = self._s.value("window/state")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    @window_state.setter
    def window_state(self, value: QByteArray) -> None:
        self._s.setValue("window/state", value)

    def splitter_state(self, name: str) -> QByteArray | None:
        value = self._s.value(f"window/splitter_{name}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_splitter_state(self, name: str, value: QByteArray) -> None:
        self._s.setValue(f"window/splitter_{name}", value)

    def panel_hidden(self, name: str) -> bool:
        """Whether the user hid a panel (``models``, ``method``, ``log``)."""
        return str(self._s.value(f"window/hidden_{name}", "false")).lower() == "true"

    def set_panel_hidden(self, name: str, hidden: bool) -> None:
        self._s.setValue(f"window/hidden_{name}", "true" if hidden else "false")

    @property
    def merge_threads(self) -> int:
        """Worker threads a merge may use; 0 means every core."""
        try:
            return max(0, int(self._s.value("merge/threads", 0)))
        except (TypeError, ValueError):
            return 0

    def set_merge_threads(self, threads: int) -> None:
        self._s.setValue("merge/threads", int(threads))

    @property
    def log_folded(self) -> bool:
        return str(self._s.value("window/log_folded", "false")).lower() == "true"

    def set_log_folded(self, folded: bool) -> None:
        self._s.setValue("window/log_folded", "true" if folded else "false")

    # --- recent files -----------------------------------------------------------------
    def _list(self, key: str) -> list[str]:
        value = self._s.value(key, [])
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in (value or [])]

    def _push(self, key: str, path: str | Path) -> None:
        p = str(Path(path).expanduser().resolve())
        items = [x for x in self._list(key) if x != p]
        self._s.setValue(key, [p, *items][:MAX_RECENT])

    @property
    def recent_models(self) -> list[str]:
        return self._list("recent/models")

    def add_recent_model(self, path: str | Path) -> None:
        self._push("recent/models", path)

    @property
    def recent_recipes(self) -> list[str]:
        return self._list("recent/recipes")

    def add_recent_recipe(self, path: str | Path) -> None:
        self._push("recent/recipes", path)

    def clear_recent(self) -> None:
        self._s.remove("recent")

    # --- last folders -----------------------------------------------------------------
    def last_folder(self, purpose: str) -> str:
        """The folder a file dialog for ``purpose`` (models, recipes, output) last used."""
        value = str(self._s.value(f"folders/{purpose}", "") or "")
        return value if value and Path(value).is_dir() else str(Path.home())

    def set_last_folder(self, purpose: str, path: str | Path) -> None:
        p = Path(path)
        self._s.setValue(f"folders/{purpose}", str(p if p.is_dir() else p.parent))

    @property
    def outputs_folder(self) -> Path | None:
        """The folder the user last merged into (suggested outputs go there); ``None`` until then."""
        value = str(self._s.value("folders/outputs", "") or "")
        return Path(value) if value and Path(value).is_dir() else None

    @outputs_folder.setter
    def outputs_folder(self, folder: str | Path) -> None:
        self._s.setValue("folders/outputs", str(folder))

    def sync(self) -> None:
        self._s.sync()
