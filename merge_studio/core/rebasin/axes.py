"""Axis variables: which tensor axes must be permuted together.

Each hidden axis a layer creates is a *variable*; following the traced graph
unifies variables that must share one permutation (a layer's outputs and the next
layer's inputs, both operands of a residual add...). A variable unified with
:data:`FIXED` is never permuted: model inputs and outputs are fixed, and so is
anything an unknown operation touches (with the reason kept, so it can be reported).

A tensor dimension is labelled by a tuple of :class:`Segment` s: usually one
(``(v, n, 1)``: the dimension is variable ``v``'s ``n`` units), several after a
concatenation, and with ``block > 1`` after flattening channels with the spatial
positions behind them (each unit then owns ``block`` consecutive elements).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

FIXED = 0  # the variable of axes that are never permuted


@dataclass(frozen=True)
class Segment:
    """``n`` units of variable ``var``, each ``block`` consecutive elements long."""

    var: int
    n: int
    block: int = 1

    @property
    def length(self) -> int:
        return self.n * self.block


DimLabel = tuple[Segment, ...]
TensorLabel = tuple[DimLabel, ...]


@dataclass(frozen=True)
class Member:
    """One tensor axis (or a range of it) that a permutation group reorders.

    The range starts at ``offset`` and holds ``n`` units of ``block`` elements
    each; a packed tensor such as ``in_proj_weight`` (q, k and v stacked) has one
    member per part.
    """

    tensor: str
    axis: int
    offset: int = 0
    n: int = 0
    block: int = 1

    @property
    def length(self) -> int:
        return self.n * self.block

    def to_json(self) -> dict[str, int | str]:
        return {"tensor": self.tensor, "axis": self.axis, "offset": self.offset, "n": self.n, "block": self.block}


def fixed_dim(size: int) -> DimLabel:
    return (Segment(FIXED, int(size), 1),)


def fixed_tensor(shape: Iterable[int]) -> TensorLabel:
    return tuple(fixed_dim(s) for s in shape)


def dim_size(label: DimLabel) -> int:
    return sum(s.length for s in label)


def dim_vars(label: DimLabel) -> list[int]:
    return [s.var for s in label]


def same_layout(a: DimLabel, b: DimLabel) -> bool:
    return len(a) == len(b) and all(x.n == y.n and x.block == y.block for x, y in zip(a, b, strict=True))


class AxisVars:
    """Union-find over axis variables, with their sizes, members and reasons to stay fixed.

    Variable :data:`FIXED` stands for every axis that is never permuted; unifying a
    variable with it *pins* the variable. A pin carries the reasons it was pinned
    when something the spec could not follow caused it (an unknown op), and none
    when it is natural (the model's inputs and outputs).
    """

    def __init__(self) -> None:
        self._parent: list[int] = [FIXED]
        self._size: list[int] = [0]
        self._hint: list[str] = ["fixed"]
        self.members: dict[int, list[Member]] = {}
        self._pinned: dict[int, list[str]] = {}  # root -> reasons (empty: natural)
        self.heads: dict[int, tuple[int, int]] = {}  # var -> (n_heads, partner var sharing the head order)
        self.producers: set[int] = set()  # variables created by a layer writing these units
        self.param_axes: set[int] = set()  # variables of a parameter's axis fetched directly (get_attr)

    def new(self, size: int, hint: str) -> int:
        var = len(self._parent)
        self._parent.append(var)
        self._size.append(int(size))
        self._hint.append(hint)
        return var

    def hint(self, var: int) -> str:
        return self._hint[var]

    def size(self, var: int) -> int:
        return self._size[self.find(var)]

    def find(self, var: int) -> int:
        root = var
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[var] != root:
            self._parent[var], var = root, self._parent[var]
        return root

    def is_fixed(self, var: int) -> bool:
        root = self.find(var)
        return root == FIXED or root in self._pinned

    def reasons(self, var: int) -> list[str]:
        """Why ``var`` is pinned by something the spec could not follow (empty otherwise)."""
        return list(self._pinned.get(self.find(var), []))

    def union(self, a: int, b: int, reason: str | None = None) -> None:
        """Make ``a`` and ``b`` one variable; sizes that differ pin both (with ``reason``)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if FIXED in (ra, rb):
            self.fix(rb if ra == FIXED else ra, reason)
            return
        if self._size[ra] != self._size[rb]:
            why = reason or f"axes of {self._size[ra]} and {self._size[rb]} units meet"
            self.fix(ra, why)
            self.fix(rb, why)
            return
        if rb < ra:
            ra, rb = rb, ra  # the older variable stays the root
        self._parent[rb] = ra
        if rb in self._pinned or ra in self._pinned:
            self._pinned[ra] = self._pinned.pop(ra, []) + self._pinned.pop(rb, [])
        if rb in self.heads:
            self.heads.setdefault(ra, self.heads[rb])

    def fix(self, var: int, reason: str | None = None) -> None:
        """Pin ``var``; a ``reason`` marks it as blocked by something the spec could not follow."""
        root = self.find(var)
        if root == FIXED:
            return
        reasons = self._pinned.setdefault(root, [])
        if reason and reason not in reasons:
            reasons.append(reason)

    def relayout(self, var: int, label: tuple[Segment, ...]) -> bool:
        """Let a directly fetched parameter axis take another dimension's layout (blocks, parts).

        Possible while the variable is still alone (nothing unified with it yet): its
        member is re-attached segment by segment and the variable itself retired.
        """
        if var not in self.param_axes or self.find(var) != var or len(self.members.get(var, [])) != 1:
            return False
        if any(self.find(v) == var for v in range(1, len(self._parent)) if v != var):
            return False
        (member,) = self.members.pop(var)
        offset = 0
        for seg in label:
            if seg.var != FIXED:
                self.add_member(seg.var, Member(member.tensor, member.axis, offset, seg.n, seg.block))
            offset += seg.length
        self.fix(var)
        return True

    def add_member(self, var: int, member: Member) -> None:
        if var != FIXED:
            self.members.setdefault(var, []).append(member)

    def groups(self) -> dict[int, list[Member]]:
        """Members of free (permutable) variables, by root in creation order."""
        out: dict[int, list[Member]] = {}
        for var in sorted(self.members):
            if not self.is_fixed(var):
                out.setdefault(self.find(var), []).extend(self.members[var])
        return out

    def blocked_members(self) -> dict[Member, list[str]]:
        """Members pinned because of something the spec could not follow, with the reasons."""
        out: dict[Member, list[str]] = {}
        for var, members in self.members.items():
            reasons = self.reasons(var)
            if reasons:
                for m in members:
                    out.setdefault(m, [])
                    out[m].extend(r for r in reasons if r not in out[m])
        return out


def label_vars(label: TensorLabel) -> Iterator[int]:
    for dim in label:
        for seg in dim:
            yield seg.var
