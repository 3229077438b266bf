"""What kind of model a loaded checkpoint is, in words for the inspector and the model list."""

from __future__ import annotations

import weakref
from typing import Any


def model_family(checkpoint: Any) -> tuple[str, str] | None:
    """``(short label, longer description)`` when the checkpoint is of a known family, else ``None``."""
    adapter = getattr(checkpoint, "adapter", None)
    if adapter is not None:
        return adapter.kind_label, adapter.describe()
    from merge_studio.core.naming.base import naming_for  # imports torch via layered: off the start-up path

    naming = naming_for({name: info.shape for name, info in checkpoint.infos.items()})
    if naming.family == "generic":
        return None
    return naming.label, naming.describe()


_NAMING_CACHE: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # checkpoint -> its naming


def session_naming(session: Any) -> Any | None:
    """The layer naming of the first loaded model that is not an adapter (``None`` without one)."""
    from merge_studio.core.naming.base import naming_for

    for model in session.ready_models:
        ck = model.checkpoint
        if ck is None or getattr(ck, "adapter", None) is not None:
            continue
        if ck not in _NAMING_CACHE:
            _NAMING_CACHE[ck] = naming_for({name: info.shape for name, info in ck.infos.items()})
        return _NAMING_CACHE[ck]
    return None
