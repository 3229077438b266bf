"""Attention written out as graph operations (exported programs, Hugging Face models, hand-written blocks).

A graph walk that only knows single operations cannot permute attention: the
projections' units are reshaped into (heads, head_dim), and a per-unit label
cannot say "heads move whole". This module finds each attention in the graph
instead: the node computing it (``scaled_dot_product_attention``, or the
``softmax(q @ kᵀ) @ v`` pattern), the projection outputs its queries, keys and
values come from (the *sources*), and the node where the result is merged back
into ``heads × head_dim`` units (the *output*). The path between is checked with
a small algebra of dimension tokens: it may move data around, repeat key/value
heads for grouped-query attention, and apply element-wise operations that treat
every head alike. An operation that distinguishes positions inside a head
(rotary embeddings multiply by position- and frequency-dependent tables) keeps
the order within heads fixed; one that distinguishes heads rejects the pattern,
and the walk then pins those units as before.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx

from merge_studio.core.rebasin.aten_rules import op_name
from merge_studio.core.rebasin.labels import _groups
from merge_studio.core.rebasin.shape_rules import Multi, tensor_meta

# Dimension tokens: ("U",) the projection's heads × head_dim units, head-major; ("H", n, rep) heads
# (n distinct heads, each repeated rep times, interleaved); ("D",) positions inside a head; ("d",)
# part of them; ("R", r) a repeat made by expand; (".",) anything else (batch, tokens, size-1).
OTHER = (".",)
UNITS = ("U",)
WITHIN = ("D",)
PART = ("d",)

LAYOUT_ATEN = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze"}
LAYOUT_METHODS = {"view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze"}
LAYOUT_FUNCTIONS = {torch.reshape, torch.flatten, torch.unsqueeze, torch.squeeze}
TRANSPOSE_ATEN = {"transpose", "permute", "t"}
TRANSPOSE_METHODS = {"transpose", "permute", "t", "swapaxes"}
SAME_ATEN = {"clone", "contiguous", "_to_copy", "to", "alias", "detach", "dropout", "lift_fresh_copy", "type_as"}
SAME_METHODS = {"contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "detach"}
SAME_FUNCTIONS = {F.dropout}
ELEMENTWISE_ATEN = {"add", "sub", "mul", "div", "neg", "masked_fill", "where", "rsub"}
ELEMENTWISE_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.mul,
                         torch.sub, torch.div, torch.neg, torch.where}
ELEMENTWISE_METHODS = {"add", "sub", "mul", "div", "neg", "masked_fill", "where"}
SOFTMAX_ATEN = {"softmax", "_softmax", "_safe_softmax"}
MATMUL_ATEN = {"matmul", "bmm"}
MATMUL_FUNCTIONS = {torch.matmul, operator.matmul, torch.bmm}
SDPA = {F.scaled_dot_product_attention}


def _kind(node: fx.Node) -> str | None:
    """The role an operation can play on an attention path, or ``None``."""
    if node.op == "call_function":
        t = node.target
        if t in SDPA:
            return "sdpa"
        if t in LAYOUT_FUNCTIONS:
            return "layout"
        if t in (torch.transpose, torch.permute, torch.swapaxes):
            return "transpose"
        if t in SAME_FUNCTIONS:
            return "same"
        if t in ELEMENTWISE_FUNCTIONS:
            return "elementwise"
        if t in MATMUL_FUNCTIONS:
            return "matmul"
        if t in (F.softmax, torch.softmax):
            return "softmax"
        if t is torch.cat:
            return "cat"
        if t is operator.getitem:
            return "getitem"
        name = op_name(t)
        if name is None:
            return None
        if name == "scaled_dot_product_attention":
            return "sdpa"
        if name in LAYOUT_ATEN:
            return "layout"
        if name in TRANSPOSE_ATEN:
            return "transpose"
        if name == "expand":
            return "expand"
        if name in SAME_ATEN:
            return "same"
        if name in ELEMENTWISE_ATEN:
            return "elementwise"
        if name in MATMUL_ATEN:
            return "matmul"
        if name in SOFTMAX_ATEN:
            return "softmax"
        if name == "cat":
            return "cat"
        if name in ("slice", "narrow"):
            return "slice"
        return None
    if node.op == "call_method":
        m = str(node.target)
        if m in LAYOUT_METHODS:
            return "layout"
        if m in TRANSPOSE_METHODS:
            return "transpose"
        if m in ("expand", "expand_as"):
            return "expand"
        if m in SAME_METHODS:
            return "same"
        if m in ELEMENTWISE_METHODS:
            return "elementwise"
        if m == "matmul":
            return "matmul"
        if m == "softmax":
            return "softmax"
        if m == "narrow":
            return "slice"
    return None


@dataclass
class AttentionPattern:
    """One attention found in a graph."""

    anchor: fx.Node
    q_src: fx.Node
    k_src: fx.Node
    v_src: fx.Node
    out: fx.Node
    n_heads: int
    kv_heads: int
    head_dim: int
    v_head_dim: int
    qk_fixed_within: bool
    internal: set[fx.Node] = field(default_factory=set)

    @property
    def repeat(self) -> int:
        return self.n_heads // self.kv_heads

    def external_inputs(self) -> list[fx.Node]:
        """Values the attention reads besides its sources (masks, rotary tables, norm weights)."""
        sources = {self.q_src, self.k_src, self.v_src}
        seen: dict[fx.Node, None] = {}
        for node in self.internal | {self.out}:
            for arg in node.all_input_nodes:
                if arg not in self.internal and arg not in sources and arg is not self.out:
                    seen.setdefault(arg)
        return list(seen)


class _Reject(Exception):
    """The path is not one this module can vouch for."""


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = tensor_meta(node) if isinstance(node, fx.Node) else None
    return meta if isinstance(meta, tuple) and not isinstance(meta, Multi) else None


def _dims(node: fx.Node) -> list[int]:
    """The dimension arguments of a transpose/permute, as a full order."""
    shape = _shape(node.args[0])
    nd = len(shape) if shape is not None else 0
    name = op_name(node.target) if node.op == "call_function" else str(node.target)
    if node.target in (torch.permute,) or name == "permute":
        dims = node.args[1:] if len(node.args) > 2 or isinstance(node.args[1], int) else node.args[1]
        return [int(d) % nd for d in dims]
    if name == "t":
        return list(range(nd))[::-1]
    a, b = int(node.args[1]) % nd, int(node.args[2]) % nd
    order = list(range(nd))
    order[a], order[b] = order[b], order[a]
    return order


class _Tokens:
    """Token propagation along the nodes between one source and the attention."""

    def __init__(self, head_dim: int) -> None:
        self.head_dim = head_dim
        self.fixed_within = False

    def layout(self, tokens: list[tuple], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[tuple]:
        out: list[tuple] = [OTHER] * len(out_shape)
        if [t for t, s in zip(tokens, in_shape, strict=True) if s == 1 and t != OTHER]:
            raise _Reject("a size-1 dimension holds units")
        groups = _groups(list(in_shape), list(out_shape))
        if groups is None:
            raise _Reject("reshape that mixes dimensions")
        for gi, gj in groups:
            ins = [tokens[i] for i in gi]
            if len(gi) == 1 and len(gj) == 1:
                out[gj[0]] = ins[0]
            elif all(t == OTHER for t in ins):
                continue
            elif ins == [UNITS] and len(gj) == 2 and out_shape[gj[1]] == self.head_dim:
                out[gj[0]], out[gj[1]] = ("H", out_shape[gj[0]], 1), WITHIN
            elif len(ins) == 2 and ins[0][0] == "H" and ins[0][2] == 1 and ins[1][0] == "R" and len(gj) == 1:
                out[gj[0]] = ("H", ins[0][1], ins[1][1])
            elif len(ins) == 2 and ins[0][0] == "H" and ins[1] == WITHIN and len(gj) == 1:
                out[gj[0]] = ("M", ins[0][1] * ins[0][2])  # merged back: heads × head_dim
            else:
                raise _Reject("reshape that regroups heads")
        return out

    def elementwise(self, tokens: list[tuple], shape: tuple[int, ...], others: Iterable[Any]) -> list[tuple]:
        for other in others:
            oshape = _shape(other)
            if oshape is None:
                continue  # a number
            for k in range(1, len(oshape) + 1):
                if k > len(tokens) or oshape[-k] == 1:
                    continue
                t = tokens[-k]
                if t in (WITHIN, PART):
                    self.fixed_within = True  # e.g. rotary tables: position inside a head matters
                elif t != OTHER:
                    raise _Reject("an element-wise operand differs between heads")
        return tokens


def _is_head_split(node: fx.Node) -> bool:
    """A reshape cutting the last dimension into (heads, head_dim)."""
    if _kind(node) != "layout":
        return False
    in_shape, out_shape = _shape(node.args[0]), _shape(node)
    if in_shape is None or out_shape is None or len(out_shape) < 2 or len(in_shape) < 1:
        return False
    return (out_shape[-2] > 1 and out_shape[-1] > 1 and in_shape[-1] == out_shape[-2] * out_shape[-1]
            and tuple(in_shape[:-1]) == tuple(out_shape[:-2]))


def _ancestors(node: fx.Node, stop: set[fx.Node] | None = None) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    todo = [node]
    while todo:
        n = todo.pop()
        for a in n.all_input_nodes:
            if a not in seen and (stop is None or a not in stop):
                seen.add(a)
                todo.append(a)
    return seen


PATH_KINDS = {"layout", "transpose", "same", "expand", "elementwise", "slice", "cat", "getitem"}


def _source_of(arg: fx.Node) -> fx.Node:
    """The one projection output (input of a head split) ``arg`` is computed from.

    The search goes back only through operations an attention path may contain and
    stops at head splits, so earlier layers (reached through the residual stream) are
    never seen.
    """
    splits: set[fx.Node] = set()
    seen: set[fx.Node] = set()
    todo = [arg]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if _is_head_split(n):
            splits.add(n)
        elif _kind(n) in PATH_KINDS:
            todo.extend(n.all_input_nodes)
    if len(splits) != 1:
        raise _Reject(f"{len(splits)} head splits feed one attention input")
    return next(iter(splits)).args[0]


def _path(src: fx.Node, arg: fx.Node) -> list[fx.Node]:
    """Nodes strictly after ``src`` up to ``arg`` that depend on ``src``, in graph order."""
    upstream = _ancestors(arg) | {arg}
    on_path: set[fx.Node] = set()
    for node in src.graph.nodes:
        if node in upstream and node is not src and any(a is src or a in on_path for a in node.all_input_nodes):
            on_path.add(node)
    return [n for n in src.graph.nodes if n in on_path]


def _follow(src: fx.Node, nodes: list[fx.Node], head_dim: int) -> tuple[dict[fx.Node, list[tuple]], bool]:
    """Tokens of every node on the path from ``src``; raises :class:`_Reject` on anything it cannot vouch for."""
    shape = _shape(src)
    if shape is None:
        raise _Reject("source without a shape")
    algebra = _Tokens(head_dim)
    tokens: dict[fx.Node, list[tuple]] = {src: [OTHER] * (len(shape) - 1) + [UNITS]}
    for node in nodes:
        carriers = [a for a in node.all_input_nodes if a in tokens]
        others = [a for a in _flat(list(node.args) + list(node.kwargs.values())) if isinstance(a, fx.Node) and a not in tokens]
        kind = _kind(node)
        t_in = tokens[carriers[0]]
        out_shape = _shape(node)
        if kind in ("layout",):
            tokens[node] = algebra.layout(t_in, _shape(carriers[0]), out_shape)
        elif kind == "transpose":
            tokens[node] = [t_in[i] for i in _dims(node)]
        elif kind == "same":
            tokens[node] = t_in
        elif kind == "expand":
            in_shape = _shape(carriers[0])
            lead = len(out_shape) - len(in_shape)
            new = [OTHER] * lead
            for t, a, b in zip(t_in, in_shape, out_shape[lead:], strict=True):
                new.append(("R", b) if a == 1 and b > 1 else t)
            tokens[node] = new
        elif kind == "elementwise":
            if len({tuple(tokens[c]) for c in carriers}) != 1:
                raise _Reject("element-wise op joining differently laid out values")
            tokens[node] = algebra.elementwise(t_in, out_shape, others)
        elif kind in ("slice", "getitem"):
            in_shape = _shape(carriers[0])
            if out_shape is None or len(out_shape) != len(in_shape):
                raise _Reject("indexing that drops dimensions")
            for dim, (a, b) in enumerate(zip(in_shape, out_shape, strict=True)):
                if a == b:
                    continue
                if t_in[dim] in (WITHIN, PART):
                    algebra.fixed_within = True
                    t_in = [*t_in[:dim], PART, *t_in[dim + 1 :]]
                elif t_in[dim] != OTHER:
                    raise _Reject("slices heads")
            if kind == "getitem" and not _plain_slices(node.args[1]):
                raise _Reject("indexing with tensors")
            tokens[node] = list(t_in)
        elif kind == "cat":
            parts = node.args[0]
            dim = int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(t_in)
            if any(p not in tokens for p in parts) or len({tuple(tokens[p][:dim] + tokens[p][dim + 1 :]) for p in parts}) != 1:
                raise _Reject("concatenates other values into a head")
            along = {tokens[p][dim] for p in parts}
            if along <= {WITHIN, PART}:
                algebra.fixed_within = True
                tokens[node] = [*t_in[:dim], WITHIN if out_shape[dim] == head_dim else PART, *t_in[dim + 1 :]]
            elif along == {OTHER}:
                tokens[node] = list(t_in)
            else:
                raise _Reject("concatenates heads")
        else:
            raise _Reject(f"{node.name} is not an operation attention paths may contain")
    return tokens, algebra.fixed_within


def _plain_slices(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(i is Ellipsis or (isinstance(i, slice) and i.step in (None, 1)) for i in items)


def _flat(args: list[Any]) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.extend(_flat(list(a)))
        else:
            out.append(a)
    return out


def _heads(t: tuple) -> tuple[int, int]:
    if t[0] != "H":
        raise _Reject("heads are not where attention expects them")
    return t[1], t[2]


def _sdpa_args(node: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node]:
    names = ("query", "key", "value")
    args = [node.args[i] if len(node.args) > i else node.kwargs.get(names[i]) for i in range(3)]
    if not all(isinstance(a, fx.Node) for a in args):
        raise _Reject("attention inputs are not graph values")
    return args[0], args[1], args[2]


def _eager_anchor(node: fx.Node) -> tuple[fx.Node, fx.Node, fx.Node, list[fx.Node]] | None:
    """``softmax(q @ kᵀ …) @ v``: (q, kᵀ, v, score nodes between) when ``node`` is the final product."""
    if _kind(node) != "matmul" or len(node.args) < 2:
        return None
    probs, v = node.args[0], node.args[1]
    chain: list[fx.Node] = []
    cur = probs
    while isinstance(cur, fx.Node) and _kind(cur) in ("same", "softmax", "elementwise") and len(chain) < 12:
        chain.append(cur)
        if _kind(cur) == "softmax" and not any(_kind(c) == "softmax" for c in chain[:-1]):
            pass
        cur = cur.args[0]
    if not isinstance(cur, fx.Node) or _kind(cur) != "matmul" or not any(_kind(c) == "softmax" for c in chain):
        return None
    return cur.args[0], cur.args[1], v, [cur, *chain]


def find_attention(gm: fx.GraphModule) -> list[AttentionPattern]:
    """Every attention in ``gm`` whose path from projections to output can be followed."""
    found: list[AttentionPattern] = []
    claimed: set[fx.Node] = set()
    for node in gm.graph.nodes:
        try:
            pattern = _pattern_at(node)
        except _Reject:
            continue
        if pattern is None or pattern.internal & claimed:
            continue
        claimed |= pattern.internal
        found.append(pattern)
    return found


def _pattern_at(node: fx.Node) -> AttentionPattern | None:
    kind = _kind(node)
    if kind == "sdpa":
        q, k, v = _sdpa_args(node)
        scores: list[fx.Node] = []
        k_transposed = False
    elif kind == "matmul":
        eager = _eager_anchor(node)
        if eager is None:
            return None
        q, k, v, scores = eager
        k_transposed = True
    else:
        return None
    q_shape, v_shape = _shape(q), _shape(v)
    if q_shape is None or v_shape is None or len(q_shape) < 3:
        return None
    head_dim, v_head_dim = q_shape[-1], v_shape[-1]
    sources = [_source_of(q), _source_of(k), _source_of(v)]
    if len(set(sources)) != 3:
        raise _Reject("queries, keys and values share a source")
    q_tok, q_fixed = _follow(sources[0], _path(sources[0], q), head_dim)
    k_tok, k_fixed = _follow(sources[1], _path(sources[1], k), head_dim)
    v_tok, v_fixed = _follow(sources[2], _path(sources[2], v), v_head_dim)
    if v_fixed:
        raise _Reject("values are changed inside their heads")
    qt, kt, vt = q_tok[q], k_tok[k], v_tok[v]
    if k_transposed:
        kt = [*kt[:-2], kt[-1], kt[-2]]
    if qt[-1] != WITHIN or kt[-1] != WITHIN or vt[-1] != WITHIN or qt[-2] != OTHER or kt[-2] != OTHER or vt[-2] != OTHER:
        raise _Reject("attention inputs are not laid out as (…, heads, tokens, head_dim)")
    (nq, rq), (nk, rk), (nv, rv) = _heads(qt[-3]), _heads(kt[-3]), _heads(vt[-3])
    enable_gqa = bool(node.kwargs.get("enable_gqa", False)) if kind == "sdpa" else False
    if rq != 1 or (nk, rk) != (nv, rv) or not (nk * rk == nq or (enable_gqa and rk == 1 and nq % nk == 0)):
        raise _Reject("heads of queries, keys and values do not line up")
    _check_same_for_every_head([*scores, node], q, k, v)
    out, out_path = _merged_output(node, nq, v_head_dim)
    internal = set(_path(sources[0], q)) | set(_path(sources[1], k)) | set(_path(sources[2], v))
    internal |= set(scores) | {node} | set(out_path)
    internal.discard(out)
    for n in internal:
        if any(u not in internal and u is not out for u in n.users):
            raise _Reject(f"{n.name} is used outside the attention")
    return AttentionPattern(node, *sources, out, nq, nk, head_dim, v_head_dim, q_fixed or k_fixed, internal)


def _check_same_for_every_head(nodes: list[fx.Node], *inputs: fx.Node) -> None:
    """Masks and biases added to the scores must not differ between heads (ALiBi does: heads then stay)."""
    for node in nodes:
        shape = _shape(node)
        for arg in _flat(list(node.args) + list(node.kwargs.values())):
            if not isinstance(arg, fx.Node) or arg in inputs or arg in nodes:
                continue
            other = _shape(arg)
            if other is not None and shape is not None and len(other) >= 3 and len(shape) >= 3 and other[-3] > 1:
                raise _Reject("a mask or bias differs between heads")


def _merged_output(anchor: fx.Node, n_heads: int, v_head_dim: int) -> tuple[fx.Node, list[fx.Node]]:
    """Follow the attention's result through moves until heads × head_dim are merged into one dimension."""
    shape = _shape(anchor)
    if shape is None:
        raise _Reject("attention output without a shape")
    tokens = [OTHER] * (len(shape) - 3) + [("H", n_heads, 1), OTHER, WITHIN]
    algebra = _Tokens(v_head_dim)
    cur, path = anchor, [anchor]
    for _ in range(8):
        users = list(cur.users)
        if len(users) != 1:
            raise _Reject("attention output used more than once before its heads are merged")
        nxt = users[0]
        kind = _kind(nxt)
        if kind == "layout":
            tokens = algebra.layout(tokens, _shape(cur), _shape(nxt))
        elif kind == "transpose":
            tokens = [tokens[i] for i in _dims(nxt)]
        elif kind != "same":
            raise _Reject("attention output changed before its heads are merged")
        path.append(nxt)
        cur = nxt
        if tokens and tokens[-1] == ("M", n_heads) and all(t == OTHER for t in tokens[:-1]):
            return cur, path
    raise _Reject("heads of the attention output are never merged")
