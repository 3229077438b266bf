"""Regroup a module tree by a family's parts and blocks, for display.

The tree of tensor names of a Stable Diffusion file starts ``model`` →
``diffusion_model`` → ``input_blocks`` → ``3`` …; people look for "UNet", "IN03",
"Text encoder", "VAE". :func:`group_tree` folds chains of single, unlabelled
modules into one node (``model.diffusion_model``), labels the nodes the naming
rule knows (``UNet · model.diffusion_model``, ``IN03 · 3``) and puts the parts
first. Paths are left as they are, so overlays, clicks and searches that go by
module path keep working; only names and the nesting of wrapper modules change.
Works on any tree whose nodes have ``name``, ``path``, ``children`` (a dict) and
``tensors`` — the inspector's ``KeyNode`` and the graph's ``KeyTreeNode``.
"""

from __future__ import annotations

import re
from typing import Any

from merge_studio.core.naming.base import LayerNaming

LABEL_SEPARATOR = " · "


def _fold(node: Any, naming: LayerNaming) -> Any:
    """Fold ``node`` with its only child while it holds nothing else and has no label."""
    while (len(node.children) == 1 and not node.tensors and naming.module_label(node.path) is None):
        (child,) = node.children.values()
        child.name = f"{node.name}.{child.name}"
        node = child
    return node


def group_tree(root: Any, naming: LayerNaming) -> Any:
    """Fold, label and order ``root``'s subtree in place for ``naming``; returns ``root``.

    Leaves a generic family's tree untouched.
    """
    if not naming.parts and not naming.blocks:
        return root

    def natural(node: Any) -> tuple[int, tuple[Any, ...]]:
        last = node.path.rsplit(".", 1)[-1]
        parts = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", last) if t)
        return naming.display_rank(node.path), tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)

    def visit(node: Any) -> None:
        children = {}
        for child in sorted(node.children.values(), key=natural):
            child = _fold(child, naming)
            label = naming.module_label(child.path)
            visit(child)
            if label:
                child.name = f"{label}{LABEL_SEPARATOR}{child.name}"
            children[child.path] = child
        node.children = children

    visit(root)
    def part_index(node: Any) -> int:
        here = node.path + "."
        for i, part in enumerate(naming.parts):
            if any(here.startswith(p) or p.startswith(here) for p in part.prefixes):
                return i
        return len(naming.parts)

    root.children = dict(sorted(root.children.items(), key=lambda kv: part_index(kv[1])))
    return root
