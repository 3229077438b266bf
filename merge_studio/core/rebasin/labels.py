"""Label algebra used while following the graph: unify, reshape, split, concatenate.

Every function here either returns the labels of a result or pins the variables it
cannot follow through :class:`~merge_studio.core.rebasin.axes.AxisVars` with a
reason, so the caller never has to guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from merge_studio.core.rebasin.axes import (
    FIXED,
    AxisVars,
    DimLabel,
    Segment,
    TensorLabel,
    dim_size,
    fixed_dim,
    same_layout,
)

# report(reason) pins nothing by itself; it records that the current node stopped a group.
Report = Callable[[str], str]


def normalize_dim(vars_: AxisVars, label: DimLabel) -> DimLabel:
    """The dimension with every split variable replaced by its pieces (see :meth:`AxisVars.refine`)."""
    if not any(seg.var != FIXED and vars_.refined(seg.var) for seg in label):
        return label
    out: list[Segment] = []
    for seg in label:
        pieces = vars_.refined(seg.var) if seg.var != FIXED else None
        if pieces is None:
            out.append(seg)
        else:
            out.extend(normalize_dim(vars_, tuple(Segment(p, n, seg.block) for p, n in pieces)))
    return tuple(out)


def normalize(vars_: AxisVars, label: TensorLabel) -> TensorLabel:
    return tuple(normalize_dim(vars_, dim) for dim in label)


def refine_at(vars_: AxisVars, label: DimLabel, cuts: Sequence[int]) -> DimLabel:
    """Split free segments that element offsets ``cuts`` fall inside (between units), so the cuts land between segments."""
    changed = False
    pos = 0
    for seg in label:
        inside = sorted(c - pos for c in cuts if pos < c < pos + seg.length)
        if inside and seg.var != FIXED and not vars_.is_fixed(seg.var) and all(c % seg.block == 0 for c in inside):
            units = [c // seg.block for c in inside]
            sizes = [b - a for a, b in zip([0, *units], [*units, seg.n], strict=True)]
            changed |= vars_.refine(seg.var, sizes) is not None
        pos += seg.length
    return normalize_dim(vars_, label) if changed else label


def is_free(vars_: AxisVars, label: DimLabel) -> bool:
    """Whether any unit in this dimension may still be permuted."""
    return any(seg.var != FIXED and not vars_.is_fixed(seg.var) for seg in label)


def pin_dim(vars_: AxisVars, label: DimLabel, reason: str | None) -> None:
    for seg in label:
        vars_.fix(seg.var, reason)


def unify_dims(vars_: AxisVars, a: DimLabel, b: DimLabel, report: Report) -> DimLabel:
    """Make two dimensions share their permutation (or pin both when their structure differs)."""
    if same_layout(a, b):
        for x, y in zip(a, b, strict=True):
            vars_.union(x.var, y.var)
        return a
    if dim_size(a) == dim_size(b):
        if len(a) == 1 and a[0].block == 1 and vars_.relayout(a[0].var, b):
            return b
        if len(b) == 1 and b[0].block == 1 and vars_.relayout(b[0].var, a):
            return a
    a_free, b_free = is_free(vars_, a), is_free(vars_, b)
    if not a_free and not b_free:
        return fixed_dim(dim_size(a))
    if a_free and b_free:
        reason = report("combines axes whose units are grouped differently")
    else:
        reason = None  # one side is fixed already: the other simply cannot move
    pin_dim(vars_, a, reason)
    pin_dim(vars_, b, reason)
    return fixed_dim(dim_size(a))


def merge_dims(vars_: AxisVars, dims: Sequence[DimLabel], report: Report) -> DimLabel:
    """Flatten consecutive dimensions into one (channels then positions: a block expansion)."""
    if len(dims) == 1:
        return dims[0]
    inner = math.prod(dim_size(d) for d in dims[1:])
    if any(is_free(vars_, d) for d in dims[1:]):
        reason = report("flattens permuted units into a position other than the leading one")
        for d in dims:
            pin_dim(vars_, d, reason)
        return fixed_dim(dim_size(dims[0]) * inner)
    head = dims[0]
    if not is_free(vars_, head):
        return fixed_dim(dim_size(head) * inner)
    return tuple(Segment(seg.var, seg.n, seg.block * inner) for seg in head)


def split_dim(vars_: AxisVars, label: DimLabel, sizes: Sequence[int], report: Report) -> list[DimLabel]:
    """Unflatten one dimension into several (the inverse of :func:`merge_dims` when it fits)."""
    if len(sizes) == 1:
        return [label]
    if not is_free(vars_, label):
        return [fixed_dim(s) for s in sizes]
    inner = math.prod(sizes[1:])
    if all(seg.block % inner == 0 for seg in label):
        head = tuple(Segment(seg.var, seg.n, seg.block // inner) for seg in label)
        return [head, *(fixed_dim(s) for s in sizes[1:])]
    reason = report("reshapes permuted units in a way that is not a flatten")
    pin_dim(vars_, label, reason)
    return [fixed_dim(s) for s in sizes]


def _groups(in_shape: Sequence[int], out_shape: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input and output dimensions with equal products (size-1 dims skipped)."""
    ins = [i for i, s in enumerate(in_shape) if s != 1]
    outs = [j for j, s in enumerate(out_shape) if s != 1]
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(ins) and j < len(outs):
        gi, gj = [ins[i]], [outs[j]]
        pi, pj = in_shape[ins[i]], out_shape[outs[j]]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                if i >= len(ins):
                    return None
                gi.append(ins[i])
                pi *= in_shape[ins[i]]
                i += 1
            else:
                if j >= len(outs):
                    return None
                gj.append(outs[j])
                pj *= out_shape[outs[j]]
                j += 1
        groups.append((gi, gj))
    if i != len(ins) or j != len(outs):
        return None
    return groups


def reshape(
    vars_: AxisVars, label: TensorLabel, in_shape: Sequence[int], out_shape: Sequence[int], report: Report
) -> TensorLabel:
    """Labels after view/reshape/flatten/unflatten/squeeze/unsqueeze, decided from the shapes."""
    out: list[DimLabel] = [fixed_dim(s) for s in out_shape]
    groups = _groups(list(in_shape), list(out_shape))
    if groups is None:
        if any(is_free(vars_, d) for d in label):
            reason = report("reshape that mixes permuted units")
            for d in label:
                pin_dim(vars_, d, reason)
        return tuple(out)
    for gi, gj in groups:
        if len(gi) == 1 and len(gj) == 1:
            out[gj[0]] = label[gi[0]]
        elif len(gj) == 1:
            out[gj[0]] = merge_dims(vars_, [label[k] for k in gi], report)
        elif len(gi) == 1:
            for j, lab in zip(gj, split_dim(vars_, label[gi[0]], [out_shape[j] for j in gj], report), strict=True):
                out[j] = lab
        elif any(is_free(vars_, label[k]) for k in gi):
            reason = report("reshape that regroups permuted units")
            for k in gi:
                pin_dim(vars_, label[k], reason)
    return tuple(out)


def concat_dims(dims: Sequence[DimLabel]) -> DimLabel:
    """One dimension made of several, side by side (``torch.cat``)."""
    return tuple(seg for d in dims for seg in d)


def slice_dim(vars_: AxisVars, label: DimLabel, sizes: Sequence[int], report: Report) -> list[DimLabel]:
    """Cut a dimension into consecutive parts (``split``/``chunk``).

    A cut between two units of one group splits the group (each part keeps its own
    permutation); a cut through a unit's block pins it.
    """
    cuts = set()
    pos = 0
    for s in sizes:
        pos += s
        cuts.add(pos)
    label = refine_at(vars_, label, sorted(cuts))
    bounds = set()
    pos = 0
    for seg in label:
        bounds.add(pos)
        pos += seg.length
    bounds.add(pos)
    inner_cuts = [c for c in cuts if c not in bounds]
    broken = []
    pos = 0
    for seg in label:
        if seg.var != FIXED and any(pos < c < pos + seg.length for c in inner_cuts):
            broken.append(seg)
        pos += seg.length
    if broken and any(not vars_.is_fixed(s.var) for s in broken):
        reason = report("splits a group of permuted units")
        for seg in broken:
            vars_.fix(seg.var, reason)
    parts: list[DimLabel] = []
    start = 0
    for s in sizes:
        stop = start + s
        pieces: list[Segment] = []
        pos = 0
        for seg in label:
            lo, hi = max(pos, start), min(pos + seg.length, stop)
            if lo < hi:
                if lo == pos and hi == pos + seg.length and seg not in broken:
                    pieces.append(seg)
                else:
                    pieces.append(Segment(FIXED, hi - lo, 1))
            pos += seg.length
        parts.append(tuple(pieces) if pieces else fixed_dim(s))
        start = stop
    return parts
