"""Permutation specs derived from the traced module graph.

A :class:`PermutationSpec` lists the groups of hidden units that must share one
permutation (with every tensor axis each group reorders) and the points where the
graph could not be followed safely. Those points end their groups: every unit that
reaches them keeps its place, and they are reported by name, so a permuted model
always computes the same function or the spec says why a part stayed put.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from merge_studio.core.rebasin.axes import Member
from merge_studio.core.rebasin.propagate import Propagator
from merge_studio.core.rebasin.sites import ActivationSite, find_sites
from merge_studio.core.rebasin.trace import as_args, fx_trace, graph_module, record_shapes, set_mode

__all__ = [
    "ActivationSite", "ModuleAnalysis", "PermutationGroup", "PermutationSpec", "UnpermutedPoint",
    "analyse_module", "as_args", "set_mode", "spec_from_module", "trace",
]
trace = fx_trace  # the name other modules and tests know


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden units that move together.

    ``n_heads > 1`` marks an attention group whose permutation must keep heads
    whole (a permutation of heads, then one within each head); ``head_partner`` is
    the other attention group that shares the same order of heads. Under
    grouped-query attention ``kv_heads`` (< ``n_heads``) key/value heads each serve
    ``n_heads // kv_heads`` query heads: query heads move with their key/value head
    or among its query heads, and the within-head order is one per key/value head.
    ``fixed_within`` keeps the order inside each head (rotary embeddings).
    """

    name: str
    size: int
    members: tuple[Member, ...]
    n_heads: int = 1
    head_partner: str | None = None
    kv_heads: int = 0
    fixed_within: bool = False

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (as many as query heads without grouped-query attention)."""
        return self.kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.size // self.n_heads

    @property
    def tensors(self) -> list[str]:
        """Member tensor names, in order, without repeats."""
        return list(dict.fromkeys(m.tensor for m in self.members))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "n_heads": self.n_heads,
            "head_partner": self.head_partner,
            "kv_heads": self.n_kv_heads,
            "fixed_within": self.fixed_within,
            "members": [m.to_json() for m in self.members],
        }


@dataclass(frozen=True)
class UnpermutedPoint:
    """A node where groups had to end, why, and the tensors that therefore keep their order."""

    node: str
    reason: str
    tensors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "reason": self.reason, "tensors": list(self.tensors)}


@dataclass(frozen=True)
class PermutationSpec:
    """Every permutation group of a model, and what could not be permuted."""

    groups: tuple[PermutationGroup, ...]
    unpermuted: tuple[UnpermutedPoint, ...] = ()
    blocked: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tensor -> reasons it kept its order
    buffers: frozenset[str] = frozenset()  # members that are statistics (BN running mean/var), not weights

    def group(self, name: str) -> PermutationGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    def members_by_tensor(self) -> dict[str, list[tuple[str, Member]]]:
        """For each tensor, the (group name, member) pairs that reorder it."""
        out: dict[str, list[tuple[str, Member]]] = {}
        for g in self.groups:
            for m in g.members:
                out.setdefault(m.tensor, []).append((g.name, m))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [g.to_json() for g in self.groups],
            "unpermuted": [p.to_json() for p in self.unpermuted],
            "blocked": {k: list(v) for k, v in self.blocked.items()},
            "buffers": sorted(self.buffers),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PermutationSpec:
        groups = tuple(
            PermutationGroup(
                g["name"], int(g["size"]), tuple(Member(**m) for m in g["members"]), int(g.get("n_heads", 1)),
                g.get("head_partner"), int(g.get("kv_heads", 0)) if int(g.get("kv_heads", 0)) != int(g.get("n_heads", 1)) else 0,
                bool(g.get("fixed_within", False)),
            )
            for g in data.get("groups", [])
        )
        points = tuple(UnpermutedPoint(p["node"], p["reason"], tuple(p.get("tensors", ()))) for p in data.get("unpermuted", []))
        blocked = {k: tuple(v) for k, v in data.get("blocked", {}).items()}
        return cls(groups, points, blocked, frozenset(data.get("buffers", ())))


def _aliases(module: nn.Module) -> dict[str, list[str]]:
    """State-dict names that share one tensor (tied weights), keyed by every name."""
    by_id: dict[int, list[str]] = {}
    for name, t in module.state_dict(keep_vars=True).items():
        by_id.setdefault(id(t), []).append(name)
    return {n: names for names in by_id.values() for n in names}


def _tie_shared(prop: Propagator, aliases: dict[str, list[str]]) -> None:
    """A tensor reordered in two places (tied or reused weights) must be reordered one way."""
    by_key: dict[tuple[str, int], dict[tuple[int, int, int], list[int]]] = {}
    for var, members in prop.vars.members.items():
        for m in members:
            canon = aliases.get(m.tensor, [m.tensor])[0]
            by_key.setdefault((canon, m.axis), {}).setdefault((m.offset, m.n, m.block), []).append(var)
    for (canon, axis), ranges in by_key.items():
        for same in ranges.values():
            for var in same[1:]:
                prop.vars.union(same[0], var)
        spans = sorted(ranges)
        for (o1, n1, b1), (o2, _n2, _b2) in zip(spans, spans[1:], strict=False):
            if o1 + n1 * b1 > o2:
                reason = f"{canon}: axis {axis} is reordered with two different layouts"
                prop.points.setdefault(canon, "reordered with two different layouts")
                for var in ranges[(o1, n1, b1)] + ranges[(o2, _n2, _b2)]:
                    prop.vars.fix(var, reason)


def _with_aliases(members: list[Member], aliases: dict[str, list[str]]) -> list[Member]:
    """Members repeated under every name their tensor is saved as (tied weights), without repeats."""
    out: list[Member] = []
    for m in members:
        for alias in aliases.get(m.tensor, [m.tensor]):
            am = Member(alias, m.axis, m.offset, m.n, m.block, m.repeat, m.heads)
            if am not in out:
                out.append(am)
    return out


def _group_name(hint: str, taken: set[str]) -> str:
    name, k = hint, 2
    while name in taken:
        name, k = f"{hint}#{k}", k + 1
    taken.add(name)
    return name


@dataclass(frozen=True)
class ModuleAnalysis:
    """The spec of a module, the graph it was read from, and where each group's units can be watched."""

    spec: PermutationSpec
    graph: fx.GraphModule
    sites: tuple[ActivationSite, ...]


def analyse_module(module: nn.Module, example_input: Any) -> ModuleAnalysis:
    """Trace ``module`` on ``example_input``: its permutation groups and their activation sites.

    A module that is already a graph (a ``torch.export`` program's module, as
    ``.pt2`` architectures are loaded) is used as it is, with ATen operator rules;
    one torch.fx cannot trace is exported first.
    """
    gm = graph_module(module, example_input)
    record_shapes(gm, module, example_input)
    aliases = _aliases(module)
    for name, names in _aliases(gm).items():
        aliases.setdefault(name, names)
    prop = Propagator(gm, set(aliases))
    prop.run()
    _tie_shared(prop, aliases)
    buffers = frozenset(name for name, _ in module.named_buffers()) | frozenset(name for name, _ in gm.named_buffers())
    spec, names = _build_spec(prop, aliases, buffers)
    return ModuleAnalysis(spec, gm, tuple(find_sites(prop, names)))


def spec_from_module(module: nn.Module, example_input: Any) -> PermutationSpec:
    """Derive the permutation groups of ``module`` by tracing it on ``example_input``."""
    return analyse_module(module, example_input).spec


def _tie_heads(vars_: Any, kv: dict[int, tuple[int, int]]) -> None:
    """Head groups move together or not at all: a pinned partner (or key/value side) pins the other."""
    changed = True
    while changed:
        changed = False
        for var, (_heads, partner) in list(vars_.heads.items()):
            if vars_.is_fixed(partner) and not vars_.is_fixed(var):
                vars_.fix(var, f"{vars_.hint(var)}: its heads are tied to units that cannot move")
                changed = True
        for q, (k, _rep) in kv.items():
            if vars_.is_fixed(q) != vars_.is_fixed(k):
                why = f"{vars_.hint(q)}: its query heads are tied to key/value heads that cannot move"
                vars_.fix(q, why)
                vars_.fix(k, why)
                changed = True


def _build_spec(
    prop: Propagator, aliases: dict[str, list[str]], buffers: frozenset[str]
) -> tuple[PermutationSpec, dict[int, tuple[str, bool]]]:
    vars_ = prop.vars
    kv = {vars_.find(q): (vars_.find(k), rep) for q, (k, rep) in vars_.kv.items()}
    _tie_heads(vars_, kv)
    kv_roots = {k for k, _ in kv.values()}
    found = vars_.groups()
    for root, members in found.items():
        if root in kv_roots:
            continue
        extra = found.get(kv[root][0], []) if root in kv else []
        if len({(m.tensor, m.axis) for m in members + extra}) == 1:
            vars_.fix(root)  # one tensor axis alone: nothing else moves with it, so it must stay
            if root in kv:
                vars_.fix(kv[root][0])
    _tie_heads(vars_, kv)
    found = vars_.groups()
    roots = {r: m for r, m in found.items() if r not in kv_roots}
    taken: set[str] = set()
    producers: dict[int, list[str]] = {}
    for var in sorted(vars_.producers):
        producers.setdefault(vars_.find(var), []).append(vars_.hint(var))
    explicit = {vars_.find(v): n for v, n in vars_.names.items()}
    fixed_within = {vars_.find(v) for v in vars_.fixed_within}
    names: dict[int, str] = {}
    for root in roots:
        hint = producers[root][0] if producers.get(root) else vars_.hint(root)
        hint = re.sub(r"\.weight\[[01]\]$", "", hint)  # exported graphs: name by the layer
        if len(producers.get(root, [])) > 1:
            hint = f"residual:{hint}"  # several layers write into these units: a residual stream
        names[root] = _group_name(explicit.get(root, hint), taken)
    groups: list[PermutationGroup] = []
    for root, members in roots.items():
        n_heads, partner = 1, None
        if root in vars_.heads:
            heads, other = vars_.heads[root]
            other_root = vars_.find(other)
            if other_root in names:
                n_heads, partner = heads, names[other_root]
        expanded = _with_aliases(members, aliases)
        kv_heads = 0
        if root in kv and n_heads > 1:
            kv_root, rep = kv[root]
            head_dim = vars_.size(root) // n_heads
            kv_heads = vars_.size(kv_root) // head_dim
            expanded += _with_aliases(
                [Member(m.tensor, m.axis, m.offset, m.n, m.block, rep, kv_heads) for m in found.get(kv_root, [])], aliases
            )
        groups.append(PermutationGroup(names[root], vars_.size(root), tuple(expanded), n_heads, partner,
                                       kv_heads, root in fixed_within and n_heads > 1))
    blocked: dict[str, list[str]] = {}
    for member, reasons in vars_.blocked_members().items():
        for alias in aliases.get(member.tensor, [member.tensor]):
            blocked.setdefault(alias, [])
            blocked[alias].extend(r for r in reasons if r not in blocked[alias])
    points = []
    for node, reason in prop.points.items():
        tag = f"{node}: {reason}"
        tensors = tuple(t for t, rs in blocked.items() if tag in rs)
        points.append(UnpermutedPoint(node, reason, tensors))
    member_tensors = {m.tensor for g in groups for m in g.members}
    spec = PermutationSpec(
        tuple(groups), tuple(points), {k: tuple(v) for k, v in blocked.items()}, buffers & member_tensors
    )
    sites = {root: (names[root], False) for root in roots}
    sites.update({kv[q][0]: (names[q], True) for q in roots if q in kv})
    return spec, sites

