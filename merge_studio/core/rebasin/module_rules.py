"""How each kind of layer moves hidden units: the module half of the graph walk.

Layers with weights create or consume axis variables and attach their tensors as
members; channel-wise layers (norms, activations, pooling) pass labels through;
attention modules get the heads rule (a permutation of heads shared by q, k, v and
the output projection, plus a permutation within each head for q/k and for v/out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx, nn

from merge_studio.core.rebasin import labels as L
from merge_studio.core.rebasin.axes import FIXED, DimLabel, Member, Segment, fixed_dim
from merge_studio.core.rebasin.shape_rules import Multi, fixed_like, pooled

if TYPE_CHECKING:
    from merge_studio.core.rebasin.propagate import Propagator

ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.Tanh,
    nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.LogSigmoid,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
    nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
POOL_MODULES: dict[type[nn.Module], int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}  # fmt: skip
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CHANNEL_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


def is_attention_module(module: nn.Module) -> bool:
    """Duck-typed self-attention: four Linear projections and a head count."""
    heads = getattr(module, "n_heads", getattr(module, "num_heads", None))
    return (
        not isinstance(module, nn.MultiheadAttention)
        and isinstance(heads, int)
        and all(isinstance(getattr(module, p, None), nn.Linear) for p in ATTENTION_PROJECTIONS)
    )


def module_rule(prop: Propagator, node: fx.Node, module: nn.Module, meta: Any) -> Any:
    """Labels of a module call's output (and members for the module's tensors)."""
    name = str(node.target)
    x = prop.label_of(node.args[0]) if node.args else None
    if isinstance(module, ELEMENTWISE_MODULES):
        return x
    if not isinstance(x, tuple) or isinstance(x, Multi):
        return prop.unknown(node, f"{type(module).__name__} called on an unlabelled value")
    if isinstance(module, nn.Linear):
        return _linear(prop, name, x)
    if isinstance(module, CONV):
        return _conv(prop, node, name, module, x, meta)
    if isinstance(module, CONV_T):
        return _conv_transpose(prop, node, name, module, x, meta)
    if isinstance(module, CHANNEL_NORMS):
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            if getattr(module, tensor, None) is not None:
                prop.attach(x[1], f"{name}.{tensor}", 0)
        return x
    if isinstance(module, nn.LayerNorm):
        k = len(module.normalized_shape)
        for j in range(k):
            for tensor in ("weight", "bias"):
                if getattr(module, tensor, None) is not None:
                    prop.attach(x[len(x) - k + j], f"{name}.{tensor}", j)
        return x
    if isinstance(module, nn.GroupNorm):
        if module.num_groups not in (1, module.num_channels):
            return prop.unknown(node, f"GroupNorm with {module.num_groups} groups ties channels to their group")
        if module.affine:
            prop.attach(x[1], f"{name}.weight", 0)
            prop.attach(x[1], f"{name}.bias", 0)
        return x
    if isinstance(module, nn.Embedding):
        return (*x, prop.fresh(module.embedding_dim, name, [(f"{name}.weight", 1)]))
    if isinstance(module, nn.PReLU):
        if module.num_parameters > 1:
            prop.attach(x[1], f"{name}.weight", 0)
        return x
    if isinstance(module, tuple(POOL_MODULES)):
        return pooled(prop, x, meta, POOL_MODULES[type(module)])
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return prop.reshape(node, meta)
    if isinstance(module, nn.MultiheadAttention):
        return _multihead_attention(prop, node, name, module, meta)
    if is_attention_module(module):
        return _self_attention(prop, node, name, module, x, meta)
    return prop.unknown(node, f"layer {name} ({type(module).__name__}) is not known to keep hidden units in place")


def _linear(prop: Propagator, name: str, x: tuple[DimLabel, ...]) -> Any:
    prop.attach(x[-1], f"{name}.weight", 1)
    module_out = prop.fresh(prop.modules[name].out_features, name, [(f"{name}.weight", 0)])
    if prop.modules[name].bias is not None:
        prop.attach(module_out, f"{name}.bias", 0)
    return (*x[:-1], module_out)


def _spatial_fixed(prop: Propagator, x: tuple[DimLabel, ...], meta: Any) -> tuple[DimLabel, ...]:
    for lab in x[2:]:
        if L.is_free(prop.vars, lab):
            L.pin_dim(prop.vars, lab, prop.report("convolves over permuted units"))
    return tuple(fixed_dim(s) for s in meta[2:])


def _conv(prop: Propagator, node: fx.Node, name: str, module: nn.Conv2d, x: Any, meta: Any) -> Any:
    if len(x) != len(meta) or len(x) < 3:
        return prop.unknown(node, f"{type(module).__name__} on an input without a batch dimension")
    spatial = _spatial_fixed(prop, x, meta)
    if module.groups == 1:
        prop.attach(x[1], f"{name}.weight", 1)
        out = prop.fresh(module.out_channels, name, [(f"{name}.weight", 0)])
    elif module.groups == module.in_channels == module.out_channels:
        out = x[1]  # depthwise: each output channel follows its own input channel
        prop.attach(out, f"{name}.weight", 0)
    else:
        return prop.unknown(node, f"grouped convolution ({module.groups} groups) ties channels to their group")
    if module.bias is not None:
        prop.attach(out, f"{name}.bias", 0)
    return (x[0], out, *spatial)


def _conv_transpose(prop: Propagator, node: fx.Node, name: str, module: nn.ConvTranspose2d, x: Any, meta: Any) -> Any:
    if module.groups != 1 or len(x) != len(meta) or len(x) < 3:
        return prop.unknown(node, f"{type(module).__name__} with groups or without a batch dimension")
    spatial = _spatial_fixed(prop, x, meta)
    prop.attach(x[1], f"{name}.weight", 0)
    out = prop.fresh(module.out_channels, name, [(f"{name}.weight", 1)])
    if module.bias is not None:
        prop.attach(out, f"{name}.bias", 0)
    return (x[0], out, *spatial)


def _heads_vars(prop: Propagator, name: str, qk_size: int, vo_size: int, n_heads: int) -> tuple[int, int]:
    """Two variables sharing one head order: q/k units and v/out units."""
    qk = prop.vars.new(qk_size, f"{name}.qk")
    vo = prop.vars.new(vo_size, f"{name}.vo")
    prop.vars.heads[qk] = (n_heads, vo)
    prop.vars.heads[vo] = (n_heads, qk)
    return qk, vo


def _self_attention(prop: Propagator, node: fx.Node, name: str, module: nn.Module, x: Any, meta: Any) -> Any:
    n_heads = int(getattr(module, "n_heads", getattr(module, "num_heads", 1)))
    projections = {p: getattr(module, p) for p in ATTENTION_PROJECTIONS}
    known = {f"{p}.{t}" for p in ATTENTION_PROJECTIONS for t in ("weight", "bias")}
    extra = [n for n, _ in module.named_parameters() if n not in known]
    q, k, v, o = (projections[p] for p in ATTENTION_PROJECTIONS)
    if extra or isinstance(meta, Multi) or q.out_features != k.out_features or v.out_features != o.in_features:
        why = f"has other parameters ({', '.join(extra)})" if extra else "has projections of unexpected shapes"
        return prop.unknown(node, f"attention layer {name} {why}")
    if q.out_features % n_heads or v.out_features % n_heads or len(node.all_input_nodes) != 1:
        return prop.unknown(node, f"attention layer {name}: heads do not divide the projections, or extra inputs")
    qk, vo = _heads_vars(prop, name, q.out_features, v.out_features, n_heads)
    for p in ("q_proj", "k_proj", "v_proj"):
        prop.attach(x[-1], f"{name}.{p}.weight", 1)
    for p, var in (("q_proj", qk), ("k_proj", qk), ("v_proj", vo)):
        label = (Segment(var, projections[p].out_features, 1),)
        prop.attach(label, f"{name}.{p}.weight", 0)
        if projections[p].bias is not None:
            prop.attach(label, f"{name}.{p}.bias", 0)
    prop.attach((Segment(vo, v.out_features, 1),), f"{name}.out_proj.weight", 1)
    out = prop.fresh(o.out_features, f"{name}.out_proj", [(f"{name}.out_proj.weight", 0)])
    if o.bias is not None:
        prop.attach(out, f"{name}.out_proj.bias", 0)
    # the layer is kept whole in the graph: its projections are watched through their own modules
    for sub, port, var, n in (("q_proj", "output", qk, q.out_features), ("k_proj", "output", qk, k.out_features),
                              ("v_proj", "output", vo, v.out_features), ("out_proj", "input", vo, v.out_features)):
        prop.module_sites.append((node, f"{name}.{sub}", port, var, n))
    return (*x[:-1], out)


def _multihead_attention(prop: Propagator, node: fx.Node, name: str, module: nn.MultiheadAttention, meta: Any) -> Any:
    args = list(node.args) + [node.kwargs.get(k) for k in ("query", "key", "value") if k in node.kwargs]
    query, key, value = (prop.label_of(a) for a in args[:3])
    if module.bias_k is not None or not all(isinstance(t, tuple) for t in (query, key, value)):
        return prop.unknown(node, f"attention layer {name} with added key/value biases or unlabelled inputs")
    e, n_heads = module.embed_dim, module.num_heads
    qk, vo = _heads_vars(prop, name, e, e, n_heads)
    if module._qkv_same_embed_dim:
        prop.unify(query[-1], key[-1])
        prop.unify(query[-1], value[-1])
        prop.attach(query[-1], f"{name}.in_proj_weight", 1)
        packed = [(qk, 0), (qk, e), (vo, 2 * e)]
        for var, offset in packed:
            prop.vars.add_member(var, Member(f"{name}.in_proj_weight", 0, offset, e, 1))
            if module.in_proj_bias is not None:
                prop.vars.add_member(var, Member(f"{name}.in_proj_bias", 0, offset, e, 1))
    else:
        for label, tensor, var in ((query, "q_proj_weight", qk), (key, "k_proj_weight", qk), (value, "v_proj_weight", vo)):
            prop.attach(label[-1], f"{name}.{tensor}", 1)
            prop.vars.add_member(var, Member(f"{name}.{tensor}", 0, 0, e, 1))
        if module.in_proj_bias is not None:
            for var, offset in ((qk, 0), (qk, e), (vo, 2 * e)):
                prop.vars.add_member(var, Member(f"{name}.in_proj_bias", 0, offset, e, 1))
    prop.attach((Segment(vo, e, 1),), f"{name}.out_proj.weight", 1)
    out = prop.fresh(e, f"{name}.out_proj", [(f"{name}.out_proj.weight", 0)])
    if module.out_proj.bias is not None:
        prop.attach(out, f"{name}.out_proj.bias", 0)
    first = (*query[:-1], out)
    if isinstance(meta, Multi):
        rest = [fixed_like(m) for m in meta[1:]]
        return Multi([first, *rest])
    return first


__all__ = ["module_rule", "is_attention_module", "FIXED"]
