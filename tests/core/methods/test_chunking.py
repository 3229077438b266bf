"""Element-wise methods give the same tensor whether the engine passes it whole or in chunks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core import chunk_tasks, engine
from merge_studio.core.progress import Progress
from merge_studio.core.methods import TensorContext, get_method, list_methods
from merge_studio.core.recipe import Recipe

SHAPE = (12, 10)
NAME = "blocks.1.mlp.weight"

# method -> (params, per-model params); deterministic element-wise methods only
CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "simple_average": ({}, [{}, {}, {}]),
    "weighted_average": ({}, [{"weight": 0.2}, {"weight": 0.5}, {"weight": 1.1}]),
    "lerp": ({"t": 0.3}, [{}, {}]),
    "task_arithmetic": ({"lambda": 0.7, "normalize": True}, [{"weight": 0.5}, {"weight": 0.9}, {"weight": 0.3}]),
    "ties": ({"lambda": 1.2}, [{"weight": 1.0, "density": 0.3}, {"weight": 0.7, "density": 0.6}, {"weight": 0.4}]),
    "model_recombination": ({"seed": 3}, [{}, {}, {}]),
}


def _inputs(n: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(SHAPE, generator=g)
    return [base + torch.randn(SHAPE, generator=g) for _ in range(n)], base


def _progress(job) -> list[Progress]:
    """Drain a job generator, keeping its progress events."""
    return [item for item in job if isinstance(item, Progress)]


def _as_list(result: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    return result if isinstance(result, list) else [result]


OURS = {
    "simple_average", "weighted_average", "lerp", "slerp", "task_arithmetic", "ties",
    "dare_linear", "dare_ties", "model_stock", "model_recombination",
}


def test_every_deterministic_elementwise_method_is_covered():
    elementwise = {s.name for s in list_methods() if s.elementwise and s.name in OURS}
    assert elementwise - set(CASES) == {"dare_linear", "dare_ties"}  # random: each chunk draws its own


@pytest.mark.parametrize("method", sorted(CASES))
def test_three_chunks_equal_the_whole_tensor(method):
    spec = get_method(method)
    raw_params, raw_mps = CASES[method]
    params = spec.params.model_validate(raw_params)
    mps = [spec.model_params.model_validate(mp) for mp in raw_mps]
    tensors, base = _inputs(len(mps))
    base_arg = base if spec.base != "unused" else None
    whole = _as_list(spec.merge(tensors, base_arg, params, mps, TensorContext(name=NAME, shape=SHAPE)))

    stats: tuple[Any, ...] = ()
    if spec.statistics is not None:
        ctx = TensorContext(name=NAME, shape=SHAPE)
        stats = tuple(spec.statistics(t, base_arg, params, mp, ctx) for t, mp in zip(tensors, mps, strict=True))
    numel = base.numel()
    bounds = [(0, 37), (37, 80), (80, numel)]
    pieces: list[list[torch.Tensor]] = []
    for start, stop in bounds:
        ctx = TensorContext(name=NAME, shape=SHAPE, chunk=(start, stop), stats=stats)
        flat = [t.reshape(-1)[start:stop] for t in tensors]
        flat_base = base.reshape(-1)[start:stop] if base_arg is not None else None
        pieces.append(_as_list(spec.merge(flat, flat_base, params, mps, ctx)))
    for k, out in enumerate(whole):
        joined = torch.cat([p[k] for p in pieces]).reshape(SHAPE)
        torch.testing.assert_close(joined, out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("held_bytes", [0, 1 << 20], ids=["chunks re-read", "chunks cut from held tensors"])
def test_ties_streamed_by_the_engine_equals_ties_on_whole_tensors(make_checkpoint, tmp_path, monkeypatch, held_bytes):
    g = torch.Generator().manual_seed(1)
    base_state = {"w": torch.randn(300, 7, generator=g), "b": torch.randn(7, generator=g)}
    states = [{k: v + torch.randn(v.shape, generator=g) for k, v in base_state.items()} for _ in range(3)]
    base_path = make_checkpoint("base.safetensors", base_state)
    paths = [make_checkpoint(f"ft{i}.safetensors", s) for i, s in enumerate(states)]
    densities = [0.2, 0.5, 0.8]
    recipe = Recipe(
        method="ties",
        base=str(base_path),
        models=[{"path": str(p), "params": {"density": d}} for p, d in zip(paths, densities, strict=True)],
        params={"lambda": 0.9},
        output=str(tmp_path / "ties.safetensors"),
    )
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 500)  # "w" (2100 elements) goes through in 5 chunks
    monkeypatch.setattr(chunk_tasks, "HELD_BYTES", held_bytes)
    steps = [p.current for p in _progress(engine.iter_merge(recipe)) if p.stage == "merge"]
    assert steps.count("w") == 5 and steps.count("b") == 1
    merged = load_file(tmp_path / "ties.safetensors")

    spec = get_method("ties")
    params = spec.params.model_validate({"lambda": 0.9})
    mps = [spec.model_params(density=d) for d in densities]
    for key in ("w", "b"):
        whole = spec.merge([s[key] for s in states], base_state[key], params, mps, TensorContext(name=key, shape=()))
        torch.testing.assert_close(merged[key], whole, rtol=1e-6, atol=1e-6)
