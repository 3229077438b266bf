"""REPAIR (Jordan, Sedghi, Saukh, Entezari and Neyshabur, ICLR 2023).

Interpolating two aligned networks shrinks the variance of hidden units (their
signals partly cancel), and the collapse compounds layer after layer. REPAIR puts
every hidden layer's per-unit mean and standard deviation back to the
interpolation of the endpoints' statistics: ``(1 − α)·μ_A + α·μ_B`` and
``(1 − α)·σ_A + α·σ_B``. As in the paper, the interpolated network's statistics
are measured with each layer renormalised on the fly (like a BatchNorm layer in
training mode), so a correction upstream is seen downstream; the correction is
then folded into the layer's own weight and bias, so the result is a plain state
dict of the same architecture. BatchNorm layers get their running statistics
re-estimated in the same pass.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from merge_studio.core.device import resolve_device
from merge_studio.core.evaluate.loop import _BN_TYPES
from merge_studio.core.rebasin.spec import PermutationSpec, as_args, set_mode
from merge_studio.errors import MethodError

EPS = 1e-5
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CALIBRATION_EXAMPLES = 2048  # enough for per-unit means and spreads; a REPAIR pass costs a few forwards
CALIBRATION_BATCH = 512


def calibration_batches(inputs: torch.Tensor, examples: int = CALIBRATION_EXAMPLES, batch_size: int = CALIBRATION_BATCH) -> list[torch.Tensor]:
    """The first ``examples`` inputs in batches: what REPAIR (and activation matching) runs the models on."""
    inputs = inputs[:examples]
    return [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]


@dataclass(frozen=True)
class RepairLayer:
    """A layer whose output REPAIR resets: which dimension of its output holds the units, which weight axis writes them."""

    name: str
    unit_dim: int
    weight_axis: int


def _layer_kind(module: nn.Module) -> tuple[int, int] | None:
    """(output unit dimension, weight output axis) for layers REPAIR can fold into, else ``None``."""
    if getattr(module, "bias", None) is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
        return None
    if isinstance(module, nn.Linear):
        return -1, 0
    if isinstance(module, CONV) and module.groups == 1:
        return 1, 0
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        return -1, 0
    nf = getattr(module, "nf", None)  # Hugging Face Conv1D: weight (in, out), output units last
    if isinstance(nf, int) and module.weight.dim() == 2 and module.weight.shape[1] == nf:
        return -1, 1
    return None


def repair_layers(module: nn.Module, spec: PermutationSpec) -> list[RepairLayer]:
    """Hidden layers with a bias: those whose output units belong to a permutation group (not the model's outputs).

    (Layers feeding a BatchNorm layer are dropped later: re-estimating its statistics corrects them.)
    """
    hidden = {m.tensor: m.axis for g in spec.groups for m in g.members}
    layers = []
    for name, sub in module.named_modules():
        kind = _layer_kind(sub)
        if kind is not None and hidden.get(f"{name}.weight") == kind[1] and f"{name}.bias" in hidden:
            layers.append(RepairLayer(name, *kind))
    return layers


def feeding_batchnorm(module: nn.Module, layers: Sequence[RepairLayer], example: Any) -> set[str]:
    """Layers whose output goes straight into a BatchNorm layer (which re-estimation already corrects)."""
    subs = dict(module.named_modules())
    outputs: dict[int, str] = {}
    fed: set[str] = set()
    handles = [subs[layer.name].register_forward_hook(
        lambda _m, _i, out, name=layer.name: outputs.__setitem__(id(out), name)) for layer in layers]
    for bn in (m for m in module.modules() if isinstance(m, _BN_TYPES)):
        handles.append(bn.register_forward_pre_hook(lambda _m, inp: fed.add(outputs.get(id(inp[0]), ""))))
    set_mode(module, False)
    try:
        with torch.no_grad():
            module(*as_args(example))
    finally:
        for h in handles:
            h.remove()
    return fed - {""}


def _unit_view(out: torch.Tensor, dim: int) -> torch.Tensor:
    """The output with units as columns and every other position as rows."""
    return out.movedim(dim, -1).reshape(-1, out.shape[dim])


def _shape_for(vec: torch.Tensor, out: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * out.dim()
    shape[dim] = -1
    return vec.view(shape)


class _Stats:
    def __init__(self) -> None:
        self.rows = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        x = rows.double()
        self.rows += x.shape[0]
        s, ss = x.sum(0), (x * x).sum(0)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.s is not None and self.ss is not None
        mean = self.s / self.rows
        var = (self.ss / self.rows - mean * mean).clamp_min(0)
        return mean.float(), (var + EPS).sqrt().float()


def _run(module: nn.Module, batches: Iterable[Any], device: torch.device) -> None:
    with torch.no_grad():
        for batch in batches:
            x = batch.to(device) if isinstance(batch, torch.Tensor) else batch
            module(*as_args(x))


def layer_statistics(
    module: nn.Module, layers: Sequence[RepairLayer], batches: Sequence[Any], device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the mean and standard deviation of each output unit over ``batches`` (eval mode)."""
    stats = {layer.name: _Stats() for layer in layers}
    subs = dict(module.named_modules())
    handles = []
    for layer in layers:
        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, layer: RepairLayer = layer) -> None:
            stats[layer.name].add(_unit_view(out.detach(), layer.unit_dim))

        handles.append(subs[layer.name].register_forward_hook(hook))
    set_mode(module, False)
    try:
        _run(module, batches, device)
    finally:
        for h in handles:
            h.remove()
    return {name: st.mean_std() for name, st in stats.items() if st.rows}


class Repairer:
    """REPAIR for averages of aligned models: their statistics measured once, any weighting corrected after.

    ``states`` are the endpoints (A and aligned B, or every aligned model of a
    MergeMany); :meth:`repair_module` corrects a module holding their weighted
    average in place (barrier sweeps), :meth:`repaired_state` returns a new state dict.
    """

    def __init__(
        self,
        module: nn.Module,
        spec: PermutationSpec,
        states: Sequence[Mapping[str, torch.Tensor]],
        batches: Sequence[Any],
        *,
        device: str | torch.device = "cpu",
    ) -> None:
        if not batches:
            raise MethodError("REPAIR needs data to measure the models' statistics", hint="choose evaluation data")
        self.device = resolve_device(device)
        self.batches = list(batches)
        self.layers = repair_layers(module, spec)
        self.has_batchnorm = any(isinstance(m, _BN_TYPES) and m.track_running_stats for m in module.modules())
        work = copy.deepcopy(module).to(self.device)
        if self.has_batchnorm:
            first = self.batches[0]
            example = first[:2].to(self.device) if isinstance(first, torch.Tensor) else first
            fed = feeding_batchnorm(work, self.layers, example)
            self.layers = [layer for layer in self.layers if layer.name not in fed]
        self.stats = [self._endpoint(work, state) for state in states]
        self.layers = [layer for layer in self.layers if all(layer.name in st for st in self.stats)]

    def _endpoint(self, work: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        work.load_state_dict({k: v.to(self.device) for k, v in state.items()}, strict=False)
        return layer_statistics(work, self.layers, self.batches, self.device)

    def describe(self) -> dict[str, Any]:
        return {"layers": [layer.name for layer in self.layers], "batchnorm_reset": self.has_batchnorm}

    def _targets(self, weights: Sequence[float]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if len(weights) != len(self.stats):
            raise ValueError(f"{len(weights)} weights for {len(self.stats)} models")
        out = {}
        for layer in self.layers:
            mean = sum(w * st[layer.name][0] for w, st in zip(weights, self.stats, strict=True))
            std = sum(w * st[layer.name][1] for w, st in zip(weights, self.stats, strict=True))
            out[layer.name] = (mean.to(self.device), std.to(self.device))
        return out

    def interpolation(self, module: nn.Module, lam: float) -> None:
        """:meth:`repair_module` for the point ``(1 − λ)·A + λ·B`` of a two-model path (barrier sweeps)."""
        self.repair_module(module, (1.0 - lam, lam))

    @torch.no_grad()
    def repair_module(self, module: nn.Module, weights: Sequence[float]) -> None:
        """Correct ``module`` (holding ``Σ wᵢ·θᵢ``) in place."""
        subs = dict(module.named_modules())
        targets = self._targets(weights)
        sums: dict[str, list[Any]] = {layer.name: [0, None, None] for layer in self.layers}
        handles = []
        for layer in self.layers:
            def hook(_m: nn.Module, _inp: Any, out: torch.Tensor, layer: RepairLayer = layer) -> torch.Tensor:
                rows = _unit_view(out, layer.unit_dim)
                mean, var = rows.mean(0), rows.var(0, unbiased=False)
                acc = sums[layer.name]
                acc[0] += 1
                acc[1] = mean if acc[1] is None else acc[1] + mean
                acc[2] = var if acc[2] is None else acc[2] + var
                mean_t, std_t = targets[layer.name]
                scale = std_t / (var + EPS).sqrt()
                dim = layer.unit_dim
                return (out - _shape_for(mean, out, dim)) * _shape_for(scale, out, dim) + _shape_for(mean_t, out, dim)

            handles.append(subs[layer.name].register_forward_hook(hook))
        bns = [m for m in module.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
        momenta = [m.momentum for m in bns]
        set_mode(module, False)
        try:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            _run(module, self.batches, self.device)
        finally:
            for h in handles:
                h.remove()
            for m, momentum in zip(bns, momenta, strict=True):
                m.momentum = momentum
            set_mode(module, False)
        for layer in self.layers:
            count, mean_sum, var_sum = sums[layer.name]
            if not count:
                continue
            mean_m, var_m = mean_sum / count, var_sum / count
            mean_t, std_t = targets[layer.name]
            scale = std_t / (var_m + EPS).sqrt()
            sub = subs[layer.name]
            shape = [1] * sub.weight.dim()
            shape[layer.weight_axis] = -1
            sub.weight.mul_(scale.view(shape).to(sub.weight.dtype))
            sub.bias.copy_(((sub.bias - mean_m) * scale + mean_t).to(sub.bias.dtype))

    def repaired_state(self, module: nn.Module, merged: Mapping[str, torch.Tensor], weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """A new state dict: ``merged`` (the average with ``weights``) with REPAIR applied."""
        work = copy.deepcopy(module).to(self.device)
        dtypes = {k: v.dtype for k, v in merged.items()}
        work.load_state_dict({k: (v.float() if v.is_floating_point() else v).to(self.device) for k, v in merged.items()})
        self.repair_module(work, weights)
        return {k: v.detach().to("cpu", dtypes.get(k, v.dtype)) for k, v in work.state_dict().items()}
