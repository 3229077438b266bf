"""Where each permutation group's units can be watched while the model runs.

The graph walk labels every value's dimensions with the variables (groups) they
carry; a value whose dimension carries a group is a place to read that group's
activations. Values that only move data (views, transposes, copies, dropout) repeat
what their input holds and are left out, so each activation is read once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import operator

import torch
from torch import fx, nn

from merge_studio.core.rebasin.aten_rules import op_name
from merge_studio.core.rebasin.axes import FIXED
from merge_studio.core.rebasin.shape_rules import Multi, tensor_meta

if TYPE_CHECKING:
    from merge_studio.core.rebasin.propagate import Propagator

ALIAS_METHODS = {
    "contiguous", "clone", "float", "double", "half", "bfloat16", "to", "type_as", "detach", "requires_grad_",
    "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as",
    "permute", "transpose", "t", "swapaxes", "expand", "expand_as",
}  # fmt: skip
ALIAS_FUNCTIONS = {
    torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.swapaxes,
    nn.functional.dropout, nn.functional.dropout1d, nn.functional.dropout2d, nn.functional.dropout3d, operator.getitem,
}  # fmt: skip
ALIAS_ATEN = {
    "view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "transpose", "permute", "t",
    "clone", "contiguous", "_to_copy", "alias", "detach", "dropout", "expand", "lift_fresh_copy",
}  # fmt: skip
ALIAS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten)


@dataclass(frozen=True)
class ActivationSite:
    """Units ``offset .. offset + n`` (each ``block`` elements) of dimension ``dim`` of a graph value belong to ``group``.

    ``kv`` marks the key/value units of a grouped-query attention group (fewer than
    the group's query units). ``module``/``port``, when set, read the value at a
    sub-module's output or input instead (inside an attention layer kept whole).
    """

    node: str
    dim: int
    offset: int
    n: int
    block: int
    group: str
    kv: bool = False
    module: str | None = None
    port: str = "output"

    def to_json(self) -> dict[str, Any]:
        out = {"node": self.node, "dim": self.dim, "offset": self.offset, "n": self.n, "block": self.block, "group": self.group}
        if self.kv:
            out["kv"] = True
        if self.module:
            out.update(module=self.module, port=self.port)
        return out


def _moves_data_only(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return str(node.target) in ALIAS_METHODS
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), ALIAS_MODULES)
    if node.op == "call_function":
        if node.target in ALIAS_FUNCTIONS:
            return True
        name = op_name(node.target)
        return name in ALIAS_ATEN if name is not None else False
    return True  # placeholders, parameters, outputs


def find_sites(prop: Propagator, names: Mapping[int, tuple[str, bool]]) -> list[ActivationSite]:
    """Every (value, dimension range) carrying a permutation group, in graph order.

    ``names`` maps each group's root variable to (group name, whether these are key/value units).
    """
    sites: list[ActivationSite] = []
    for node, module, port, var, n in prop.module_sites:
        root = prop.vars.find(var)
        if root in names:
            sites.append(ActivationSite(node.name, -1, 0, n, 1, names[root][0], names[root][1], module, port))
    for node in prop.gm.graph.nodes:
        label = prop.normalized(prop.env.get(node))
        meta = tensor_meta(node)
        if not isinstance(label, tuple) or isinstance(label, Multi) or not isinstance(meta, tuple):
            continue
        if _moves_data_only(node, prop.modules) or len(label) != len(meta):
            continue
        value = node.meta.get("tensor_meta")
        if value is None or not getattr(value, "dtype", torch.float32).is_floating_point:
            continue
        for dim, segments in enumerate(label):
            offset = 0
            for seg in segments:
                root = prop.vars.find(seg.var) if seg.var != FIXED else FIXED
                if root in names:
                    sites.append(ActivationSite(node.name, dim, offset, seg.n, seg.block, *names[root]))
                offset += seg.length
    return sites
