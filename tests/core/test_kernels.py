"""Compiled kernels give the bytes the torch code gives, and step aside when they cannot."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core import chunk_tasks, kernels
from merge_studio.core.engine import run_merge
from merge_studio.core.finite import NonFiniteValuesError
from merge_studio.core.methods import sparsify
from merge_studio.core.methods.registry import get_method
from merge_studio.core.methods.sparsify import delta_magnitude_threshold
from merge_studio.core.methods.spec import TensorContext
from merge_studio.core.recipe import Recipe

pytest.importorskip("numba")

TIES = get_method("ties")


@pytest.fixture(autouse=True)
def compile_before_use(monkeypatch):
    """Merges here wait for a kernel instead of using torch while it loads, so they use it."""
    monkeypatch.setattr(kernels, "WARM_IN_BACKGROUND", False)


def chunk_inputs(n: int, n_models: int, dtype: torch.dtype, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Fine-tunes of a base, with the awkward entries a real checkpoint has: exact zeros,
    −0.0, entries equal to the base and deltas that tie at one magnitude."""
    gen = torch.Generator().manual_seed(seed)
    base = (torch.randn(n, generator=gen) * 0.02).to(dtype)
    base[::97] = 0.0
    base[1::101] = -0.0
    models = []
    for i in range(n_models):
        model = (base.float() + torch.randn(n, generator=gen) * 0.004 * (i + 1)).to(dtype)
        model[i::13] = base[i::13]  # unchanged entries: δ = 0
        model[5 + i::29] = (base[5 + i::29].float() + 0.0078125).to(dtype)  # many equal |δ|
        models.append(model)
    return models, base


def thresholds(models: list[torch.Tensor], base: torch.Tensor, densities: list[float]) -> list[float]:
    return [delta_magnitude_threshold(m, base, d) for m, d in zip(models, densities)]


def torch_chunk(models, base, params, model_params, stats, out_dtype, wants_metrics=True):
    """What the engine's torch path writes for one chunk, and its metrics."""
    ctx = TensorContext(name="w", shape=(base.numel(),), chunk=(0, base.numel()), stats=tuple(stats),
                        wants_metrics=wants_metrics)
    merged = TIES.merge([m.float() for m in models], base.float(), params, model_params, ctx)
    ref = base.float()
    metrics = dict(ctx.metrics)
    metrics["diff_sq"] = float(torch.dist(merged, ref)) ** 2
    metrics["ref_sq"] = float(torch.dot(ref, ref))
    return merged.to(out_dtype), metrics


CASES = list(itertools.product(
    [torch.bfloat16, torch.float32],  # stored
    [1, 3],  # models
    [(1.0, 1.0, 1.0), (0.7, -0.4, 1.3), (0.0, 1.0, 2.0)],  # weights
    [(0.3, 0.3, 0.3), (1.0, 0.5, 0.05)],  # densities (1.0: no trim)
    [True, False],  # normalize
    ["sum", "count"],
))


@pytest.mark.parametrize(("dtype", "n_models", "weights", "densities", "normalize", "consensus"), CASES)
def test_the_fused_ties_chunk_is_bit_identical_to_the_torch_path(dtype, n_models, weights, densities, normalize, consensus):
    models, base = chunk_inputs(5_003, n_models, dtype, seed=n_models)  # not a whole number of blocks
    weights, densities = list(weights[:n_models]), list(densities[:n_models])
    params = TIES.params(lambda_=0.9 if normalize else 1.0, normalize=normalize, consensus=consensus)
    model_params = [TIES.model_params(weight=w, density=d) for w, d in zip(weights, densities)]
    stats = thresholds(models, base, densities)
    for out_dtype in {dtype, torch.bfloat16} if n_models == 1 else (dtype,):  # one cross case; each variant compiles
        expected, expected_metrics = torch_chunk(models, base, params, model_params, stats, out_dtype)
        found = kernels.ties_chunk(models, base, stats, weights, lambda_=params.lambda_, normalize=normalize,
                                   count_consensus=consensus == "count", out_dtype=out_dtype, want_metrics=True)
        assert found is not None
        merged, metrics = found
        assert merged.dtype == out_dtype
        assert torch.equal(merged.view(torch.int16) if out_dtype == torch.bfloat16 else merged.view(torch.int32),
                           expected.view(torch.int16) if out_dtype == torch.bfloat16 else expected.view(torch.int32))
        assert metrics.keys() == expected_metrics.keys()
        for key, value in metrics.items():
            assert value == pytest.approx(expected_metrics[key], rel=1e-4, abs=1e-9), key


TASK_ARITHMETIC = get_method("task_arithmetic")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("weights", [(1.0,), (0.8, 0.7), (1.0, -0.45, 0.3), (0.5, -0.5)])
@pytest.mark.parametrize(("lambda_", "normalize"), [(1.0, False), (0.6, True)])
def test_the_fused_task_arithmetic_chunk_is_bit_identical_to_the_torch_path(dtype, weights, lambda_, normalize):
    models, base = chunk_inputs(4_099, len(weights), dtype, seed=len(weights))
    params = TASK_ARITHMETIC.params(lambda_=lambda_, normalize=normalize)
    model_params = [TASK_ARITHMETIC.model_params(weight=w) for w in weights]
    ctx = TensorContext(name="w", shape=(base.numel(),), chunk=(0, base.numel()))
    merged = TASK_ARITHMETIC.merge([m.float() for m in models], base.float(), params, model_params, ctx)
    for out_dtype in (dtype,):  # float32 shows every rounding; bfloat16 adds the rounding to 16 bits
        expected = merged.to(out_dtype)
        found = kernels.task_sum_chunk(models, base, list(weights), lambda_=lambda_, normalize=normalize,
                                       out_dtype=out_dtype, want_metrics=True)
        assert found is not None
        out, metrics = found
        view = torch.int16 if out_dtype == torch.bfloat16 else torch.int32
        assert torch.equal(out.view(view), expected.view(view))
        assert metrics["diff_sq"] == pytest.approx(float(torch.dist(merged, base.float())) ** 2, rel=1e-4)


DARE_TIES = get_method("dare_ties")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("densities", "rescale", "normalize", "consensus"), [
    ((0.5, 0.5), True, False, "sum"), ((0.3, 1.0, 0.8), False, True, "count"), ((1.0,), True, True, "sum"),
])
def test_the_fused_dare_ties_chunk_draws_and_writes_what_the_torch_path_does(dtype, densities, rescale, normalize, consensus):
    from merge_studio.core.methods.task_arithmetic import dare_ties_fused

    models, base = chunk_inputs(5_001, len(densities), dtype, seed=len(densities) + 20)
    params = DARE_TIES.params(lambda_=0.8, normalize=normalize, rescale=rescale, consensus=consensus)
    model_params = [DARE_TIES.model_params(weight=0.9 - 0.3 * i, density=d) for i, d in enumerate(densities)]
    for out_dtype in (dtype,):
        torch_ctx = TensorContext(name="w", shape=(5_001,), chunk=(0, 5_001), seed=7)
        merged = DARE_TIES.merge([m.float() for m in models], base.float(), params, model_params, torch_ctx)
        ctx = TensorContext(name="w", shape=(5_001,), chunk=(0, 5_001), seed=7)
        found = dare_ties_fused(models, base, params, model_params, ctx, out_dtype)
        assert found is not None
        view = torch.int16 if out_dtype == torch.bfloat16 else torch.int32
        assert torch.equal(found[0].view(view), merged.to(out_dtype).view(view))
        for key in ("task_mass_total", "task_mass_kept"):
            assert ctx.metrics[key] == pytest.approx(torch_ctx.metrics[key], rel=1e-4), key


SIMPLE, WEIGHTED = get_method("simple_average"), get_method("weighted_average")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n_models", [1, 2, 3])
@pytest.mark.parametrize(("weights", "normalize"), [(None, True), ((0.7, 1.3, -0.2), True), ((0.7, 1.3, 0.25), False)])
def test_the_fused_averages_are_bit_identical_to_the_torch_path(dtype, n_models, weights, normalize):
    models, _ = chunk_inputs(4_097, n_models, dtype, seed=n_models + 10)
    ctx = TensorContext(name="w", shape=(4_097,), chunk=(0, 4_097))
    floats = [m.float() for m in models]
    if weights is None:
        merged = SIMPLE.merge(floats, None, SIMPLE.params(), [], ctx)
        used, divisor = [1.0] * n_models, float(n_models)
    else:
        used = list(weights[:n_models])
        params = WEIGHTED.params(normalize=normalize)
        merged = WEIGHTED.merge(floats, None, params, [WEIGHTED.model_params(weight=w) for w in used], ctx)
        divisor = sum(used) if normalize else None
    for out_dtype in (dtype,):
        found = kernels.weighted_sum_chunk(models, used, divisor, out_dtype=out_dtype, want_metrics=True)
        assert found is not None
        out, metrics = found
        view = torch.int16 if out_dtype == torch.bfloat16 else torch.int32
        assert torch.equal(out.view(view), merged.to(out_dtype).view(view))
        assert metrics["ref_sq"] == pytest.approx(float(torch.dot(floats[0], floats[0])), rel=1e-4)


def test_the_kernel_declines_what_it_cannot_do_exactly():
    models, base = chunk_inputs(3_000, 2, torch.bfloat16, seed=1)
    run = dict(lambda_=1.0, normalize=True, count_consensus=False, want_metrics=False)
    stats = thresholds(models, base, [0.5, 0.5])
    assert kernels.ties_chunk(models, base, stats, [1.0, 1.0], out_dtype=torch.float16, **run) is None
    assert kernels.ties_chunk([m.half() for m in models], base.half(), stats, [1.0, 1.0], out_dtype=torch.bfloat16, **run) is None
    mixed = [models[0], models[1].float()]
    assert kernels.ties_chunk(mixed, base, stats, [1.0, 1.0], out_dtype=torch.bfloat16, **run) is None
    broken = models[0].clone()
    broken[1234] = float("nan")
    assert kernels.ties_chunk([broken, models[1]], base, stats, [1.0, 1.0], out_dtype=torch.bfloat16, **run) is None
    big = torch.full((3_000,), 3.0e38)
    beyond = big + 0.398e38  # finite in float32, beyond bfloat16's largest value
    assert kernels.ties_chunk([beyond], big, [0.0], [1.0], out_dtype=torch.bfloat16, **run) is None
    assert kernels.ties_chunk([beyond], big, [0.0], [1.0], out_dtype=torch.float32, **run) is not None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("density", [0.01, 0.5, 0.97])
def test_the_compiled_threshold_is_the_number_the_numpy_passes_find(dtype, density, monkeypatch):
    n = 1_300_001
    models, base = chunk_inputs(n, 1, dtype, seed=4)
    with_kernel = delta_magnitude_threshold(models[0], base, density)
    monkeypatch.setenv("MERGE_STUDIO_KERNELS", "0")
    assert not kernels.available()
    assert delta_magnitude_threshold(models[0], base, density) == with_kernel
    assert with_kernel == sparsify.magnitude_threshold(models[0].float() - base.float(), density)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_compiled_sample_holds_the_numbers_of_torchs_strided_copy(dtype):
    models, base = chunk_inputs(100_003, 1, dtype, seed=6)
    for step in (1, 7, 100_003):
        expected = torch.sub(models[0][::step].float(), base[::step].float()).abs_()
        found = kernels.sample_magnitudes(models[0], base, step)
        assert found is not None and torch.equal(torch.from_numpy(found), expected), step


def test_a_gather_that_outgrows_its_room_says_so_instead_of_writing_past_it():
    models, base = chunk_inputs(50_000, 1, torch.bfloat16, seed=2)
    assert kernels.count_and_gather(models[0], base, 0.0, float("inf"), capacity=10) is None
    above, inside = kernels.count_and_gather(models[0], base, 0.0, float("inf"), capacity=50_000)
    assert above == 0 and inside.size == 50_000


def big_states(n_models: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n_models):
        g = torch.Generator().manual_seed(i)
        out.append({
            "embed.weight": (torch.randn(300, 70, generator=g) * 0.02).to(torch.bfloat16),
            "proj.weight": torch.randn(90, 90, generator=g) * 0.02,
            "norm.weight": torch.ones(70),
        })
    return out


def ties_recipe(paths, out) -> Recipe:
    return Recipe(method="ties", base=str(paths[0]), output=str(out),
                  params={"lambda": 1.1},
                  models=[{"path": str(p), "params": {"density": 0.4, "weight": 0.6 + 0.3 * i}} for i, p in enumerate(paths[1:])])


@pytest.mark.parametrize("chunk", [4096, 1 << 20])  # many chunks; every tensor whole (one chunk)
def test_a_ties_merge_writes_the_same_file_with_and_without_the_kernels(make_checkpoint, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(sparsify, "BRACKET_MIN", 1024)  # thresholds by the compiled count too
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(big_states(3))]
    fused = run_merge(ties_recipe(paths, tmp_path / "fused.safetensors"), threads=2)
    monkeypatch.setenv("MERGE_STUDIO_KERNELS", "0")
    plain = run_merge(ties_recipe(paths, tmp_path / "plain.safetensors"), threads=2)
    a, b = load_file(fused.outputs[0]), load_file(plain.outputs[0])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for layer, numbers in fused.layer_stats.items():
        for key, value in numbers.items():
            assert value == pytest.approx(plain.layer_stats[layer][key], rel=1e-3, abs=1e-6), (layer, key)


def test_a_task_arithmetic_merge_writes_the_same_file_with_and_without_the_kernels(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 4096)
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(big_states(3))]

    def recipe(out):
        return Recipe(method="task_arithmetic", base=str(paths[0]), output=str(out), params={"lambda": 0.8},
                      models=[{"path": str(p), "params": {"weight": 0.3 + 0.4 * i}} for i, p in enumerate(paths[1:])])

    fused = run_merge(recipe(tmp_path / "fused.safetensors"), threads=2)
    monkeypatch.setenv("MERGE_STUDIO_KERNELS", "0")
    plain = run_merge(recipe(tmp_path / "plain.safetensors"), threads=2)
    a, b = load_file(fused.outputs[0]), load_file(plain.outputs[0])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("method", "params", "model_params"), [
    ("dare_ties", {"lambda": 0.9}, {"weight": 0.7, "density": 0.4}),
    ("simple_average", {}, {}), ("weighted_average", {}, {"weight": 0.6}), ("weighted_average", {"normalize": False}, {"weight": 0.4}),
])
def test_averages_and_dare_ties_write_the_same_file_with_and_without_the_kernels(method, params, model_params, make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 4096)
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(big_states(3))]

    def recipe(out):
        base = {"base": str(paths[0])} if method == "dare_ties" else {}
        inputs = paths[1:] if base else paths
        return Recipe(method=method, output=str(out), params=params, seed=11, **base,
                      models=[{"path": str(p), "params": model_params} for p in inputs])

    fused = run_merge(recipe(tmp_path / "fused.safetensors"), threads=2)
    monkeypatch.setenv("MERGE_STUDIO_KERNELS", "0")
    plain = run_merge(recipe(tmp_path / "plain.safetensors"), threads=2)
    a, b = load_file(fused.outputs[0]), load_file(plain.outputs[0])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_weights_that_sum_to_zero_still_stop_the_merge_by_name(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 4096)
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(big_states(2))]
    recipe = Recipe(method="weighted_average", output=str(tmp_path / "out.safetensors"),
                    models=[{"path": str(paths[0]), "params": {"weight": 1.0}}, {"path": str(paths[1]), "params": {"weight": -1.0}}])
    with pytest.raises(Exception, match="sum to zero"):
        run_merge(recipe, threads=2)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_nan_met_by_the_fused_path_is_still_named(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 4096)
    states = big_states(3)
    states[2]["embed.weight"][250, 3] = float("nan")
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(states)]
    with pytest.raises(NonFiniteValuesError, match=r"embed\.weight.*m2"):
        run_merge(ties_recipe(paths, tmp_path / "out.safetensors"), threads=2)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_kernel_still_loading_leaves_the_chunk_to_torch_and_is_ready_soon_after(monkeypatch):
    monkeypatch.setattr(kernels, "WARM_IN_BACKGROUND", True)
    monkeypatch.setattr(kernels, "_ready", {})
    monkeypatch.setattr(kernels, "_warming", set())
    models, base = chunk_inputs(3_000, 2, torch.bfloat16, seed=3)
    run = dict(lambda_=1.0, normalize=True, out_dtype=torch.bfloat16, want_metrics=False, wait=False)
    assert kernels.task_sum_chunk(models, base, [0.5, 0.5], **run) is None  # not ready: torch does this chunk
    for thread in [t for t in threading.enumerate() if t.name == "kernel-warm"]:
        thread.join(timeout=120)
    found = kernels.task_sum_chunk(models, base, [0.5, 0.5], **run)
    assert found is not None
    expected = TASK_ARITHMETIC.merge([m.float() for m in models], base.float(), TASK_ARITHMETIC.params(normalize=True),
                                     [TASK_ARITHMETIC.model_params(weight=0.5)] * 2,
                                     TensorContext(name="w", shape=(3_000,))).to(torch.bfloat16)
    assert torch.equal(found[0].view(torch.int16), expected.view(torch.int16))


def test_a_background_compile_happens_in_a_child_process_that_fills_the_disk_cache(monkeypatch, tmp_path):
    # LLVM holds the GIL through a compile: done on a thread it froze the window for 150 ms
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # the child's cache; this process keeps its own
    monkeypatch.setenv("MERGE_STUDIO_NATIVE_KERNELS", "0")  # numba's path (kept machine code: test_native_kernels)
    monkeypatch.setattr(kernels, "_in_disk_cache", lambda name, args: False)
    values, base = chunk_inputs(64, 1, torch.bfloat16, seed=5)

    def warm(kernel):
        return kernels._run_count(kernel, values[0], base, 0.0, 1.0, 4)

    assert kernels._compile_in_child("magnitude.count_and_gather", warm)
    cached = {p.suffix for p in tmp_path.rglob("magnitude.count_and_gather-*")}
    assert cached == {".nbi", ".nbc"}  # the child left machine code for this process to load

    children: list[str] = []
    monkeypatch.setattr(kernels, "_compile_in_child", lambda name, _warm: children.append(name) or True)
    monkeypatch.setattr(kernels, "_ready", {})
    kernels._warm_quietly("magnitude.count_and_gather", ("probe",), warm)
    assert children == ["magnitude.count_and_gather"]  # the thread asks a child first, then loads
    assert ("magnitude.count_and_gather", ("probe",)) in kernels._ready


def test_a_kernel_already_in_the_disk_cache_starts_no_child(monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_NATIVE_KERNELS", "0")  # else the child also keeps the machine code once
    values, base = chunk_inputs(64, 1, torch.bfloat16, seed=6)

    def warm(kernel):
        return kernels._run_count(kernel, values[0], base, 0.0, 1.0, 4)

    kernels._warm("magnitude.count_and_gather", ("probe",), warm)  # compiled (or loaded) and cached here
    started: list[object] = []
    monkeypatch.setattr(kernels.subprocess, "run", lambda *a, **k: started.append(a))
    assert kernels._compile_in_child("magnitude.count_and_gather", warm)
    assert started == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the preload is for Linux's loader")
def test_llvm_is_loaded_off_the_gil_before_numba_asks_for_it():
    # llvmlite's own ctypes.CDLL held the GIL while 180 MB were read and initialised: a 150 ms freeze
    script = (
        "import sys\n"
        "from merge_studio.core import kernels\n"
        "kernels._preload_llvm()\n"
        "print('libllvmlite' in open('/proc/self/maps').read(), 'llvmlite' in sys.modules)\n"
        "from numba import njit\n"
        "print(njit(lambda x: x + 1)(1))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split() == ["True", "False", "2"]
