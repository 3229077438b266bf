"""The tree of tensor names: ``encoder.layers.0.attn.q.weight`` read as a module hierarchy.

The inspector shows it as a collapsible tree, the graph view matches its module
paths to graph nodes, and per-layer settings address its nodes. Every dotted
segment is a node, numeric ones (``layers.0``) included, so the tree mirrors
``named_modules()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from merge_studio.core.checkpoints.base import TensorInfo


@dataclass
class KeyNode:
    """One module (or the root, whose ``path`` is ``""``) and what lies under it."""

    name: str
    path: str
    children: dict[str, KeyNode] = field(default_factory=dict)
    tensors: dict[str, TensorInfo] = field(default_factory=dict)  # short name -> info, directly here
    parameter_count: int = 0  # elements in this subtree
    tensor_count: int = 0  # tensors in this subtree
    nbytes: int = 0  # bytes in this subtree

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def child_path(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def walk(self) -> Iterator[KeyNode]:
        """This node and every node below it, parents before children, in file order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children.values())))

    def find(self, path: str) -> KeyNode | None:
        """The node at a dotted module path relative to this one (``""`` is this node)."""
        node: KeyNode | None = self
        for part in path.split(".") if path else []:
            node = node.children.get(part) if node is not None else None
        return node

    def module_paths(self) -> list[str]:
        """Paths of the nodes that hold tensors directly (the modules with parameters)."""
        return [n.path for n in self.walk() if n.tensors]

    def tensor_names(self) -> list[str]:
        """Full names of every tensor in this subtree, in file order."""
        return [n.child_path(t) for n in self.walk() for t in n.tensors]

    def __repr__(self) -> str:
        return (f"KeyNode({self.path or '<root>'!r}, {len(self.children)} children, "
                f"{len(self.tensors)} tensors, {self.parameter_count} parameters)")


def build_key_tree(infos: Mapping[str, TensorInfo]) -> KeyNode:
    """Build the module tree of a checkpoint's tensors (``checkpoint.infos``).

    A name that is both a tensor and a module prefix (``a.b`` and ``a.b.c``) is
    kept as a tensor of ``a`` and as the child module ``b``. Empty segments
    (``a..b``) are kept as they are, so every tensor appears exactly once.
    """
    root = KeyNode(name="", path="")
    for full_name, info in infos.items():
        *modules, leaf = full_name.split(".")
        node = root
        chain = [root]
        for part in modules:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = KeyNode(name=part, path=node.child_path(part))
            node = child
            chain.append(node)
        node.tensors[leaf] = info
        for ancestor in chain:
            ancestor.parameter_count += info.numel
            ancestor.tensor_count += 1
            ancestor.nbytes += info.nbytes
    return root
