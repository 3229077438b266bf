"""The methods added from mergekit's list give mergekit's tensors (written here in numpy, from its definitions).

Breadcrumbs, SCE, RAM/RAM+, NearSwap, Arcee Fusion, NuSLERP, Multi-SLERP and the
Karcher mean are deterministic: each is checked against an independent numpy
reference on small random tensors, and a few on hand-checkable values. DELLA is
random: it is checked for reproducibility and for the properties of its draws.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.core.methods.conftest import call_method, make_ctx

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _rand(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.copy())


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.numpy().astype(np.float64), expected, **TOL)


def _tuned(shape=(8, 12), n=3):
    base = _rand(shape, 0)
    return base, [base + _rand(shape, s, 0.1) for s in range(1, n + 1)]


# --- Breadcrumbs ----------------------------------------------------------------------------
def ref_band(delta: np.ndarray, density: float, gamma: float) -> np.ndarray:
    if density >= 1:
        return delta.astype(np.float64)
    n = delta.size
    keep, top = int(density * n), int(gamma * n)
    first = max(0, n - keep - top)
    order = np.argsort(np.abs(delta).reshape(-1), kind="stable")
    mask = np.zeros(n)
    mask[order[first : first + keep]] = 1
    return delta.astype(np.float64) * mask.reshape(delta.shape)


@pytest.mark.parametrize(("density", "gamma"), [(0.5, 0.1), (0.3, 0.0), (0.9, 0.2), (1.0, 0.1)])
def test_breadcrumbs_keeps_mergekits_band_of_magnitudes(density, gamma):
    base, xs = _tuned()
    weights = [0.7, 0.3, 1.1]
    out = call_method("breadcrumbs", [_t(x) for x in xs], _t(base), params={"lambda": 0.9},
                      model_params=[{"weight": w, "density": density, "gamma": gamma} for w in weights])
    expected = base + 0.9 * sum(w * ref_band(x - base, density, gamma) for w, x in zip(weights, xs, strict=True))
    _close(out, expected)


def test_breadcrumbs_with_rescale_matches_the_task_vectors_l1_norm():
    base, (x,) = _tuned(n=1)
    out = call_method("breadcrumbs", [_t(x)], _t(base), params={"rescale": True},
                      model_params=[{"density": 0.5, "gamma": 0.05}])
    thinned = ref_band(x - base, 0.5, 0.05)
    thinned *= np.abs(x - base).sum() / np.abs(thinned).sum()
    _close(out, base + thinned)
    assert np.abs(out.numpy() - base).sum() == pytest.approx(np.abs(x - base).sum(), rel=1e-5)


def test_breadcrumbs_drops_the_largest_and_smallest_entries_of_a_known_vector():
    delta = torch.tensor([0.1, -5.0, 0.2, 0.3, -0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    out = call_method("breadcrumbs", [delta], torch.zeros(10), model_params=[{"density": 0.5, "gamma": 0.1}])
    # keep 5 of 10, drop the 1 largest (-5.0) and the 4 smallest
    torch.testing.assert_close(out, torch.tensor([0, 0, 0, 0, 0, 0.5, 0.6, 0.7, 0.8, 0.9]))


def test_breadcrumbs_ties_elects_signs_like_ties():
    base, xs = _tuned()
    mp = [{"weight": 1.0, "density": 0.6, "gamma": 0.05}] * 3
    out = call_method("breadcrumbs_ties", [_t(x) for x in xs], _t(base), params={"normalize": True}, model_params=mp)
    deltas = np.stack([ref_band(x - base, 0.6, 0.05) for x in xs])
    elected = np.where(deltas.sum(0) >= 0, 1.0, -1.0)
    agree = np.sign(deltas) == elected
    expected = base + (deltas * agree).sum(0) / np.maximum(agree.sum(0), 1)
    _close(out, expected)


def test_breadcrumbs_streamed_in_chunks_equals_the_whole_tensor():
    from merge_studio.core.methods import get_method

    spec = get_method("breadcrumbs_ties")
    base, xs = _tuned((16, 16))
    params = spec.params.model_validate({"rescale": True})
    mps = [spec.model_params.model_validate({"density": 0.4, "gamma": 0.05})] * 3
    whole = call_method("breadcrumbs_ties", [_t(x) for x in xs], _t(base), params={"rescale": True},
                        model_params=[{"density": 0.4, "gamma": 0.05}] * 3)
    stats = tuple(spec.statistics(_t(x), _t(base), params, mp, make_ctx()) for x, mp in zip(xs, mps, strict=True))
    flat = [_t(x).reshape(-1) for x in xs]
    parts = []
    for s in range(0, 256, 100):
        e = min(s + 100, 256)
        ctx = make_ctx(chunk=(s, e), stats=stats)
        parts.append(spec.merge([f[s:e] for f in flat], _t(base).reshape(-1)[s:e], params, mps, ctx))
    torch.testing.assert_close(torch.cat(parts).reshape(16, 16), whole)


# --- SCE --------------------------------------------------------------------------------------
def ref_sce(xs: list[np.ndarray], base: np.ndarray, topk: float) -> np.ndarray:
    tvs = np.stack([x.astype(np.float64) - base for x in xs])
    if topk < 1:
        var = tvs.var(axis=0)
        k = int(np.count_nonzero(var) * topk)
        mask = np.zeros(var.size)
        mask[np.argsort(-var.reshape(-1), kind="stable")[:k]] = 1
        tvs = tvs * mask.reshape(var.shape)
    weights = np.array([np.mean(tv**2) for tv in tvs])
    weights = weights / weights.sum()
    elected = np.where(tvs.sum(0) >= 0, 1.0, -1.0)
    erased = (np.sign(tvs) == elected) * weights.reshape(-1, 1, 1)
    return base + (tvs * erased).sum(0) / np.maximum(erased.sum(0), 1e-6)


@pytest.mark.parametrize("topk", [1.0, 0.5, 0.2])
def test_sce_matches_mergekit(topk):
    base, xs = _tuned()
    out = call_method("sce", [_t(x) for x in xs], _t(base), params={"select_topk": topk})
    _close(out, ref_sce(xs, base, topk))


# --- RAM ---------------------------------------------------------------------------------------
def _sparse_tuned(shape=(6, 10)):
    base = _rand(shape, 0)
    xs = []
    for s in (1, 2, 3):
        moved = np.random.default_rng(50 + s).random(shape) < 0.5
        xs.append((base + _rand(shape, s, 0.1) * moved).astype(np.float32))
    return base, xs


def ref_ram(xs, base, eps, r=None, alpha=None):
    tvs = np.stack([x.astype(np.float64) - base.astype(np.float64) for x in xs])
    changed = np.abs(np.stack([x - base for x in xs])) > eps
    tvs = tvs * changed
    count = changed.sum(0)
    unique, shared = count == 1, count > 1
    out = base.astype(np.float64).copy()
    for tv, ch in zip(tvs, changed, strict=True):
        boost = 1.0
        if r is not None:
            rho = (ch & shared).sum() / max((ch & unique).sum(), eps)
            boost = 1 + r * min(max(rho, 0), alpha)
        out += np.where(unique, tv * boost, tv / np.maximum(count, 1))
    return out


def test_ram_keeps_unique_changes_and_averages_shared_ones():
    base, xs = _sparse_tuned()
    _close(call_method("ram", [_t(x) for x in xs], _t(base)), ref_ram(xs, base, 1e-5))


def test_ram_on_known_values():
    base = torch.zeros(4)
    a = torch.tensor([1.0, 0.0, 2.0, 0.0])
    b = torch.tensor([0.0, 3.0, 4.0, 0.0])
    torch.testing.assert_close(call_method("ram", [a, b], base), torch.tensor([1.0, 3.0, 3.0, 0.0]))


@pytest.mark.parametrize(("r", "alpha"), [(0.1, 0.2), (0.05, 1.0), (1.0, 5.0)])
def test_ramplus_boosts_unique_changes_like_mergekit(r, alpha):
    base, xs = _sparse_tuned()
    out = call_method("ramplus_tl", [_t(x) for x in xs], _t(base), params={"r": r, "alpha": alpha})
    _close(out, ref_ram(xs, base, 1e-5, r, alpha))


# --- NearSwap and Arcee Fusion ---------------------------------------------------------------
def test_nearswap_takes_close_entries_and_barely_moves_far_ones():
    base = torch.tensor([0.0, 0.0, 0.0, 1.0])
    other = torch.tensor([0.001, 0.1, 0.0, 1.0 + 1e-7])
    out = call_method("nearswap", [other], base, params={"t": 0.01})
    expected = torch.tensor([0.001, 0.1 * 0.1, 0.0, 1.0 + 1e-7])  # w = min(1, t/d): 1, 0.1, 1, 1
    torch.testing.assert_close(out, expected)


def ref_arcee(x: np.ndarray, base: np.ndarray) -> np.ndarray:
    x64, b64 = x.astype(np.float64), base.astype(np.float64)

    def softmax(v):
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(x64) + 1e-8, softmax(b64) + 1e-8
    scores = np.abs(x64 - b64) * np.sum(p * np.log(p / q), axis=-1, keepdims=True)
    ordered = np.sort(scores.reshape(-1))
    q1, med, q3 = (ordered[int(f * (ordered.size - 1))] for f in (0.25, 0.5, 0.75))
    return np.where(scores >= med + 1.5 * (q3 - q1), x64, b64)


@pytest.mark.parametrize("shape", [(16, 20), (40,)])
def test_arcee_fusion_takes_only_outlier_importance_entries(shape):
    base = _rand(shape, 0)
    x = base + _rand(shape, 1, 0.5) * (np.random.default_rng(7).random(shape) < 0.3)
    out = call_method("arcee_fusion", [_t(x)], _t(base))
    _close(out, ref_arcee(x, base))
    assert 0 < (out.numpy() != base).mean() < 0.5


# --- NuSLERP, Multi-SLERP, Karcher -------------------------------------------------------------
def ref_slerp_rows(t, a, b, eps=1e-8):
    a, b = a.astype(np.float64), b.astype(np.float64)
    ua = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-7)
    ub = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-7)
    cos = np.clip((ua * ub).sum(-1, keepdims=True), -1, 1)
    colinear = (1 - cos**2) <= eps**2
    theta = np.arccos(np.where(colinear, 0, cos))
    with np.errstate(invalid="ignore", divide="ignore"):
        arc = (np.sin((1 - t) * theta) * a + np.sin(t * theta) * b) / np.sin(theta)
    return np.where(colinear, (1 - t) * a + t * b, arc)


@pytest.mark.parametrize("with_base", [False, True])
@pytest.mark.parametrize(("flatten", "columns"), [(True, False), (False, False), (False, True)])
def test_nuslerp_matches_mergekit(with_base, flatten, columns):
    base, (a, b) = _tuned((5, 7), n=2)
    out = call_method("nuslerp", [_t(a), _t(b)], _t(base) if with_base else None,
                      params={"nuslerp_flatten": flatten, "nuslerp_row_wise": columns},
                      model_params=[{"weight": 0.6}, {"weight": 0.4}])
    x, y = (a - base, b - base) if with_base else (a, b)
    if flatten:
        expected = ref_slerp_rows(0.4, x.reshape(-1), y.reshape(-1)).reshape(x.shape)
    elif columns:
        expected = ref_slerp_rows(0.4, x.T, y.T).T
    else:
        expected = ref_slerp_rows(0.4, x, y)
    _close(out, expected + (base if with_base else 0))


def test_nuslerp_with_weights_summing_to_zero_interpolates_half_way():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = call_method("nuslerp", [a, b], model_params=[{"weight": -0.5}, {"weight": 0.5}])
    torch.testing.assert_close(out, torch.tensor([0.5**0.5, 0.5**0.5]))


def ref_multislerp(xs, weights, base=None, eps=1e-8):
    pts = np.stack([x.reshape(-1).astype(np.float64) for x in xs])
    if base is not None:
        pts = pts - base.reshape(-1)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    norms = np.linalg.norm(pts, axis=-1, keepdims=True)
    units = pts / (norms + eps)
    mean = (units * w[:, None]).sum(0)
    mean /= np.linalg.norm(mean)
    tangents = units - (units @ mean)[:, None] * mean
    step = (tangents * w[:, None]).sum(0)
    sn = np.linalg.norm(step) + eps
    res = (mean * np.cos(sn) + step * np.sin(sn) / sn) * (norms[:, 0] * w).sum()
    res = res.reshape(xs[0].shape)
    return res + base if base is not None else res


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_matches_mergekit(with_base):
    base, xs = _tuned((6, 5))
    weights = [0.2, 0.5, 0.3]
    out = call_method("multislerp", [_t(x) for x in xs], _t(base) if with_base else None,
                      model_params=[{"weight": w} for w in weights])
    _close(out, ref_multislerp(xs, weights, base if with_base else None))


def test_multislerp_of_two_orthogonal_unit_vectors_stays_on_the_circle():
    out = call_method("multislerp", [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])],
                      model_params=[{"weight": 1.0}, {"weight": 1.0}])
    torch.testing.assert_close(out, torch.tensor([0.5**0.5, 0.5**0.5]))


def ref_karcher(xs, max_iter=10, tol=1e-5):
    vs = [x.reshape(-1).astype(np.float64) for x in xs]
    norms = [np.linalg.norm(v) for v in vs]
    units = [v / n for v, n in zip(vs, norms, strict=True)]
    a = 1 / len(vs)
    mean = sum(a * u for u in units)
    mean /= np.linalg.norm(mean)
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for u in units:
            dot = np.clip(mean @ u, -1, 1)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            tangent += a * theta / np.sin(theta) * (u - dot * mean)
        tn = np.linalg.norm(tangent)
        if tn < tol:
            break
        mean = np.cos(tn) * mean + np.sin(tn) * tangent / tn
        mean /= np.linalg.norm(mean)
    return (sum(norms) * a * mean).reshape(xs[0].shape)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_karcher_matches_mergekit(n):
    xs = [_rand((6, 4), s) for s in range(n)]
    out = call_method("karcher", [_t(x) for x in xs], params={"max_iter": 50, "tol": 1e-7})
    np.testing.assert_allclose(out.numpy(), ref_karcher(xs, 50, 1e-7), rtol=1e-4, atol=1e-5)


def test_karcher_of_two_tensors_is_slerp_half_way():
    a, b = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])
    out = call_method("karcher", [a, b], params={"max_iter": 50, "tol": 1e-7})
    torch.testing.assert_close(out, torch.tensor([3 * 0.5**0.5, 3 * 0.5**0.5]), atol=1e-5, rtol=1e-5)


# --- DELLA -------------------------------------------------------------------------------------
def _della(method="della", seed=0, name="layers.0.w", **mp):
    base, xs = _tuned((64, 64))
    model_params = [{"density": 0.5, "epsilon": 0.2, **mp}] * 3
    ctx = make_ctx(name=name, shape=(64, 64), seed=seed)
    return base, xs, call_method(method, [_t(x) for x in xs], _t(base), model_params=model_params, ctx=ctx)


def test_della_is_reproducible_from_the_seed_and_changes_with_it():
    _, _, first = _della(seed=3)
    _, _, again = _della(seed=3)
    _, _, other = _della(seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_della_keeps_large_entries_more_often_than_small_ones():
    from merge_studio.core.methods.della import magprune_

    delta = torch.arange(1, 101, dtype=torch.float32).repeat(400, 1)  # each row ranks 1..100
    kept = magprune_(delta.clone(), 0.5, 0.4, torch.Generator().manual_seed(0)) != 0
    rate = kept.float().mean(0)
    assert rate[:10].mean() == pytest.approx(0.14, abs=0.03)  # density − ε + a little
    assert rate[-10:].mean() == pytest.approx(0.86, abs=0.03)
    assert kept.float().mean() == pytest.approx(0.5, abs=0.01)


def test_della_linear_rescale_keeps_the_task_vectors_total_magnitude():
    base, xs, out = _della("della_linear", weight=1.0)
    mixed = out.numpy() - base
    expected_l1 = sum(np.abs(x - base).sum() for x in xs)  # same-sign sum bound
    assert np.abs(mixed).sum() <= expected_l1 * 1.0001
    assert np.count_nonzero(mixed) > 0.6 * mixed.size


def test_della_refuses_a_spread_that_leaves_zero_one():
    from pydantic import ValidationError

    from merge_studio.core.methods import get_method

    with pytest.raises(ValidationError, match="density ± epsilon"):
        get_method("della").model_params.model_validate({"density": 0.66, "epsilon": 1.35 - 0.5})
