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
from merge_studio.core.rebasin.aten_rules import aten_rule, op_name
from merge_studio.core.rebasin.axes import FIXED, AxisVars, DimLabel, Member, Segment, fixed_dim, fixed_tensor
from merge_studio.core.rebasin.shape_rules import Multi, ShapeRules, fixed_like, tensor_meta


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


class Propagator(ShapeRules):
    """Labels the nodes of one traced graph; the result lives in ``vars`` and ``points``."""

    def __init__(self, gm: fx.GraphModule, state_names: set[str]) -> None:
        from merge_studio.core.rebasin.module_rules import module_rule

        self.gm = gm
        self.state_names = state_names
        self.modules = dict(gm.named_modules())
        self.vars = AxisVars()
        self.env: dict[fx.Node, Any] = {}
        self.points: dict[str, str] = {}  # node name -> reason (first one)
        self.module_sites: list[tuple[fx.Node, str, str, int, int]] = []  # (node, sub-module, port, var, units)
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
        if not isinstance(arg, fx.Node):
            return None
        return self.normalized(self.env.get(arg))

    def normalized(self, value: Any) -> Any:
        """Labels read through any variable split since they were made."""
        if isinstance(value, Multi):
            return Multi(self.normalized(v) for v in value)
        if isinstance(value, tuple):
            return L.normalize(self.vars, value)
        return value

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
        from merge_studio.core.rebasin.attention import find_attention
        from merge_studio.core.rebasin.attention_rule import attention_rule

        self.attention = find_attention(self.gm)
        inside = {n for p in self.attention for n in p.internal}
        outputs = {p.out: p for p in self.attention}
        for node in self.gm.graph.nodes:
            self._node = node
            if node in inside:
                self.env[node] = None  # between an attention's projections and its output: the rule below covers it
            elif node in outputs:
                self.env[node] = attention_rule(self, outputs[node], tensor_meta(node))
            else:
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
        dims = tuple(self.fresh(size, f"{name}[{axis}]", [(name, axis)]) for axis, size in enumerate(meta))
        self.vars.param_axes.update(seg.var for dim in dims for seg in dim if seg.var != FIXED)
        if len(meta) >= 2 and dims[0][0].var != FIXED:
            self.vars.producers.add(dims[0][0].var)  # a weight's output axis: this layer writes the units
        return dims

    # -- functions and methods ---------------------------------------------------------
    def call_function(self, node: fx.Node, meta: Any) -> Any:
        target = node.target
        if target is operator.getitem:
            return self.getitem(node, meta)
        if meta is None and not isinstance(node.meta.get("val"), (list, tuple)):
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
        aten = op_name(target)
        if aten is not None:
            out = aten_rule(self, node, meta, aten)
            if out is not NotImplemented:
                return out
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
