"""Walk a traced fx graph and label every tensor axis with the permutation it carries.

Functions and tensor methods are handled here; module calls (Linear, Conv,
BatchNorm, attention...) in :mod:`merge_studio.core.rebasin.module_rules`. Anything
not listed is *unknown*: every permutable axis that reaches it is pinned, and the
node is reported by name with the reason.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx

from merge_studio.core.rebasin import labels as L
from merge_studio.core.rebasin.axes import FIXED, AxisVars, DimLabel, Member, Segment, TensorLabel, fixed_dim, fixed_tensor


class Multi(tuple):
    """Labels of a node that returns several tensors (split, chunk, attention)."""


ELEMENTWISE_FUNCTIONS: set[Any] = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow,
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.pos,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.abs, torch.exp, torch.sqrt, torch.rsqrt,
    torch.relu, torch.tanh, torch.sigmoid, torch.maximum, torch.minimum, torch.where, torch.clamp,
    torch.square, torch.sin, torch.cos, torch.erf, torch.pow,
    F.relu, F.relu6, F.gelu, F.silu, F.mish, F.elu, F.selu, F.celu, F.leaky_relu, F.hardtanh,
    F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.softplus, F.softsign, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "abs", "exp", "sqrt", "rsqrt", "pow", "clamp", "relu", "tanh",
    "sigmoid", "sin", "cos", "square", "masked_fill", "where", "add_", "sub_", "mul_", "div_",
    "relu_", "clamp_", "sigmoid_", "tanh_", "masked_fill_",
}  # fmt: skip
SAME_AS_SELF_METHODS = {"contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "detach", "requires_grad_"}
SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
REDUCE_FUNCTIONS = {torch.mean: "mean", torch.sum: "sum", torch.amax: "amax", torch.amin: "amin", torch.var: "var", torch.std: "std"}
REDUCE_METHODS = {"mean", "sum", "amax", "amin", "var", "std"}
RESHAPE_FUNCTIONS = {torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze}
RESHAPE_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
POOL_FUNCTIONS = {
    F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3,
    F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3,
    F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3, F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3,
}  # fmt: skip
SIZE_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}


def tensor_meta(node: fx.Node) -> Any:
    """Shapes recorded by ShapeProp: a shape tuple, a tuple of them, or ``None``."""

    def convert(meta: Any) -> Any:
        if meta is None:
            return None
        if hasattr(meta, "shape") and hasattr(meta, "dtype"):
            return tuple(int(s) for s in meta.shape)
        if isinstance(meta, (tuple, list)):
            return Multi(convert(m) for m in meta)
        return None

    return convert(node.meta.get("tensor_meta"))


def fixed_like(meta: Any) -> Any:
    if isinstance(meta, Multi):
        return Multi(fixed_like(m) for m in meta)
    if meta is None:
        return None
    return fixed_tensor(meta)


class Propagator:
    """Labels the nodes of one traced graph; the result lives in ``vars`` and ``points``."""

    def __init__(self, gm: fx.GraphModule, state_names: set[str]) -> None:
        from merge_studio.core.rebasin.module_rules import module_rule

        self.gm = gm
        self.state_names = state_names
        self.modules = dict(gm.named_modules())
        self.vars = AxisVars()
        self.env: dict[fx.Node, Any] = {}
        self.points: dict[str, str] = {}  # node name -> reason (first one)
        self._node: fx.Node | None = None
        self._module_rule = module_rule

    # -- helpers used by the rules -------------------------------------------------
    def report(self, why: str) -> str:
        """Record that the current node stops a group; returns the reason tag used for pins."""
        name = self._node.name if self._node is not None else "?"
        self.points.setdefault(name, why)
        return f"{name}: {why}"

    def new_var(self, size: int, hint: str) -> int:
        return FIXED if size <= 1 else self.vars.new(size, hint)

    def attach(self, label: DimLabel, tensor: str, axis: int) -> None:
        """Make ``tensor``'s ``axis`` follow ``label`` (one member per segment)."""
        offset = 0
        for seg in label:
            if seg.var != FIXED:
                self.vars.add_member(seg.var, Member(tensor, axis, offset, seg.n, seg.block))
            offset += seg.length

    def fresh(self, size: int, hint: str, members: list[tuple[str, int]]) -> DimLabel:
        var = self.new_var(size, hint)
        if var != FIXED and members and not hint.endswith("]"):
            self.vars.producers.add(var)  # a layer output (parameters used directly have "name[axis]" hints)
        label: DimLabel = (Segment(var, size, 1),)
        for tensor, axis in members:
            self.attach(label, tensor, axis)
        return label

    def label_of(self, arg: Any) -> Any:
        return self.env.get(arg) if isinstance(arg, fx.Node) else None

    def unify(self, a: DimLabel, b: DimLabel) -> DimLabel:
        return L.unify_dims(self.vars, a, b, self.report)

    def pin_all(self, value: Any, reason: str | None) -> None:
        if isinstance(value, Multi):
            for v in value:
                self.pin_all(v, reason)
        elif isinstance(value, tuple):
            for dim in value:
                L.pin_dim(self.vars, dim, reason)

    def unknown(self, node: fx.Node, what: str) -> Any:
        """Pin every permutable axis reaching ``node`` and report it when it mattered."""
        inputs = [self.env[n] for n in node.all_input_nodes if self.env.get(n) is not None]
        if any(self._has_free(v) for v in inputs):
            reason = self.report(what)
            for v in inputs:
                self.pin_all(v, reason)
        return fixed_like(tensor_meta(node))

    def _has_free(self, value: Any) -> bool:
        if isinstance(value, Multi):
            return any(self._has_free(v) for v in value)
        if isinstance(value, tuple):
            return any(L.is_free(self.vars, dim) for dim in value)
        return False

    # -- walking ---------------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            self._node = node
            self.env[node] = self.visit(node)

    def visit(self, node: fx.Node) -> Any:
        meta = tensor_meta(node)
        if node.op == "placeholder":
            return fixed_like(meta)
        if node.op == "get_attr":
            return self.get_attr(node, meta)
        if node.op == "output":
            self.pin_all_args(node)
            return None
        if node.op == "call_module":
            return self._module_rule(self, node, self.modules[str(node.target)], meta)
        if node.op == "call_function":
            return self.call_function(node, meta)
        if node.op == "call_method":
            return self.call_method(node, meta)
        return self.unknown(node, f"unsupported node kind {node.op}")

    def pin_all_args(self, node: fx.Node) -> None:
        for n in node.all_input_nodes:
            self.pin_all(self.env.get(n), None)

    def get_attr(self, node: fx.Node, meta: Any) -> Any:
        name = str(node.target)
        if meta is None or isinstance(meta, Multi):
            return fixed_like(meta)
        if name not in self.state_names:
            return fixed_tensor(meta)  # a constant that is not saved with the model cannot be permuted
        return tuple(self.fresh(size, f"{name}[{axis}]", [(name, axis)]) for axis, size in enumerate(meta))

    # -- functions and methods ---------------------------------------------------------
    def call_function(self, node: fx.Node, meta: Any) -> Any:
        target = node.target
        if target is operator.getitem:
            return self.getitem(node, meta)
        if meta is None:
            return None  # arithmetic on sizes and other non-tensors
        if target in ELEMENTWISE_FUNCTIONS:
            return self.elementwise(node, meta, list(node.args) + list(node.kwargs.values()))
        if target in SOFTMAX:
            return self.label_of(node.args[0])
        if target in REDUCE_FUNCTIONS:
            return self.reduce(node, meta)
        if target in RESHAPE_FUNCTIONS:
            return self.reshape(node, meta)
        if target in (torch.transpose, torch.permute, torch.swapaxes):
            return self.transpose(node, meta, "permute" if target is torch.permute else "transpose")
        if target in (torch.cat, torch.concat):
            return self.cat(node, meta)
        if target is torch.stack:
            return self.stack(node, meta)
        if target in (torch.split, torch.chunk, torch.tensor_split):
            return self.split(node, meta)
        if target in POOL_FUNCTIONS:
            return self.pool(node, meta, POOL_FUNCTIONS[target])
        if target in (torch.matmul, operator.matmul, torch.bmm, torch.mm):
            return self.matmul(node, meta)
        if target is F.linear:
            return self.functional_linear(node, meta)
        if target is F.layer_norm:
            return self.functional_layer_norm(node, meta)
        return self.unknown(node, f"{_name(target)} is not known to keep hidden units in place")

    def call_method(self, node: fx.Node, meta: Any) -> Any:
        method = str(node.target)
        if method in SIZE_METHODS or meta is None:
            return None
        if method in SAME_AS_SELF_METHODS:
            return self.label_of(node.args[0])
        if method in ELEMENTWISE_METHODS:
            return self.elementwise(node, meta, list(node.args) + list(node.kwargs.values()))
        if method in ("softmax", "log_softmax"):
            return self.label_of(node.args[0])
        if method in REDUCE_METHODS:
            return self.reduce(node, meta)
        if method in RESHAPE_METHODS:
            return self.reshape(node, meta)
        if method in ("permute", "transpose", "t", "swapaxes"):
            return self.transpose(node, meta, method)
        if method in ("split", "chunk", "tensor_split"):
            return self.split(node, meta)
        if method == "matmul":
            return self.matmul(node, meta)
        if method in ("expand", "expand_as"):
            return self.expand(node, meta)
        return self.unknown(node, f"tensor method .{method}() is not known to keep hidden units in place")

    def elementwise(self, node: fx.Node, meta: Any, args: list[Any]) -> Any:
        if isinstance(meta, Multi):
            return self.unknown(node, "element-wise op with several outputs")
        tensors = [lab for lab in (self.label_of(a) for a in _flatten_args(args)) if isinstance(lab, tuple) and not isinstance(lab, Multi)]
        nd = len(meta)
        out: list[DimLabel] = []
        for d in range(nd):
            cands = []
            for lab in tensors:
                k = d - (nd - len(lab))
                if k >= 0 and meta[d] != 1 and L.dim_size(lab[k]) == meta[d]:
                    cands.append(lab[k])
            if not cands:
                out.append(fixed_dim(meta[d]))
                continue
            res = cands[0]
            for c in cands[1:]:
                res = self.unify(res, c)
            out.append(res)
        return tuple(out)

    def reduce(self, node: fx.Node, meta: Any) -> Any:
        src = self.label_of(node.args[0])
        if not isinstance(src, tuple) or isinstance(src, Multi):
            return self.unknown(node, "reduction over an unlabelled value")
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        if dims is None:
            return fixed_like(meta)
        dims = [dims] if isinstance(dims, int) else list(dims)
        if not all(isinstance(d, int) for d in dims):
            return self.unknown(node, "reduction over dimensions computed at run time")
        reduced = {d % len(src) for d in dims}
        # Sums and means over permuted units do not depend on their order.
        out = [fixed_dim(1) if (i in reduced) else lab for i, lab in enumerate(src) if keepdim or i not in reduced]
        return tuple(out)

    def reshape(self, node: fx.Node, meta: Any) -> Any:
        src = self.label_of(node.args[0])
        in_meta = tensor_meta(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        if not isinstance(src, tuple) or isinstance(src, Multi) or in_meta is None:
            return self.unknown(node, "reshape of an unlabelled value")
        return L.reshape(self.vars, src, in_meta, meta, self.report)

    def transpose(self, node: fx.Node, meta: Any, how: str) -> Any:
        src = self.label_of(node.args[0])
        if not isinstance(src, tuple) or isinstance(src, Multi):
            return self.unknown(node, "transpose of an unlabelled value")
        nd = len(src)
        if how == "t":
            order = list(range(nd))[::-1]
        elif how == "permute":
            dims = node.args[1:] if len(node.args) > 2 or isinstance(node.args[1], int) else node.args[1]
            dims = dims or node.kwargs.get("dims")
            order = [int(d) % nd for d in dims]
        else:
            a = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim0")
            b = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim1")
            order = list(range(nd))
            order[a % nd], order[b % nd] = order[b % nd], order[a % nd]
        return tuple(src[i] for i in order)

    def _tensor_list_and_dim(self, node: fx.Node) -> tuple[list[Any], int]:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return [self.label_of(t) for t in tensors], int(dim)

    def cat(self, node: fx.Node, meta: Any) -> Any:
        labs, dim = self._tensor_list_and_dim(node)
        if not labs or any(not isinstance(x, tuple) or isinstance(x, Multi) for x in labs):
            return self.unknown(node, "concatenation of unlabelled values")
        nd = len(meta)
        dim %= nd
        out: list[DimLabel] = []
        for d in range(nd):
            if d == dim:
                out.append(L.concat_dims([lab[d] for lab in labs]))
            else:
                res = labs[0][d]
                for lab in labs[1:]:
                    res = self.unify(res, lab[d])
                out.append(res)
        return tuple(out)

    def stack(self, node: fx.Node, meta: Any) -> Any:
        labs, dim = self._tensor_list_and_dim(node)
        if not labs or any(not isinstance(x, tuple) or isinstance(x, Multi) for x in labs):
            return self.unknown(node, "stack of unlabelled values")
        out = list(labs[0])
        for lab in labs[1:]:
            out = [self.unify(a, b) for a, b in zip(out, lab, strict=True)]
        out.insert(dim % len(meta), fixed_dim(meta[dim % len(meta)]))
        return tuple(out)

    def split(self, node: fx.Node, meta: Any) -> Any:
        src = self.label_of(node.args[0])
        if not isinstance(meta, Multi) or not isinstance(src, tuple) or isinstance(src, Multi):
            return self.unknown(node, "split of an unlabelled value")
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        dim = int(dim) % len(src)
        sizes = [m[dim] for m in meta]
        parts = L.slice_dim(self.vars, src[dim], sizes, self.report)
        return Multi(tuple(part if i == dim else lab for i, lab in enumerate(src)) for part in parts)

    def expand(self, node: fx.Node, meta: Any) -> Any:
        """Broadcasting size-1 dimensions leaves every other dimension's units in place."""
        src = self.label_of(node.args[0])
        if not isinstance(src, tuple) or isinstance(src, Multi) or isinstance(meta, Multi):
            return self.unknown(node, "expand of an unlabelled value")
        lead = len(meta) - len(src)
        return tuple(
            fixed_dim(meta[d]) if d < lead or L.dim_size(src[d - lead]) != meta[d] else src[d - lead] for d in range(len(meta))
        )

    def getitem(self, node: fx.Node, meta: Any) -> Any:
        src = self.label_of(node.args[0])
        index = node.args[1]
        if isinstance(src, Multi):
            return src[index] if isinstance(index, int) else Multi(src[index])
        if src is None or meta is None:
            return None
        return self.index_tensor(node, src, index, meta)

    def index_tensor(self, node: fx.Node, src: TensorLabel, index: Any, meta: Any) -> Any:
        items = list(index) if isinstance(index, tuple) else [index]
        if any(isinstance(i, fx.Node) or not (i is None or i is Ellipsis or isinstance(i, (int, slice))) for i in items):
            return self.unknown(node, "indexing with tensors")
        if Ellipsis in items:
            k = items.index(Ellipsis)
            used = sum(1 for i in items if i is not None and i is not Ellipsis)
            items = items[:k] + [slice(None)] * (len(src) - used) + items[k + 1 :]
        items += [slice(None)] * (len(src) - sum(1 for i in items if i is not None))
        out: list[DimLabel] = []
        d = 0
        for item in items:
            if item is None:
                out.append(fixed_dim(1))
                continue
            lab = src[d]
            d += 1
            if isinstance(item, slice) and item == slice(None):
                out.append(lab)
                continue
            if L.is_free(self.vars, lab):
                reason = self.report("selects some of the permuted units")
                L.pin_dim(self.vars, lab, reason)
            if isinstance(item, slice):
                out.append(None)  # size read from meta below
        return tuple(lab if lab is not None else fixed_dim(meta[i]) for i, lab in enumerate(out))

    def pool(self, node: fx.Node, meta: Any, n_spatial: int) -> Any:
        src = self.label_of(node.args[0])
        if not isinstance(src, tuple) or isinstance(src, Multi) or isinstance(meta, Multi):
            return self.unknown(node, "pooling of an unlabelled value")
        return pooled(self, src, meta, n_spatial)

    def matmul(self, node: fx.Node, meta: Any) -> Any:
        a, b = self.label_of(node.args[0]), self.label_of(node.args[1])
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) < 2 or len(b) < 2:
            return self.unknown(node, "matrix product of vectors or unlabelled values")
        self.unify(a[-1], b[-2])  # the summed axis may be permuted consistently
        batch = self.elementwise(node, meta[:-2], []) if len(meta) > 2 else ()
        ba, bb = a[:-2], b[:-2]
        batch_labels: list[DimLabel] = []
        for d in range(len(meta) - 2):
            cands = [lab[k] for lab in (ba, bb) for k in [d - (len(meta) - 2 - len(lab))] if k >= 0 and meta[d] != 1 and L.dim_size(lab[k]) == meta[d]]
            res = cands[0] if cands else batch[d]
            for c in cands[1:]:
                res = self.unify(res, c)
            batch_labels.append(res)
        return (*batch_labels, a[-2], b[-1])

    def functional_linear(self, node: fx.Node, meta: Any) -> Any:
        x = self.label_of(node.args[0])
        w = self.label_of(node.args[1] if len(node.args) > 1 else node.kwargs.get("weight"))
        b = self.label_of(node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"))
        if not isinstance(x, tuple) or not isinstance(w, tuple) or len(w) != 2:
            return self.unknown(node, "linear with an unlabelled weight")
        self.unify(x[-1], w[1])
        if isinstance(b, tuple) and len(b) == 1:
            self.unify(w[0], b[0])
        return (*x[:-1], w[0])

    def functional_layer_norm(self, node: fx.Node, meta: Any) -> Any:
        x = self.label_of(node.args[0])
        if not isinstance(x, tuple):
            return self.unknown(node, "layer norm of an unlabelled value")
        for arg in list(node.args[2:4]) + [node.kwargs.get("weight"), node.kwargs.get("bias")]:
            p = self.label_of(arg)
            if isinstance(p, tuple):
                for j, dim in enumerate(p):
                    self.unify(x[len(x) - len(p) + j], dim)
        return x


def pooled(prop: Propagator, src: TensorLabel, meta: tuple[int, ...], n_spatial: int) -> TensorLabel:
    """Pooling keeps channels in place and mixes only the last ``n_spatial`` positions."""
    keep = len(src) - n_spatial
    for lab in src[keep:]:
        if L.is_free(prop.vars, lab):
            reason = prop.report("pools over permuted units")
            L.pin_dim(prop.vars, lab, reason)
    return (*src[:keep], *(fixed_dim(s) for s in meta[keep:]))


def _flatten_args(args: list[Any]) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out.extend(_flatten_args(list(a)))
        else:
            out.append(a)
    return out


def _name(target: Callable[..., Any] | str) -> str:
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or str(target)
    return f"{mod}.{name}" if mod and mod not in ("builtins", "_operator") else name
