"""Layer-naming rules: what a model family calls the parts and blocks of its networks.

A checkpoint's tensor names say which family it belongs to (a Stable Diffusion
UNet has ``input_blocks``/``middle_block``/``output_blocks``; a transformer has
numbered decoder layers). A :class:`LayerNaming` turns that vocabulary into what
the rest of the program shares: each tensor's depth (for per-layer gradients),
its named block (for block weights such as SD's IN00…OUT11), the part it
belongs to (UNet, text encoder, VAE — for "keep this part from one model"), and
display labels for the module tree and the graph. Families add a rule with
:func:`register_naming`; views, methods and the engine only ever ask
:func:`naming_for`, so no ``if family == …`` is needed outside this package.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from merge_studio.core.methods.layered import layer_depths
from merge_studio.core.naming.blocks import BlockRef


@dataclass(frozen=True)
class Part:
    """A separately kept piece of a checkpoint (``unet``, ``text_encoder``, ``vae``)."""

    key: str
    label: str
    prefixes: tuple[str, ...]  # tensor names starting with one of these belong to it

    def holds(self, name: str) -> bool:
        return name.startswith(self.prefixes)


class LayerNaming:
    """The generic rule: depth from numbered blocks, no named blocks, no parts."""

    family: str = "generic"
    label: str = "Generic network"
    blocks: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()

    def depths(self, names: Iterable[str]) -> dict[str, float]:
        """Each tensor's position through the network in [0, 1]."""
        return layer_depths(names)

    def block_of(self, name: str) -> str | None:
        """The named block a tensor belongs to (``IN03``), ``None`` without named blocks."""
        return None

    def block_ref(self, name: str) -> BlockRef | None:
        block = self.block_of(name)
        return BlockRef(block, self.blocks) if block is not None else None

    def part_of(self, name: str) -> str | None:
        """The key of the part holding ``name`` (``vae``), ``None`` outside every part."""
        return next((p.key for p in self.parts if p.holds(name)), None)

    def part(self, key: str) -> Part | None:
        return next((p for p in self.parts if p.key == key), None)

    def module_label(self, path: str) -> str | None:
        """A short label for a module path in trees and graphs (``IN03``), or ``None``."""
        return next((p.label for p in self.parts if path + "." in p.prefixes), None)

    def display_rank(self, path: str) -> int:
        """Where a module goes among its siblings in trees (lower first); equal ranks keep
        a natural order (``2`` before ``10``)."""
        return 0

    def describe(self) -> str:
        """One line for the inspector: the family and what it holds."""
        if not self.parts:
            return self.label
        return f"{self.label} ({', '.join(p.label for p in self.parts)})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.family}>"


GENERIC = LayerNaming()
Detector = Callable[[Mapping[str, Any]], "LayerNaming | None"]
_DETECTORS: list[Detector] = []
_loaded = False
# Modules that register a rule on import; adding a family touches this list and its module.
BUILTIN_MODULES = ("merge_studio.core.naming.sd",)


def register_naming(detect: Detector) -> Detector:
    """Add a detector: given ``{tensor name: shape or info}``, a rule or ``None``."""
    _DETECTORS.append(detect)
    return detect


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import importlib

        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def naming_for(names: Collection[str] | Mapping[str, Any]) -> LayerNaming:
    """The rule for a checkpoint, from its tensor names (and shapes, when given a mapping
    of names to shapes or infos; some families are told apart by a shape)."""
    _load_builtins()
    shapes: Mapping[str, Any] = names if isinstance(names, Mapping) else dict.fromkeys(names)
    for detect in _DETECTORS:
        rule = detect(shapes)
        if rule is not None:
            return rule
    return GENERIC
