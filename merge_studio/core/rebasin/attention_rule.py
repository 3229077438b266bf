"""The graph walk's rule for an attention found by :mod:`merge_studio.core.rebasin.attention`.

Query and key projections share one permutation group (``qk``), value projection and
the output's input units another (``vo``); the two keep heads whole and share the
order of heads. Under grouped-query attention the keys (and values) have fewer
heads than the queries: the key/value projections then join their group as
members that follow the order the query heads induce, and query heads only move
within their key/value group or with it. Rotary embeddings fix the order inside
each query/key head (only whole heads move).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from merge_studio.core.rebasin import labels as L
from merge_studio.core.rebasin.axes import FIXED, Segment, fixed_dim
from merge_studio.core.rebasin.shape_rules import Multi, fixed_like

if TYPE_CHECKING:
    from merge_studio.core.rebasin.attention import AttentionPattern
    from merge_studio.core.rebasin.propagate import Propagator


def _unit_var(label: Any, size: int, vars_: Any) -> int | None:
    """The one free variable holding a projection's units, if that is what the label says."""
    if not isinstance(label, tuple) or isinstance(label, Multi) or not label:
        return None
    last = label[-1]
    if len(last) != 1 or last[0].var == FIXED or last[0].block != 1 or last[0].n != size or vars_.is_fixed(last[0].var):
        return None
    return last[0].var


def module_name(pattern: AttentionPattern) -> str:
    stack = pattern.anchor.meta.get("nn_module_stack") or {}
    if stack:
        value = list(stack.values())[-1]
        path = value[0] if isinstance(value, tuple) else str(value)
        if path:
            return str(path)
    return pattern.anchor.name


def attention_rule(prop: Propagator, pattern: AttentionPattern, meta: Any) -> Any:
    """Labels of the attention's merged output, with the head groups set up (or everything pinned, reported)."""
    for other in pattern.external_inputs():
        prop.pin_all(prop.label_of(other), None)  # masks, rotary tables: read whole, never permuted
    h, kvh, d, dv = pattern.n_heads, pattern.kv_heads, pattern.head_dim, pattern.v_head_dim
    labels = [prop.label_of(n) for n in (pattern.q_src, pattern.k_src, pattern.v_src)]
    vars_ = prop.vars
    q, k, v = (_unit_var(lab, size, vars_) for lab, size in zip(labels, (h * d, kvh * d, kvh * dv), strict=True))
    if q is None or k is None or v is None or isinstance(meta, Multi) or not meta:
        prop._node = pattern.out
        reason = prop.report("attention whose projections the spec cannot follow")
        for lab in labels:
            prop.pin_all(lab, reason)
        return fixed_like(meta)
    name = module_name(pattern)
    if pattern.repeat == 1:
        vars_.union(q, k)
        out = v
    else:
        out = vars_.new(h * dv, f"{name}.vo")
        vars_.kv[q] = (k, pattern.repeat)
        vars_.kv[out] = (v, pattern.repeat)
    qk = vars_.find(q)
    vars_.heads[qk] = (h, out)
    vars_.heads[out] = (h, qk)
    if pattern.qk_fixed_within:
        vars_.fixed_within.add(qk)
    vars_.names[qk] = f"{name}.qk"
    vars_.names[out] = f"{name}.vo"
    return (*(fixed_dim(s) for s in meta[:-1]), (Segment(out, h * dv, 1),))


__all__ = ["attention_rule", "module_name", "L"]
