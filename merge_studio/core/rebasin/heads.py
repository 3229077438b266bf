"""Permutations that keep attention heads whole, and the best such permutation for given scores.

A head-structured group of ``H`` query heads of ``D`` units, with ``G`` key/value
heads (``G = H`` without grouped-query attention, ``r = H / G`` query heads per
key/value head), is permuted by: an order ``σ`` of the key/value heads (their
query heads go along), an order ``ρ_g`` of the query heads inside each key/value
head, and an order ``τ_g`` of the units inside a head, one per key/value head
(identity when rotary embeddings fix it). Query unit ``(g, i, d)`` of the aligned
model is original unit ``(σ(g), ρ_g(i), τ_g(d))``; key/value unit ``(g, d)`` is
``(σ(g), τ_g(d))``. Two groups that share heads (queries/keys and values/output)
share ``σ`` and ``ρ`` and have their own ``τ``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def compose(sigma: np.ndarray, rhos: Sequence[np.ndarray], taus: Sequence[np.ndarray], head_dim: int) -> np.ndarray:
    """The unit permutation of a query-side group from its head, query-head and within-head orders."""
    kv_heads, rep = len(sigma), len(rhos[0]) if len(rhos) else 1
    out = np.empty(kv_heads * rep * head_dim, dtype=np.int64)
    for g in range(kv_heads):
        for i in range(rep):
            start = (g * rep + i) * head_dim
            out[start : start + head_dim] = (sigma[g] * rep + rhos[g][i]) * head_dim + taus[g]
    return out


def kv_permutation(perm: torch.Tensor, kv_heads: int, repeat: int) -> torch.Tensor:
    """The key/value unit permutation a query-side permutation induces (see the module docstring)."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    head_dim = perm.numel() // (kv_heads * repeat)
    first = perm.view(kv_heads, repeat, head_dim)[:, 0, :]  # (g, d) -> unit of query head (g, 0, d)
    return ((first // (repeat * head_dim)) * head_dim + first % head_dim).reshape(-1)


def random_head_perms(n_heads: int, kv_heads: int, head_dims: Sequence[int], fixed_within: Sequence[bool],
                      generator: torch.Generator) -> list[torch.Tensor]:
    """Random structured permutations for groups sharing heads (tests and demonstrations)."""
    rep = n_heads // kv_heads
    sigma = torch.randperm(kv_heads, generator=generator).numpy()
    rhos = [torch.randperm(rep, generator=generator).numpy() for _ in range(kv_heads)]
    out = []
    for d, fixed in zip(head_dims, fixed_within, strict=True):
        taus = [np.arange(d) if fixed else torch.randperm(d, generator=generator).numpy() for _ in range(kv_heads)]
        out.append(torch.as_tensor(compose(sigma, rhos, taus, d)))
    return out


def _assign(cost: np.ndarray) -> tuple[np.ndarray, float]:
    rows, cols = linear_sum_assignment(cost, maximize=True)
    perm = np.empty(cost.shape[0], dtype=np.int64)
    perm[rows] = cols
    return perm, float(cost[rows, cols].sum())


class _Scores:
    """Block views of one group's scores: query side ``(G, r, D) × (G, r, D)`` and key/value side ``(G, D) × (G, D)``."""

    def __init__(self, q_cost: np.ndarray, kv_cost: np.ndarray | None, kv_heads: int, rep: int, fixed: bool) -> None:
        self.d = q_cost.shape[0] // (kv_heads * rep)
        self.q = q_cost.reshape(kv_heads, rep, self.d, kv_heads, rep, self.d)
        self.kv = None if kv_cost is None else kv_cost.reshape(kv_heads, self.d, kv_heads, self.d)
        self.fixed = fixed

    def within(self, g: int, h: int, rho: np.ndarray) -> tuple[np.ndarray, float]:
        """Best order inside heads for key/value head ``h`` of B placed at ``g``, query heads matched by ``rho``."""
        block = self.q[g, np.arange(len(rho)), :, h, rho, :].sum(axis=0)
        if self.kv is not None:
            block = block + self.kv[g, :, h, :]
        if self.fixed:
            return np.arange(self.d), float(np.trace(block))
        return _assign(block)

    def query_heads(self, g: int, h: int, tau: np.ndarray) -> np.ndarray:
        """Scores of A's query head i (of key/value head g) against B's query head j (of h), within order ``tau``."""
        return self.q[g, :, np.arange(self.d), h, :, tau].sum(axis=0)


def solve_heads(
    q_costs: Sequence[np.ndarray],
    kv_costs: Sequence[np.ndarray | None],
    n_heads: int,
    kv_heads: int,
    fixed_within: Sequence[bool],
    rounds: int = 3,
) -> list[np.ndarray]:
    """Best structured permutations (maximising the summed scores) of groups sharing one head order.

    For every pair of key/value heads the query-head order and within-head orders are
    improved in turn (exact when each key/value head has one query head), and the
    key/value heads are then assigned by the pairs' scores.
    """
    rep = n_heads // kv_heads
    scores = [_Scores(q, kv, kv_heads, rep, f) for q, kv, f in zip(q_costs, kv_costs, fixed_within, strict=True)]
    value = np.zeros((kv_heads, kv_heads))
    best: dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
    for g in range(kv_heads):
        for h in range(kv_heads):
            rho = np.arange(rep)
            if rep > 1:  # start from the query heads' best match with free within-head orders
                start = np.zeros((rep, rep))
                for i in range(rep):
                    for j in range(rep):
                        start[i, j] = sum(_assign(s.q[g, i, :, h, j, :])[1] if not s.fixed else float(np.trace(s.q[g, i, :, h, j, :]))
                                          for s in scores)
                rho = _assign(start)[0]
            for _ in range(rounds if rep > 1 else 1):
                solved = [s.within(g, h, rho) for s in scores]
                taus = [t for t, _ in solved]
                if rep == 1:
                    break
                new_rho = _assign(sum(s.query_heads(g, h, t) for s, t in zip(scores, taus, strict=True)))[0]
                if np.array_equal(new_rho, rho):
                    break
                rho = new_rho
            solved = [s.within(g, h, rho) for s in scores]
            value[g, h] = sum(v for _, v in solved)
            best[(g, h)] = (rho, [t for t, _ in solved])
    sigma, _ = _assign(value)
    return [
        compose(sigma, [best[(g, sigma[g])][0] for g in range(kv_heads)], [best[(g, sigma[g])][1][k] for g in range(kv_heads)], s.d)
        for k, s in enumerate(scores)
    ]
