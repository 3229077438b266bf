"""Weight matching (Ainsworth, Hayase and Srinivasa 2023, "Git Re-Basin", Algorithm 1).

Coordinate descent over the permutation groups in a seeded random order: for one
group, with every other permutation held fixed, the best permutation maximises the
summed inner products of all weights touching the group, a linear assignment
problem solved exactly by ``scipy.optimize.linear_sum_assignment``. Sweeps repeat
until no group improves. Attention groups keep heads whole: the best within-head
assignment is solved for every pair of heads, then heads are assigned by those
scores (exact for the same linear objective under the head constraint).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from merge_studio.core.device import resolve_device
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.apply import check_state, permute_member
from merge_studio.core.rebasin.axes import Member
from merge_studio.core.rebasin.spec import PermutationGroup, PermutationSpec
from merge_studio.errors import IncompatibleCheckpointsError

RELATIVE_GAIN = 1e-7  # a step must improve the objective by this fraction to count
CACHE_MAX_ELEMENTS = 2048 * 2048  # keep per-member cost blocks up to 16 MB each
SMALL_PROBLEM_UNITS = 1024
AUTO_RESTARTS = 8  # descents tried by default on small models (at most AUTO_RESTART_UNITS units in all)
AUTO_RESTART_UNITS = 1024


def auto_restarts(spec: PermutationSpec) -> int:
    """Restarts used when none are asked for: several for small models, where a descent is cheap and
    its local optimum depends a lot on the group order (narrow ResNets), one for larger ones."""
    return AUTO_RESTARTS if sum(g.size for g in spec.groups) <= AUTO_RESTART_UNITS else 1


@dataclass(frozen=True)
class MatchingResult:
    """Permutations that align B to A, and how the objective evolved.

    ``objective`` holds Σ⟨W_A, π(W_B)⟩ over all member tensors after each sweep;
    ``initial_objective`` is its value before any permutation.
    """

    perms: dict[str, torch.Tensor]
    objective: tuple[float, ...]
    initial_objective: float
    sweeps: int
    converged: bool
    seed: int
    seconds: float = 0.0
    order: tuple[tuple[str, ...], ...] = field(default=())
    restarts: int = 1
    best_seed: int | None = None  # the seed whose descent was kept, when there were restarts
    method: str = "weight"  # "weight" or "activation"
    correlation: dict[str, float] = field(default_factory=dict)  # activation matching: matched correlation per group
    by_weights: tuple[str, ...] = ()  # activation matching: groups no activation showed, matched by weights

    def moved_fraction(self) -> dict[str, float]:
        """Share of each group's units that left their place."""
        return {name: moved_fraction(p) for name, p in self.perms.items()}


def moved_fraction(perm: torch.Tensor) -> float:
    perm = torch.as_tensor(perm)
    if perm.numel() == 0:
        return 0.0
    return float((perm != torch.arange(perm.numel())).float().mean())


def _float_state(spec: PermutationSpec, state: Mapping[str, torch.Tensor], which: str, device: torch.device) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for tensor in spec.members_by_tensor():
        if tensor not in state:
            raise IncompatibleCheckpointsError(
                f"model {which} has no tensor {tensor}, which the architecture needs",
                hint="check that both checkpoints were saved from the architecture given",
            )
        out[tensor] = state[tensor].detach().to(device=device, dtype=torch.float32)
    return out


def _check_shapes(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> None:
    for name, t in a.items():
        if tuple(b[name].shape) != tuple(t.shape):
            raise IncompatibleCheckpointsError(
                f"{name} has shape {tuple(t.shape)} in A but {tuple(b[name].shape)} in B",
                hint="weight matching needs two models of the same architecture and width",
            )


def _unit_rows(t: torch.Tensor, member: Member) -> torch.Tensor:
    """The member's range as a matrix with one row per unit."""
    part = t.narrow(member.axis, member.offset, member.length).movedim(member.axis, 0)
    return part.reshape(member.n, -1)


class _Problem:
    """The two models, the current permutations and the cost matrix of one group."""

    def __init__(self, spec: PermutationSpec, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], perms: dict[str, torch.Tensor]) -> None:
        self.spec = spec
        self.a = a
        self.b = b
        self.perms = perms
        self.by_tensor = spec.members_by_tensor()
        self.version = dict.fromkeys(perms, 0)
        self._cache: dict[tuple[str, Member], tuple[tuple[tuple[str, int], ...], torch.Tensor]] = {}

    def set_perm(self, group: str, perm: torch.Tensor) -> None:
        self.perms[group] = perm
        self.version[group] += 1

    def contribution(self, group: PermutationGroup, member: Member) -> torch.Tensor:
        """One member's share of the cost, reused while the other groups on its tensor stay put."""
        key = (group.name, member)
        others = tuple((g, self.version[g]) for g, m in self.by_tensor[member.tensor] if (g, m) != key)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == others:
            return hit[1]
        rows_a = _unit_rows(self.a[member.tensor], member)
        rows_b = _unit_rows(self.permuted_b(member.tensor, skip=key), member)
        value = rows_a @ rows_b.T
        if member.n * member.n <= CACHE_MAX_ELEMENTS:
            self._cache[key] = (others, value)
        return value

    def permuted_b(self, tensor: str, skip: tuple[str, Member] | None = None) -> torch.Tensor:
        t = self.b[tensor]
        for group, member in self.by_tensor[tensor]:
            if skip is not None and (group, member) == skip:
                continue
            t = permute_member(t, member, self.perms[group])
        return t

    def cost(self, group: PermutationGroup) -> torch.Tensor:
        """C[i, j] = similarity of A's unit i and B's unit j over every weight member, others held fixed.

        Statistics (BatchNorm running mean/var) are permuted but do not vote: they
        describe activations, not weights, and their large positive variances would
        swamp the similarity.
        """
        parts = [self.contribution(group, m) for m in group.members if m.tensor not in self.spec.buffers and m.repeat == 1]
        if not parts:
            device = next(iter(self.a.values())).device
            return torch.zeros(group.size, group.size, device=device)
        cost = parts[0].clone()
        for part in parts[1:]:
            cost += part
        return cost

    def kv_cost(self, group: PermutationGroup) -> torch.Tensor | None:
        """The key/value members' share (grouped-query attention), over key/value units; ``None`` without any."""
        parts = [self.contribution(group, m) for m in group.members if m.tensor not in self.spec.buffers and m.repeat > 1]
        if not parts:
            return None
        cost = parts[0].clone()
        for part in parts[1:]:
            cost += part
        return cost

    def inputs_version(self, unit: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
        """Versions of every other group sharing a tensor with ``unit``: equal means the same cost."""
        names = set(unit)
        deps = {
            g
            for name in unit
            for m in self.spec.group(name).members
            for g, _ in self.by_tensor[m.tensor]
            if g not in names
        }
        return tuple(sorted((g, self.version[g]) for g in deps)) + tuple((n, self.version[n]) for n in unit)

    def objective(self) -> float:
        weights = [t for t in self.by_tensor if t not in self.spec.buffers]
        return float(sum(float((self.a[t] * self.permuted_b(t)).sum()) for t in weights))


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float]:
    rows, cols = linear_sum_assignment(cost, maximize=True)
    perm = np.empty(cost.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, float(cost[rows, cols].sum())


def _value(cost: np.ndarray, perm: np.ndarray) -> float:
    return float(cost[np.arange(len(perm)), perm].sum())


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.double().cpu().numpy()


def _unit_value(group: PermutationGroup, cost: np.ndarray, kv_cost: np.ndarray | None, perm: np.ndarray) -> float:
    value = _value(cost, perm)
    if kv_cost is not None:
        from merge_studio.core.rebasin.heads import kv_permutation

        value += _value(kv_cost, kv_permutation(torch.as_tensor(perm), group.n_kv_heads, group.n_heads // group.n_kv_heads).numpy())
    return value


def solve_unit(groups: list[PermutationGroup], costs: list[np.ndarray], kv_costs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Best permutation(s) of one coordinate-descent unit: a plain group, or groups sharing heads."""
    if len(groups) == 1 and groups[0].n_heads <= 1:
        return [_assign(costs[0])[0]]
    from merge_studio.core.rebasin.heads import solve_heads

    first = groups[0]
    return solve_heads(costs, kv_costs, first.n_heads, first.n_kv_heads, [g.fixed_within for g in groups])


@contextmanager
def _small_problem_threads(device: torch.device, largest: int) -> Iterator[None]:
    """One CPU thread for small cost matrices: below ~1k units, thread start-up and contention on
    a shared machine cost more than they save (measured: 0.65 s vs 2.7 s CPU for the 512-wide MLP).
    Set only while a sweep computes, never across a ``yield``."""
    if device.type != "cpu" or largest > SMALL_PROBLEM_UNITS or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _units(spec: PermutationSpec) -> list[tuple[str, ...]]:
    """Coordinate-descent steps: a group, or two attention groups that share their heads."""
    units: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for g in spec.groups:
        if g.name in seen:
            continue
        unit = (g.name, g.head_partner) if g.head_partner and g.n_heads > 1 else (g.name,)
        seen.update(unit)
        units.append(unit)
    return units


def _step(problem: _Problem, unit: tuple[str, ...], solved: dict[tuple[str, ...], tuple]) -> bool:
    """Re-solve one unit; keep the new permutation only if it strictly improves.

    A unit whose neighbours did not change since it was last solved has the same
    cost matrix, so solving it again cannot improve: it is skipped.
    """
    key = problem.inputs_version(unit)
    if solved.get(unit) == key:
        return False
    groups = [problem.spec.group(n) for n in unit]
    costs = [problem.cost(g).double().cpu().numpy() for g in groups]
    kv_costs = [_numpy(problem.kv_cost(g)) for g in groups]
    new = solve_unit(groups, costs, kv_costs)
    old = [problem.perms[g.name].cpu().numpy() for g in groups]
    old_val = sum(_unit_value(g, c, kv, p) for g, c, kv, p in zip(groups, costs, kv_costs, old, strict=True))
    new_val = sum(_unit_value(g, c, kv, p) for g, c, kv, p in zip(groups, costs, kv_costs, new, strict=True))
    if new_val <= old_val + RELATIVE_GAIN * max(1.0, abs(old_val)):
        solved[unit] = key
        return False
    device = problem.perms[groups[0].name].device
    for g, p in zip(groups, new, strict=True):
        problem.set_perm(g.name, torch.as_tensor(p, device=device))
    solved[unit] = problem.inputs_version(unit)
    return True


def iter_weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    *,
    max_sweeps: int = 100,
    seed: int = 0,
    restarts: int = 1,
    device: str | torch.device = "auto",
    cancel: CancelToken | None = None,
    init: Mapping[str, torch.Tensor] | None = None,
) -> Generator[Progress, None, MatchingResult]:
    """Find permutations of B's hidden units that make B's weights closest to A's.

    ``restarts > 1`` repeats the descent with seeds ``seed, seed + 1, ...`` (different
    group orders reach different local optima) and keeps the highest objective;
    ``restarts=0`` chooses with :func:`auto_restarts`.
    """
    if restarts <= 0:
        restarts = auto_restarts(spec)
    start = time.perf_counter()
    dev = resolve_device(device)
    check_state(spec, state_a, "model A")
    check_state(spec, state_b, "model B")
    a = _float_state(spec, state_a, "A", dev)
    b = _float_state(spec, state_b, "B", dev)
    _check_shapes(a, b)
    best: MatchingResult | None = None
    history: list[int] = []  # sweeps each finished start took: the estimate for the next ones
    for attempt in range(max(1, restarts)):
        perms = {g.name: torch.arange(g.size, device=dev) for g in spec.groups}
        for name, p in (init or {}).items():
            if name in perms:
                perms[name] = torch.as_tensor(p, device=dev).long()
        result = yield from _descend(_Problem(spec, a, b, perms), seed + attempt, max_sweeps, dev, cancel, attempt, restarts,
                                     history)
        history.append(result.sweeps)
        if best is None or result.objective[-1:] > best.objective[-1:]:
            best = result
    assert best is not None
    return replace(best, seed=seed, best_seed=best.seed, seconds=time.perf_counter() - start, restarts=max(1, restarts))


def _sweep_estimate(history: list[int], sweeps: int, improving: bool, max_sweeps: int, starts_left: int) -> tuple[int, int]:
    """(sweeps done, sweeps expected) over all starts, for a progress bar and its time estimate."""
    typical = round(sum(history) / len(history)) if history else 0
    this_start = min(max_sweeps, max(sweeps + (1 if improving else 0), typical))
    done = sum(history) + sweeps
    return done, sum(history) + this_start + (starts_left - 1) * max(typical, this_start)


def _descend(
    problem: _Problem, seed: int, max_sweeps: int, dev: torch.device, cancel: CancelToken | None, attempt: int, restarts: int,
    history: list[int] | None = None,
) -> Generator[Progress, None, MatchingResult]:
    """Algorithm 1 from one starting point: sweeps in random order until no group improves."""
    units = _units(problem.spec)
    rng = np.random.default_rng(seed)
    largest = max((g.size for g in problem.spec.groups), default=0)
    with _small_problem_threads(dev, largest):
        initial = problem.objective()
    objective: list[float] = []
    orders: list[tuple[str, ...]] = []
    converged = not units
    sweeps = 0
    solved: dict[tuple[str, ...], tuple] = {}
    while sweeps < max_sweeps and units:
        check_cancel(cancel)
        order = [units[i] for i in rng.permutation(len(units))]
        orders.append(tuple(u[0] for u in order))
        improved = False
        with _small_problem_threads(dev, largest):
            for unit in order:
                check_cancel(cancel)
                improved |= _step(problem, unit, solved)
            objective.append(problem.objective())
        sweeps += 1
        note = f" (start {attempt + 1} of {restarts})" if restarts > 1 else ""
        # the number of sweeps is not known in advance (it stops when nothing improves): estimated
        # from the starts already finished, and at least one more while this one still improves
        done, total = _sweep_estimate(history or [], sweeps, improved, max_sweeps, restarts - attempt)
        yield Progress("weight matching", done, total, current=f"sweep {sweeps}{note}", unit="sweeps (estimated)",
                       message=f"sweep {sweeps}{note}: objective {objective[-1]:.6g}")
        if not improved:
            converged = True
            break
    return MatchingResult(
        perms={k: v.cpu() for k, v in problem.perms.items()},
        objective=tuple(objective),
        initial_objective=initial,
        sweeps=sweeps,
        converged=converged,
        seed=seed,
        order=tuple(orders),
    )
