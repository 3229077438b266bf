"""Stand-ins for ``torch`` and ``torch.nn`` that import torch on first attribute use.

Method modules declare their parameters and register themselves when the GUI
lists methods; importing torch there cost ~1.4 s before the first paint. Code
that uses ``torch.x`` inside functions works unchanged with these stand-ins;
annotations stay strings (``from __future__ import annotations``), so only
module-level uses of torch would defeat the laziness.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any


class LazyModule:
    """A module proxy: ``getattr`` imports the real module once, then delegates."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            self._module = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


if TYPE_CHECKING:
    import torch
    from torch import nn
else:
    torch = LazyModule("torch")
    nn = LazyModule("torch.nn")

__all__ = ["LazyModule", "nn", "torch"]
