"""Shape-changing and indexing rules of the graph walk (reshape, transpose, cat, split, pooling...).

Mixed into :class:`~merge_studio.core.rebasin.propagate.Propagator`; each rule
returns the labels of a node's output, pinning (and reporting) what it cannot follow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import fx

from merge_studio.core.rebasin import labels as L
from merge_studio.core.rebasin.axes import DimLabel, TensorLabel, fixed_dim, fixed_tensor

if TYPE_CHECKING:
    from merge_studio.core.rebasin.axes import AxisVars


class Multi(tuple):
    """Labels of a node that returns several tensors (split, chunk, attention)."""


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


class ShapeRules:
    """Rules that move, merge, split or select dimensions."""

    vars: AxisVars

    def report(self, why: str) -> str:  # provided by Propagator
        raise NotImplementedError

    def unknown(self, node: fx.Node, what: str) -> Any:  # provided by Propagator
        raise NotImplementedError

    def label_of(self, arg: Any) -> Any:  # provided by Propagator
        raise NotImplementedError

    def unify(self, a: DimLabel, b: DimLabel) -> DimLabel:  # provided by Propagator
        raise NotImplementedError

    def elementwise(self, node: fx.Node, meta: Any, args: list[Any]) -> Any:  # provided by Propagator
        raise NotImplementedError

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


def pooled(prop: ShapeRules, src: TensorLabel, meta: tuple[int, ...], n_spatial: int) -> TensorLabel:
    """Pooling keeps channels in place and mixes only the last ``n_spatial`` positions."""
    keep = len(src) - n_spatial
    for lab in src[keep:]:
        if L.is_free(prop.vars, lab):
            reason = prop.report("pools over permuted units")
            L.pin_dim(prop.vars, lab, reason)
    return (*src[:keep], *(fixed_dim(s) for s in meta[keep:]))
