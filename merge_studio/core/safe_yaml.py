"""YAML from files and metadata other people wrote, read without letting it run away.

``yaml.safe_load`` never runs code, but two small documents still hurt: aliases
that refer to aliases ("billion laughs": a few hundred bytes that expand to
hundreds of millions of nodes, which every later walk over the data pays for),
and brackets nested thousands deep (PyYAML recurses, so it dies with a
RecursionError instead of a YAML error). Recipes, mergekit configs and the recipe
a merged file carries in its metadata are all read through :func:`load_yaml`,
which measures the document as a graph first and refuses such input by name.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 200_000  # the expanded document; real recipes have a few hundred
MAX_DEPTH = 100


class UnsafeYamlError(yaml.YAMLError):
    """A document too large once its aliases are expanded, or nested too deeply to read."""


def _measure(root: yaml.Node) -> tuple[int, int]:
    """(nodes once aliases are expanded, depth); a node shared through aliases is measured once."""
    sizes: dict[int, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order without recursion: a node is sized after all of its children
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
            continue
        children = [sizes[id(c)] for c in _children(node)]
        size = 1 + sum(s for s, _ in children)
        depth = 1 + max((d for _, d in children), default=0)
        if size > MAX_NODES:
            raise UnsafeYamlError(f"the document expands to more than {MAX_NODES:,} values through its aliases")
        if depth > MAX_DEPTH:
            raise UnsafeYamlError(f"the document is nested more than {MAX_DEPTH} levels deep")
        sizes[id(node)] = (size, depth)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def compose_yaml(text: str) -> yaml.Node | None:
    """The checked node graph of ``text`` (None for an empty document); raises :class:`yaml.YAMLError`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise UnsafeYamlError(f"the document is nested more than {MAX_DEPTH} levels deep") from None
    if node is not None:
        _measure(node)
    return node


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` for untrusted text: no code, no alias bombs, no runaway nesting."""
    return construct_yaml(compose_yaml(text))


def construct_yaml(node: yaml.Node | None) -> Any:
    """The Python value of a node :func:`compose_yaml` checked (plain types only)."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()
