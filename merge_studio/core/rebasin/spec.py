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
from torch.fx.passes.shape_prop import ShapeProp

from merge_studio.core.rebasin.axes import Member
from merge_studio.core.rebasin.module_rules import is_attention_module
from merge_studio.core.rebasin.propagate import Propagator
from merge_studio.errors import ArchitectureError


@dataclass(frozen=True)
class PermutationGroup:
    """Hidden units that move together.

    ``n_heads > 1`` marks an attention group whose permutation must keep heads
    whole (a permutation of heads, then one within each head); ``head_partner`` is
    the other attention group that shares the same order of heads.
    """

    name: str
    size: int
    members: tuple[Member, ...]
    n_heads: int = 1
    head_partner: str | None = None

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
                g["name"], int(g["size"]), tuple(Member(**m) for m in g["members"]), int(g.get("n_heads", 1)), g.get("head_partner")
            )
            for g in data.get("groups", [])
        )
        points = tuple(UnpermutedPoint(p["node"], p["reason"], tuple(p.get("tensors", ()))) for p in data.get("unpermuted", []))
        blocked = {k: tuple(v) for k, v in data.get("blocked", {}).items()}
        return cls(groups, points, blocked, frozenset(data.get("buffers", ())))


class _Tracer(fx.Tracer):
    """Keeps attention modules whole so the heads rule applies to them."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_attention_module(m) or super().is_leaf_module(m, module_qualified_name)


def trace(module: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``module``; failures become an :class:`ArchitectureError`."""
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - tracing raises many kinds of errors
        raise ArchitectureError(
            f"cannot trace {type(module).__name__} to find its permutations: {exc}",
            hint="the model's forward must be traceable by torch.fx (no Python control flow on tensor values)",
        ) from exc
    return fx.GraphModule(module, graph)


def set_mode(module: nn.Module, training: bool) -> None:
    """``train``/``eval`` where allowed (exported programs refuse both and always run as exported)."""
    try:
        module.train(training)
    except NotImplementedError:
        pass


def _as_args(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


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


def _group_name(hint: str, taken: set[str]) -> str:
    name, k = hint, 2
    while name in taken:
        name, k = f"{hint}#{k}", k + 1
    taken.add(name)
    return name


def spec_from_module(module: nn.Module, example_input: Any) -> PermutationSpec:
    """Derive the permutation groups of ``module`` by tracing it on ``example_input``.

    A module that is already a graph (a ``torch.export`` program's module, as
    ``.pt2`` architectures are loaded) is used as it is, with ATen operator rules.
    """
    if type(module).__name__ == "UnflattenedModule":
        raise ArchitectureError(
            "an unflattened exported program hides its graph behind submodule calls",
            hint="trace the flat program instead: torch.export.load(path).module()",
        )
    gm = module if isinstance(module, fx.GraphModule) else trace(module)
    was_training = module.training
    set_mode(gm, False)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*_as_args(example_input))
    except Exception as exc:  # noqa: BLE001
        raise ArchitectureError(
            f"running {type(module).__name__} on its example input failed: {exc}",
            hint="check that the example input fits the model",
        ) from exc
    finally:
        set_mode(gm, was_training)
        set_mode(module, was_training)
    aliases = _aliases(module)
    prop = Propagator(gm, set(aliases))
    prop.run()
    _tie_shared(prop, aliases)
    buffers = frozenset(name for name, _ in module.named_buffers())
    return _build_spec(prop, aliases, buffers)


def _build_spec(prop: Propagator, aliases: dict[str, list[str]], buffers: frozenset[str]) -> PermutationSpec:
    vars_ = prop.vars
    for var, (_heads, partner) in list(vars_.heads.items()):
        if vars_.is_fixed(partner) and not vars_.is_fixed(var):
            vars_.fix(var, f"{vars_.hint(var)}: its heads are tied to units that cannot move")
    for root, members in vars_.groups().items():
        if len({(m.tensor, m.axis) for m in members}) == 1:
            vars_.fix(root)  # one tensor axis alone: nothing else moves with it, so it must stay
    roots = vars_.groups()
    taken: set[str] = set()
    producers: dict[int, list[str]] = {}
    for var in sorted(vars_.producers):
        producers.setdefault(vars_.find(var), []).append(vars_.hint(var))
    names: dict[int, str] = {}
    for root in roots:
        hint = producers[root][0] if producers.get(root) else vars_.hint(root)
        hint = re.sub(r"\.weight\[0\]$", "", hint)  # exported graphs: name by the layer
        if len(producers.get(root, [])) > 1:
            hint = f"residual:{hint}"  # several layers write into these units: a residual stream
        names[root] = _group_name(hint, taken)
    groups: list[PermutationGroup] = []
    for root, members in roots.items():
        expanded: list[Member] = []
        for m in members:
            for alias in aliases.get(m.tensor, [m.tensor]):
                am = Member(alias, m.axis, m.offset, m.n, m.block)
                if am not in expanded:
                    expanded.append(am)
        n_heads, partner = 1, None
        if root in vars_.heads:
            heads, other = vars_.heads[root]
            other_root = vars_.find(other)
            if other_root in names:
                n_heads, partner = heads, names[other_root]
        groups.append(PermutationGroup(names[root], vars_.size(root), tuple(expanded), n_heads, partner))
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
    return PermutationSpec(
        tuple(groups), tuple(points), {k: tuple(v) for k, v in blocked.items()}, buffers & member_tensors
    )

