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
    member per part. ``repeat > 1`` marks a key/value projection under grouped-query
    attention: its ``n`` units are ``heads`` key/value heads, each serving ``repeat``
    query heads, and it follows the permutation the group's query heads induce.
    """

    tensor: str
    axis: int
    offset: int = 0
    n: int = 0
    block: int = 1
    repeat: int = 1
    heads: int = 0

    @property
    def length(self) -> int:
        return self.n * self.block

    def to_json(self) -> dict[str, int | str]:
        out: dict[str, int | str] = {"tensor": self.tensor, "axis": self.axis, "offset": self.offset, "n": self.n, "block": self.block}
        if self.repeat > 1:
            out.update(repeat=self.repeat, heads=self.heads)
        return out


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
        self.kv: dict[int, tuple[int, int]] = {}  # query-side var -> (key/value var, query heads per kv head)
        self.fixed_within: set[int] = set()  # head-structured vars whose order inside a head must stay (rotary)
        self.names: dict[int, str] = {}  # explicit group names (attention found in a graph)
        self.producers: set[int] = set()  # variables created by a layer writing these units
        self.param_axes: set[int] = set()  # variables of a parameter's axis fetched directly (get_attr)
        self._refined: dict[int, list[tuple[int, int]]] = {}  # root -> (piece var, units) after a split

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
        if ra in self._refined or rb in self._refined:
            self._union_refined(ra, rb, reason)
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
        for table in (self.kv, self.names):
            if rb in table:
                table.setdefault(ra, table[rb])
        if rb in self.fixed_within:
            self.fixed_within.add(ra)

    def fix(self, var: int, reason: str | None = None) -> None:
        """Pin ``var``; a ``reason`` marks it as blocked by something the spec could not follow."""
        root = self.find(var)
        if root == FIXED:
            return
        for piece, _ in self._refined.get(root, []):
            self.fix(piece, reason)
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
        if var == FIXED:
            return
        pieces = self._refined.get(self.find(var))
        if pieces is not None:  # the variable was split: so is every axis joining it later
            start = 0
            for piece, n in pieces:
                self.add_member(piece, Member(member.tensor, member.axis, member.offset + start * member.block, n, member.block))
                start += n
            return
        self.members.setdefault(var, []).append(member)

    # -- splitting a variable into consecutive pieces (a fused projection cut into q, k, v) -----
    def refined(self, var: int) -> list[tuple[int, int]] | None:
        return self._refined.get(self.find(var))

    def refine(self, var: int, sizes: list[int]) -> list[int] | None:
        """Split a free variable into consecutive pieces of ``sizes`` units, each its own variable.

        Restricting a permutation to one within each piece is always allowed, so every
        axis of the variable is cut the same way; labels naming the old variable are
        read through :meth:`refined`. ``None`` when it cannot be (pinned, or heads).
        """
        root = self.find(var)
        if self.is_fixed(root) or root in self.heads or root in self.kv or sum(sizes) != self._size[root]:
            return None
        if root in self._refined:
            current = [n for _, n in self._refined[root]]
            return [p for p, _ in self._refined[root]] if current == list(sizes) else None
        hint = self._hint[root]
        pieces, start = [], 0
        for n in sizes:
            pieces.append(self.new(n, f"{hint}[{start}:{start + n}]"))
            start += n
        moved = [m for v in range(1, len(self._parent)) if self.find(v) == root for m in self.members.pop(v, [])]
        self._refined[root] = list(zip(pieces, sizes, strict=True))
        if any(self.find(v) == root for v in self.producers):
            self.producers.update(pieces)
        for m in moved:
            self.add_member(root, m)
        return pieces

    def _union_refined(self, ra: int, rb: int, reason: str | None) -> None:
        """Union where one side was split: split the other the same way and join the pieces."""
        pa, pb = self._refined.get(ra), self._refined.get(rb)
        if FIXED in (ra, rb) or self.is_fixed(ra) or self.is_fixed(rb):
            for root in (ra, rb):
                for piece, _ in self._refined.get(root, []):
                    self.fix(piece, reason)
                self.fix(root, reason)
            return
        sizes = [n for _, n in (pa or pb or [])]
        if pa is None:
            self.refine(ra, sizes)
        if pb is None:
            self.refine(rb, sizes)
        pa, pb = self._refined.get(ra), self._refined.get(rb)
        if pa is None or pb is None or [n for _, n in pa] != [n for _, n in pb]:
            why = reason or "axes split into different pieces meet"
            for root in (ra, rb):
                for piece, _ in self._refined.get(root, []):
                    self.fix(piece, why)
                self.fix(root, why)
            return
        for (x, _), (y, _) in zip(pa, pb, strict=True):
            self.union(x, y, reason)

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
