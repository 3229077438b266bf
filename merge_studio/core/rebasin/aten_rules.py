"""Rules for ATen operators, the graph of a ``torch.export`` program (``.pt2``).

An exported program's module is already an fx graph, of ``aten.*`` calls on
parameters fetched with ``get_attr``; each operator maps onto the rule of its
``torch.nn.functional`` twin. Operators not listed stay unknown (pinned and reported).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from torch import fx

from merge_studio.core.rebasin import labels as L
from merge_studio.core.rebasin.axes import fixed_dim
from merge_studio.core.rebasin.shape_rules import Multi, fixed_like

if TYPE_CHECKING:
    from merge_studio.core.rebasin.propagate import Propagator

ELEMENTWISE = {
    "to", "relu", "relu_", "gelu", "silu", "tanh", "sigmoid", "add", "add_", "sub", "mul", "mul_", "div", "dropout",
    "clone", "hardtanh", "hardtanh_", "leaky_relu", "elu", "neg", "exp", "sqrt", "rsqrt", "pow", "abs", "where",
    "clamp", "_to_copy", "alias", "detach", "hardswish", "contiguous", "masked_fill", "square", "erf",
}  # fmt: skip
SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax"}
RESHAPE = {"view", "reshape", "flatten", "unsqueeze", "squeeze", "_unsafe_view", "unflatten"}
TRANSPOSE = {"permute": "permute", "transpose": "transpose", "t": "t"}
REDUCE = {"mean", "sum", "amax", "amin", "var", "std"}
SPLIT = {"split", "split_with_sizes", "chunk", "tensor_split"}
POOL = re.compile(r"^(adaptive_)?(avg|max)_pool([123])d(_with_indices)?$")


def op_name(target: Any) -> str | None:
    """``aten.conv2d.default`` -> ``conv2d``; ``None`` for anything that is not an ATen operator."""
    text = str(target)
    if not text.startswith("aten."):
        return None
    return text.split(".")[1]


def aten_rule(prop: Propagator, node: fx.Node, meta: Any, name: str) -> Any:
    """Labels of an ATen call's output (``NotImplemented`` when the operator is unknown)."""
    if name in ELEMENTWISE:
        return prop.elementwise(node, meta, list(node.args) + list(node.kwargs.values()))
    if name in SOFTMAX:
        return prop.label_of(node.args[0])
    if name in RESHAPE:
        return prop.reshape(node, meta)
    if name in TRANSPOSE:
        return prop.transpose(node, meta, TRANSPOSE[name])
    if name in REDUCE:
        return prop.reduce(node, meta)
    if name in SPLIT:
        return prop.split(node, meta)
    if name == "cat":
        return prop.cat(node, meta)
    if name == "expand":
        return prop.expand(node, meta)
    if name in ("matmul", "mm", "bmm"):
        return prop.matmul(node, meta)
    if name == "linear":
        return prop.functional_linear(node, meta)
    if name == "addmm":
        return _addmm(prop, node, meta)
    if name == "layer_norm":
        return prop.functional_layer_norm(node, meta)
    pool = POOL.match(name)
    if pool:
        return prop.pool(node, meta[0] if isinstance(meta, Multi) else meta, int(pool.group(3)))
    if name in ("conv1d", "conv2d", "conv3d"):
        return _conv(prop, node, meta)
    if name in ("batch_norm", "_native_batch_norm_legit_no_training"):
        return _batch_norm(prop, node, meta)
    if name in ("select", "slice"):
        return _select(prop, node, meta, name)
    if name == "embedding":
        weight, indices = prop.label_of(node.args[0]), prop.label_of(node.args[1])
        if isinstance(weight, tuple) and isinstance(indices, tuple):
            L.pin_dim(prop.vars, weight[0], None)  # rows are picked by token id
            return (*indices, weight[1])
    return NotImplemented


def _addmm(prop: Propagator, node: fx.Node, meta: Any) -> Any:
    """``bias + x @ w`` (Hugging Face's Conv1D, weights stored input-first): x's columns meet w's rows."""
    b, x, w = (prop.label_of(a) for a in node.args[:3])
    if not isinstance(x, tuple) or not isinstance(w, tuple) or len(x) != 2 or len(w) != 2:
        return prop.unknown(node, "matrix product with unlabelled operands")
    for seg in w[0]:
        prop.vars.producers.discard(seg.var)  # the weight's first axis is its input here, not the units it writes
    prop.vars.producers.update(seg.var for seg in w[1] if seg.var)
    prop.unify(x[1], w[0])
    if isinstance(b, tuple) and len(b) >= 1:
        prop.unify(w[1], b[-1])
    return (x[0], w[1])


def _conv(prop: Propagator, node: fx.Node, meta: Any) -> Any:
    x, w = prop.label_of(node.args[0]), prop.label_of(node.args[1])
    b = prop.label_of(node.args[2]) if len(node.args) > 2 else None
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    if groups != 1 or not isinstance(x, tuple) or not isinstance(w, tuple):
        return prop.unknown(node, f"convolution with groups={groups} or unlabelled weights")
    prop.unify(x[1], w[1])
    for lab in w[2:]:
        L.pin_dim(prop.vars, lab, None)  # kernel positions
    for lab in x[2:]:
        if L.is_free(prop.vars, lab):
            L.pin_dim(prop.vars, lab, prop.report("convolves over permuted units"))
    if isinstance(b, tuple):
        prop.unify(w[0], b[0])
    return (x[0], w[0], *(fixed_dim(s) for s in meta[2:]))


def _batch_norm(prop: Propagator, node: fx.Node, meta: Any) -> Any:
    x = prop.label_of(node.args[0])
    if not isinstance(x, tuple):
        return prop.unknown(node, "batch norm of an unlabelled value")
    for arg in node.args[1:5]:
        p = prop.label_of(arg)
        if isinstance(p, tuple) and len(p) == 1:
            prop.unify(x[1], p[0])
    if isinstance(meta, Multi):
        return Multi([x, *(fixed_like(m) for m in meta[1:])])
    return x


def _slice_part(prop: Propagator, label: Any, node: fx.Node) -> Any:
    """The labels of ``x[start:end]`` along a dimension when the range holds whole units (splitting their group)."""
    size = L.dim_size(label)
    start = node.args[2] if len(node.args) > 2 else node.kwargs.get("start", 0)
    end = node.args[3] if len(node.args) > 3 else node.kwargs.get("end", size)
    step = node.args[4] if len(node.args) > 4 else node.kwargs.get("step", 1)
    if not all(isinstance(v, int) or v is None for v in (start, end, step)) or step not in (1, None):
        return None
    start = 0 if start is None else (start + size if start < 0 else min(start, size))
    end = size if end is None else (end + size if end < 0 else min(end, size))
    label = L.refine_at(prop.vars, label, [start, end])
    part, pos = [], 0
    for seg in label:
        lo, hi = pos, pos + seg.length
        if start <= lo and hi <= end:
            part.append(seg)
        elif hi > start and lo < end:
            return None  # the range cuts through a unit
        pos = hi
    return tuple(part) if part else None


def _select(prop: Propagator, node: fx.Node, meta: Any, name: str) -> Any:
    """``x.select(dim, i)`` drops a dimension, ``x.slice(dim, a, b)`` narrows it: fine unless it holds units."""
    x = prop.label_of(node.args[0])
    if not isinstance(x, tuple) or isinstance(x, Multi) or isinstance(meta, Multi):
        return prop.unknown(node, f"{name} of an unlabelled value")
    dim = int(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(x)
    if name == "slice" and meta[dim] == L.dim_size(x[dim]):
        return x  # the whole dimension
    if name == "slice":
        part = _slice_part(prop, x[dim], node)
        if part is not None:
            return (*x[:dim], part, *x[dim + 1 :])
    if L.is_free(prop.vars, x[dim]):
        L.pin_dim(prop.vars, x[dim], prop.report("selects some of the permuted units"))
    if name == "select":
        return x[:dim] + x[dim + 1 :]
    return (*x[:dim], fixed_dim(meta[dim]), *x[dim + 1 :])
