"""The same config gives the same tensors as mergekit (to 1e-6) for the deterministic methods.

The references below are written from mergekit's published definitions, in
numpy, independently of our torch code: linear, slerp, task arithmetic, TIES
(generalized task arithmetic with magnitude sparsification and "sum"/"count"
sign consensus) and model stock.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.core.methods.conftest import call_method

TOL = {"rtol": 1e-6, "atol": 1e-6}


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- numpy references -------------------------------------------------------------------------
def ref_linear(xs: list[np.ndarray], weights: list[float], normalize: bool) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).reshape(-1, *([1] * xs[0].ndim))
    out = (np.stack(xs).astype(np.float64) * w).sum(axis=0)
    return out / w.sum() if normalize else out


def ref_slerp(t: float, v0: np.ndarray, v1: np.ndarray, threshold: float = 0.9995, eps: float = 1e-8) -> np.ndarray:
    a, b = v0.astype(np.float64), v1.astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    dot = float(np.sum(ua * ub))
    if abs(dot) > threshold:
        return (1 - t) * a + t * b
    theta = np.arccos(dot)
    return np.sin(theta * (1 - t)) / np.sin(theta) * a + np.sin(theta * t) / np.sin(theta) * b


def ref_magnitude_mask(delta: np.ndarray, density: float) -> np.ndarray:
    if density >= 1:
        return np.ones_like(delta)
    k = int(density * delta.size)
    order = np.argsort(-np.abs(delta).reshape(-1), kind="stable")[:k]
    mask = np.zeros(delta.size)
    mask[order] = 1
    return mask.reshape(delta.shape)


def ref_gta(
    xs: list[np.ndarray],
    base: np.ndarray,
    weights: list[float],
    densities: list[float] | None,
    consensus: str | None,
    normalize: bool,
    lam: float,
) -> np.ndarray:
    base64 = base.astype(np.float64)
    deltas = [x.astype(np.float64) - base64 for x in xs]
    if densities is not None:
        deltas = [d * ref_magnitude_mask(d, p) for d, p in zip(deltas, densities, strict=True)]
    w = np.asarray(weights, dtype=np.float64).reshape(-1, *([1] * base.ndim))
    weighted = np.stack(deltas) * w
    if consensus is not None:
        sign = np.sign(weighted)
        votes = weighted.sum(axis=0) if consensus == "sum" else sign.sum(axis=0)
        majority = np.where(votes >= 0, 1.0, -1.0)
        mask = (sign == majority).astype(np.float64)
        mixed = (weighted * mask).sum(axis=0)
        divisor = (w * mask).sum(axis=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(axis=0)
        divisor = w.sum(axis=0) * np.ones_like(mixed)
        divisor[np.abs(divisor) < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    return base64 + lam * mixed


def ref_model_stock(xs: list[np.ndarray], base: np.ndarray, filter_wise: bool) -> np.ndarray:
    w0 = base.astype(np.float64)
    ws = [x.astype(np.float64) for x in xs]
    if filter_wise:
        if w0.ndim == 1:
            w0, ws = w0[None, :], [w[None, :] for w in ws]
    else:
        w0, ws = w0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            prod = np.linalg.norm(offsets[i], axis=-1) * np.linalg.norm(offsets[j], axis=-1)
            cosines.append(np.clip((offsets[i] * offsets[j]).sum(axis=-1) / np.maximum(prod, 1e-6), -1, 1))
    cos = np.mean(cosines, axis=0)[..., None]
    n = len(ws)
    t = n * cos / (1 + (n - 1) * cos)
    return (t * (sum(ws) / n) + (1 - t) * w0).reshape(base.shape)


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.numpy().astype(np.float64), expected, **TOL)


# --- agreement --------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [True, False])
def test_weighted_average_matches_mergekit_linear(normalize):
    xs = [_rand((6, 5), s) for s in range(3)]
    weights = [0.5, 0.3, 1.2]
    out = call_method(
        "weighted_average",
        [torch.from_numpy(x) for x in xs],
        params={"normalize": normalize},
        model_params=[{"weight": w} for w in weights],
    )
    _close(out, ref_linear(xs, weights, normalize))


def test_mergekit_linear_alias_finds_weighted_average():
    out = call_method("linear", [torch.ones(3), torch.zeros(3)], model_params=[{"weight": 3.0}, {"weight": 1.0}])
    torch.testing.assert_close(out, torch.full((3,), 0.75))


@pytest.mark.parametrize("t", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_slerp_matches_mergekit_slerp(t):
    a, b = _rand((8, 7), 1), _rand((8, 7), 2)
    out = call_method("slerp", [torch.from_numpy(a), torch.from_numpy(b)], params={"t": t})
    _close(out, ref_slerp(t, a, b))


def test_slerp_matches_mergekit_for_nearly_parallel_tensors():
    a = _rand((50,), 3)
    b = (1.7 * a + 1e-3 * _rand((50,), 4)).astype(np.float32)
    out = call_method("slerp", [torch.from_numpy(a), torch.from_numpy(b)], params={"t": 0.3})
    _close(out, ref_slerp(0.3, a, b))


@pytest.mark.parametrize(("normalize", "lam"), [(False, 1.0), (True, 1.0), (False, 0.6), (True, 1.5)])
def test_task_arithmetic_matches_mergekit(normalize, lam):
    base = _rand((5, 4), 0)
    xs = [base + 0.1 * _rand((5, 4), s) for s in range(1, 4)]
    weights = [0.7, 0.2, -0.4]
    out = call_method(
        "task_arithmetic",
        [torch.from_numpy(x) for x in xs],
        torch.from_numpy(base),
        params={"normalize": normalize, "lambda": lam},
        model_params=[{"weight": w} for w in weights],
    )
    _close(out, ref_gta(xs, base, weights, None, None, normalize, lam))


@pytest.mark.parametrize("consensus", ["sum", "count"])
@pytest.mark.parametrize(("normalize", "lam"), [(True, 1.0), (False, 0.8)])
def test_ties_matches_mergekit_with_distinct_magnitudes(consensus, normalize, lam):
    base = _rand((10, 9), 0)
    xs = [base + _rand((10, 9), s) for s in range(1, 5)]  # random normals: magnitudes all distinct
    weights = [1.0, 0.6, 0.3, 0.9]
    densities = [0.5, 0.3, 1.0, 0.71]
    out = call_method(
        "ties",
        [torch.from_numpy(x) for x in xs],
        torch.from_numpy(base),
        params={"normalize": normalize, "lambda": lam, "consensus": consensus},
        model_params=[{"weight": w, "density": d} for w, d in zip(weights, densities, strict=True)],
    )
    _close(out, ref_gta(xs, base, weights, densities, consensus, normalize, lam))


def test_dare_at_full_density_is_task_arithmetic_as_in_mergekit():
    base = _rand((6, 6), 0)
    xs = [base + _rand((6, 6), s) for s in (1, 2)]
    kw = {"model_params": [{"weight": 0.4, "density": 1.0}, {"weight": 0.9, "density": 1.0}]}
    linear = call_method("dare_linear", [torch.from_numpy(x) for x in xs], torch.from_numpy(base), **kw)
    ties_like = call_method("dare_ties", [torch.from_numpy(x) for x in xs], torch.from_numpy(base), **kw)
    _close(linear, ref_gta(xs, base, [0.4, 0.9], None, None, False, 1.0))
    _close(ties_like, ref_gta(xs, base, [0.4, 0.9], None, "sum", False, 1.0))


@pytest.mark.parametrize("n_models", [2, 3, 5])
@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock_matches_mergekit(n_models, filter_wise):
    base = _rand((7, 6), 0)
    shared = 0.5 * _rand((7, 6), 99)  # a common direction, so cos θ is clearly positive
    xs = [(base + shared + 0.3 * _rand((7, 6), s)).astype(np.float32) for s in range(1, n_models + 1)]
    out = call_method(
        "model_stock",
        [torch.from_numpy(x) for x in xs],
        torch.from_numpy(base),
        params={"filter_wise": filter_wise},
    )
    _close(out, ref_model_stock(xs, base, filter_wise))


def test_model_stock_matches_mergekit_on_a_bias_vector_per_row():
    base = _rand((11,), 0)
    xs = [(base + _rand((11,), s)).astype(np.float32) for s in (1, 2, 3)]
    out = call_method(
        "model_stock", [torch.from_numpy(x) for x in xs], torch.from_numpy(base), params={"filter_wise": True}
    )
    _close(out, ref_model_stock(xs, base, True))


# --- whole merges from mergekit configs -------------------------------------------------------
def _float_state(path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file as load_numpy

    return {k: v for k, v in load_numpy(str(path)).items() if v.dtype == np.float32}


def _merge_config(config: dict, tmp_path) -> dict[str, np.ndarray]:
    from merge_studio.core.engine import run_merge
    from merge_studio.core.mergekit_config import recipe_from_mergekit

    recipe = recipe_from_mergekit(config).model_copy(update={"output": str(tmp_path / "out.safetensors")})
    run_merge(recipe)
    return _float_state(tmp_path / "out.safetensors")


def test_a_mergekit_ties_config_merges_to_mergekits_tensors(make_checkpoint, tmp_path):
    base = make_checkpoint("base.safetensors", seed=10)
    tuned = [make_checkpoint(f"ft{i}.safetensors", seed=i) for i in range(3)]
    weights, densities = [1.0, 0.5, 0.7], [0.5, 0.7, 0.3]
    config = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(p), "parameters": {"weight": w, "density": d}}
            for p, w, d in zip(tuned, weights, densities, strict=True)
        ],
        "parameters": {"normalize": True, "lambda": 0.9, "int8_mask": True},
    }
    merged = _merge_config(config, tmp_path)
    base_sd, tuned_sd = _float_state(base), [_float_state(p) for p in tuned]
    for key, out in merged.items():
        expected = ref_gta([sd[key] for sd in tuned_sd], base_sd[key], weights, densities, "sum", True, 0.9)
        np.testing.assert_allclose(out, expected, **TOL, err_msg=key)


def test_a_mergekit_slerp_config_interpolates_from_the_base(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", seed=1)
    b = make_checkpoint("b.safetensors", seed=2)
    config = {
        "merge_method": "slerp",
        "base_model": str(a),
        "models": [{"model": str(a)}, {"model": str(b)}],
        "parameters": {"t": 0.3},
    }
    merged = _merge_config(config, tmp_path)
    sd_a, sd_b = _float_state(a), _float_state(b)
    for key, out in merged.items():
        np.testing.assert_allclose(out, ref_slerp(0.3, sd_a[key], sd_b[key]), **TOL, err_msg=key)


def test_a_mergekit_model_stock_config_merges_to_mergekits_tensors(make_checkpoint, tmp_path):
    base = make_checkpoint("base.safetensors", seed=10)
    tuned = [make_checkpoint(f"ft{i}.safetensors", seed=i) for i in range(3)]
    config = {
        "merge_method": "model_stock",
        "base_model": str(base),
        "models": [{"model": str(p)} for p in [base, *tuned]],
        "parameters": {"filter_wise": False},
    }
    merged = _merge_config(config, tmp_path)
    base_sd, tuned_sd = _float_state(base), [_float_state(p) for p in tuned]
    for key, out in merged.items():
        expected = ref_model_stock([sd[key] for sd in tuned_sd], base_sd[key], False)
        np.testing.assert_allclose(out, expected, **TOL, err_msg=key)
