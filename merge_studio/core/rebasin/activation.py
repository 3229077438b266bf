"""Activation matching (Ainsworth, Hayase and Srinivasa 2023, "Git Re-Basin", §3.1).

Both models see the same unlabeled inputs; at every activation site of a group
(:mod:`merge_studio.core.rebasin.sites`) the correlation between A's unit ``i`` and
B's unit ``j`` is accumulated batch by batch from sums and cross-products, never
from stored activations, so memory stays at one batch of activations plus an
``n × n`` matrix per site. Each group's permutation then maximises the summed
correlation of matched units (``linear_sum_assignment``); attention groups keep
heads whole, as in weight matching. Groups no value carries (a parameter read
directly, with no layer output of its own) are matched on their weights with the
others held fixed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import fx

from merge_studio.core.device import resolve_device
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.apply import check_state
from merge_studio.core.rebasin.matching import (
    MatchingResult,
    _float_state,
    _Problem,
    _small_problem_threads,
    _step,
    _units,
    solve_unit,
)
from merge_studio.core.rebasin.sites import ActivationSite
from merge_studio.core.rebasin.spec import ModuleAnalysis, set_mode
from merge_studio.core.rebasin.trace import fixed_batch_size, graph_args
from merge_studio.errors import ArchitectureError, MethodError

EPS = 1e-8
SITE_ROWS = 1 << 16  # rows of one site read at a time (memory of one cross-product step)


class _SiteStats:
    """Running sums for one site: Σa, Σb, Σa², Σb², Σaᵀb over every row seen."""

    def __init__(self, n: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.count = 0
        self.sa, self.sb = torch.zeros(n, **f64), torch.zeros(n, **f64)
        self.saa, self.sbb = torch.zeros(n, **f64), torch.zeros(n, **f64)
        self.sab = torch.zeros(n, n, **f64)

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        for start in range(0, a.shape[0], SITE_ROWS):
            x, y = a[start : start + SITE_ROWS].float(), b[start : start + SITE_ROWS].float()
            self.count += x.shape[0]
            self.sa += x.sum(0).double()
            self.sb += y.sum(0).double()
            self.saa += (x * x).sum(0).double()
            self.sbb += (y * y).sum(0).double()
            self.sab += (x.T @ y).double()

    def correlation(self) -> torch.Tensor:
        """Pearson correlation of A's units (rows) with B's units (columns); 0 for dead units."""
        n = max(self.count, 1)
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - ma[:, None] * mb[None, :]
        sd_a = (self.saa / n - ma * ma).clamp_min(0).sqrt()
        sd_b = (self.sbb / n - mb * mb).clamp_min(0).sqrt()
        return cov / (sd_a[:, None] * sd_b[None, :] + EPS)


def site_rows(value: torch.Tensor, site: ActivationSite) -> torch.Tensor:
    """The site's units as columns, every other position (batch, tokens, pixels) as rows."""
    part = value.narrow(site.dim, site.offset, site.n * site.block).movedim(site.dim, -1)
    part = part.reshape(-1, site.n, site.block).transpose(1, 2)
    return part.reshape(-1, site.n)


def site_key(site: ActivationSite) -> str:
    """Sites reading the same value share a key: a node's name, or ``module:port``."""
    return f"{site.module}:{site.port}" if site.module else site.node


class _Watcher(fx.Interpreter):
    """Runs the graph and hands every watched value to ``on_value(key, tensor)`` as it is computed."""

    def __init__(self, gm: fx.GraphModule, keys: set[str], on_value: Any) -> None:
        super().__init__(gm)
        self.nodes = {k for k in keys if ":" not in k}
        self.ports = [k.rsplit(":", 1) for k in keys if ":" in k]
        self.on_value = on_value

    def run(self, *args: Any) -> Any:  # type: ignore[override]
        handles = []
        for module, port in self.ports:
            sub = self.module.get_submodule(module)
            key = f"{module}:{port}"
            if port == "input":
                handles.append(sub.register_forward_pre_hook(lambda _m, inp, key=key: self.on_value(key, inp[0])))
            else:
                handles.append(sub.register_forward_hook(lambda _m, _i, out, key=key: self.on_value(key, out)))
        try:
            return super().run(*args)
        finally:
            for h in handles:
                h.remove()

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.name in self.nodes and isinstance(result, torch.Tensor):
            self.on_value(n.name, result)
        return result


def _graph_with_state(graph: fx.GraphModule, state: Mapping[str, torch.Tensor], device: torch.device, which: str) -> fx.GraphModule:
    gm = copy.deepcopy(graph)
    own = gm.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ArchitectureError(
            f"model {which} lacks {len(missing)} tensor(s) the architecture needs, e.g. {missing[0]}",
            hint="check that the architecture matches the checkpoint",
        )
    gm.load_state_dict({k: state[k].detach().to(own[k].dtype) for k in own}, strict=False)
    gm.to(device)
    set_mode(gm, False)
    return gm


def rebatch(batches: Sequence[Any], size: int) -> list[Any]:
    """The same examples in batches of exactly ``size`` (a remainder smaller than that is left out)."""
    tensors = [b for b in batches if isinstance(b, torch.Tensor)]
    if len(tensors) != len(batches) or not tensors or all(len(t) == size for t in tensors):
        return list(batches)
    whole = torch.cat(tensors)
    return [whole[i : i + size] for i in range(0, len(whole) - size + 1, size)]


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    return x


StateDict = Mapping[str, torch.Tensor]


def iter_site_correlations(
    analysis: ModuleAnalysis,
    targets: StateDict | Sequence[StateDict],
    state_b: StateDict,
    batches: Iterable[Any],
    *,
    device: str | torch.device = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Per group, the mean over its sites of the correlation matrix of A's units (rows) with B's (columns).

    ``targets`` is model A, or several models whose activations are averaged
    (MergeMany: the other models, already aligned to each other). Returns the
    matrices over each group's units and, for grouped-query attention groups, over
    their key/value units.
    """
    dev = resolve_device(device)
    sites = [s for s in analysis.sites]
    by_node: dict[str, list[tuple[int, ActivationSite]]] = {}
    for k, site in enumerate(sites):
        by_node.setdefault(site_key(site), []).append((k, site))
    stats = [_SiteStats(s.n, dev) for s in sites]
    largest = max((g.size for g in analysis.spec.groups), default=0)  # small models: one thread (see matching)
    target_list = [targets] if isinstance(targets, Mapping) else list(targets)
    gms_a = [_graph_with_state(analysis.graph, state, dev, "A") for state in target_list]
    gm_b = _graph_with_state(analysis.graph, state_b, dev, "B")
    batches = list(batches)
    fixed = fixed_batch_size(analysis.graph)
    if fixed is not None:  # a program exported for one batch size: feed it batches of that size
        batches = rebatch(batches, fixed)
    if not batches:
        raise MethodError("activation matching needs data to run the models on", hint="choose evaluation data")
    for i, batch in enumerate(batches):
        check_cancel(cancel)
        held: dict[str, torch.Tensor] = {}
        weight = 1.0 / len(gms_a)

        def keep(name: str, value: torch.Tensor) -> None:
            value = value.detach() * weight if len(gms_a) > 1 else value.detach()
            held[name] = held[name] + value if name in held else value

        def pair(name: str, value: torch.Tensor) -> None:
            a_value = held.pop(name)
            for k, site in by_node[name]:
                stats[k].add(site_rows(a_value, site), site_rows(value.detach(), site))

        args = graph_args(analysis.graph, _to_device(batch, dev))
        with torch.no_grad(), _small_problem_threads(dev, largest):
            for gm_a in gms_a:
                _Watcher(gm_a, set(by_node), keep).run(*args)
            _Watcher(gm_b, set(by_node), pair).run(*args)
        yield Progress("activation matching", i + 1, len(batches), unit="batches", message=f"batch {i + 1} of {len(batches)}")
    sums: dict[tuple[str, bool], torch.Tensor] = {}
    counts: dict[tuple[str, bool], int] = {}
    for site, st in zip(sites, stats, strict=True):
        with _small_problem_threads(dev, largest):
            corr = st.correlation()
        key = (site.group, site.kv)
        sums[key] = sums[key] + corr if key in sums else corr.clone()
        counts[key] = counts.get(key, 0) + 1
    mean = {key: (m / counts[key]).cpu() for key, m in sums.items()}
    return {g: m for (g, kv), m in mean.items() if not kv}, {g: m for (g, kv), m in mean.items() if kv}


def _solve_unit(
    analysis: ModuleAnalysis, unit: tuple[str, ...], corr: Mapping[str, torch.Tensor], kv_corr: Mapping[str, torch.Tensor]
) -> list[np.ndarray]:
    groups = [analysis.spec.group(n) for n in unit]
    costs = [corr[g.name].double().numpy() for g in groups]
    kv_costs = [kv_corr[g.name].double().numpy() if g.name in kv_corr else None for g in groups]
    return solve_unit(groups, costs, kv_costs)


def matched_correlation(corr: torch.Tensor, perm: torch.Tensor) -> float:
    """Mean correlation of A's unit ``i`` with B's unit ``perm[i]``."""
    idx = torch.as_tensor(perm, dtype=torch.long)
    return float(corr[torch.arange(len(idx)), idx].mean()) if len(idx) else 0.0


def iter_activation_matching(
    analysis: ModuleAnalysis,
    state_a: StateDict | Sequence[StateDict],
    state_b: StateDict,
    batches: Sequence[Any],
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, MatchingResult]:
    """Permutations of B's units that best correlate B's activations with A's on ``batches``.

    ``state_a`` may be several models (their activations averaged, for MergeMany).
    The result's objective is the mean correlation of matched units over all groups
    seen in activations (before: B's own order); ``correlation`` holds it per group.
    """
    start = time.perf_counter()
    spec = analysis.spec
    targets = [state_a] if isinstance(state_a, Mapping) else list(state_a)
    for target in targets:
        check_state(spec, target, "model A")
    check_state(spec, state_b, "model B")
    corr, kv_corr = yield from iter_site_correlations(analysis, targets, state_b, batches, device=device, cancel=cancel)
    dev = resolve_device(device)
    perms = {g.name: torch.arange(g.size) for g in spec.groups}
    unseen: list[tuple[str, ...]] = []
    for unit in _units(spec):
        if all(name in corr for name in unit):
            for name, perm in zip(unit, _solve_unit(analysis, unit, corr, kv_corr), strict=True):
                perms[name] = torch.as_tensor(perm, dtype=torch.long)
        else:
            unseen.append(unit)
    if unseen:
        reference = targets[0] if len(targets) == 1 else _average(targets, spec)
        perms = yield from _match_unseen_by_weights(analysis, reference, state_b, perms, unseen, dev, cancel)
    before = [matched_correlation(c, torch.arange(c.shape[0])) for c in corr.values()]
    after = {g: matched_correlation(c, perms[g]) for g, c in corr.items()}
    return MatchingResult(
        perms=perms,
        objective=(float(np.mean(list(after.values()))) if after else 0.0,),
        initial_objective=float(np.mean(before)) if before else 0.0,
        sweeps=1,
        converged=True,
        seed=seed,
        seconds=time.perf_counter() - start,
        method="activation",
        correlation={g: round(v, 6) for g, v in after.items()},
        by_weights=tuple(name for unit in unseen for name in unit),
    )


def _average(states: Sequence[StateDict], spec: Any) -> dict[str, torch.Tensor]:
    tensors = spec.members_by_tensor()
    return {t: sum(s[t].float() for s in states) / len(states) for t in tensors}


def _match_unseen_by_weights(
    analysis: ModuleAnalysis,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    perms: dict[str, torch.Tensor],
    units: list[tuple[str, ...]],
    dev: torch.device,
    cancel: CancelToken | None,
    max_sweeps: int = 20,
) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """Weight matching of the groups no activation showed, every other group held as found."""
    spec = analysis.spec
    a = _float_state(spec, state_a, "A", dev)
    b = _float_state(spec, state_b, "B", dev)
    problem = _Problem(spec, a, b, {k: v.to(dev) for k, v in perms.items()})
    solved: dict[tuple[str, ...], tuple] = {}
    for sweep in range(max_sweeps):
        check_cancel(cancel)
        if not any([_step(problem, unit, solved) for unit in units]):
            break
        yield Progress("activation matching", sweep + 1, None, unit="sweeps",
                       message=f"matching {len(units)} group(s) seen in no activation by their weights")
    return {k: v.cpu() for k, v in problem.perms.items()}
