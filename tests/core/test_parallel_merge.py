"""Merging on all cores: the same bytes as one thread, bounded work in flight, clean stops."""

from __future__ import annotations

import threading

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core import chunk_tasks
from merge_studio.core.engine import iter_merge, run_merge
from merge_studio.core.finite import NonFiniteValuesError
from merge_studio.core.pool import OrderedPool, default_threads
from merge_studio.core.progress import CancelToken
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled


def states(n: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        out.append({
            "embed.weight": torch.randn(300, 40, generator=g),  # 12,000 elements: many chunks
            "layers.0.weight": torch.randn(64, 48, generator=g).to(torch.bfloat16),
            "layers.0.bias": torch.randn(64, generator=g),
            "head.weight": torch.randn(10, 64, generator=g),
            "steps": torch.tensor(i),
        })
    return out


RECIPES = {
    "simple_average": dict(method="simple_average"),
    "ties (held)": dict(method="ties", base=0, params={"lambda": 0.9}, model_params={"density": 0.4, "weight": 0.7}),
    "ties (re-read)": dict(method="ties", base=0, model_params={"density": 0.3, "weight": 1.0}, held=0),
    "dare_ties": dict(method="dare_ties", base=0, model_params={"density": 0.5, "weight": 1.0}, seed=7),
    "task_arithmetic": dict(method="task_arithmetic", base=0, model_params={"weight": 0.5}),
    "slerp": dict(method="slerp", n=2, params={"t": 0.3}),
    "model_recombination": dict(method="model_recombination", seed=3),
}


def build(paths, out, spec) -> Recipe:
    base = spec.get("base")
    models = [p for i, p in enumerate(paths) if i != base][: spec.get("n", 3)]
    return Recipe(
        method=spec["method"],
        models=[{"path": str(p), "params": dict(spec.get("model_params", {}))} for p in models],
        base=str(paths[base]) if base is not None else None,
        params=spec.get("params", {}),
        seed=spec.get("seed", 0),
        dtype="bfloat16" if spec["method"] == "task_arithmetic" else None,
        output=str(out),
    )


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_thread_count_writes_the_same_bytes(name, make_checkpoint, tmp_path, monkeypatch):
    spec = RECIPES[name]
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 1000)
    if "held" in spec:
        monkeypatch.setattr(chunk_tasks, "HELD_BYTES", spec["held"])
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(states(4))]
    written = {}
    for threads in (1, 3):
        out = tmp_path / f"out{threads}.safetensors"
        result = run_merge(build(paths, out, spec), threads=threads)
        written[threads] = [load_file(p) for p in result.outputs]
    assert len(written[1]) == len(written[3]) >= 1
    for one, many in zip(written[1], written[3]):
        assert one.keys() == many.keys() and len(one) == 5
        for key in one:
            assert torch.equal(one[key], many[key]), key


def test_an_error_in_a_worker_stops_the_merge_and_leaves_nothing(make_checkpoint, tmp_path):
    bad = states(2)
    bad[1]["embed.weight"][250, 3] = float("nan")  # late in a many-chunk tensor
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(bad)]
    out = tmp_path / "out" / "merged.safetensors"
    with pytest.raises(NonFiniteValuesError, match=r"embed\.weight .* in m1\.safetensors"):
        run_merge(Recipe(method="simple_average", models=[{"path": str(p)} for p in paths], output=str(out)), threads=3)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("merge_")]


def test_cancelling_mid_merge_stops_every_worker(make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 100)
    paths = [make_checkpoint(f"m{i}.safetensors", s) for i, s in enumerate(states(3))]
    token = CancelToken()
    job = iter_merge(Recipe(method="simple_average", models=[{"path": str(p)} for p in paths],
                            output=str(tmp_path / "o.safetensors")), token, threads=3)
    next(job)  # opened
    next(job)  # the first chunk is written
    token.cancel()
    with pytest.raises(Cancelled):
        for _ in job:
            pass
    assert not (tmp_path / "o.safetensors").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("merge_")]


def test_the_pool_keeps_at_most_its_window_of_tasks_in_flight():
    pulled = 0

    def tasks():
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield lambda i=i: i

    consumed, most_ahead = 0, 0
    with OrderedPool(threads=2, window=3) as pool:
        for value in pool.ordered(tasks()):
            assert value == consumed
            consumed += 1
            most_ahead = max(most_ahead, pulled - consumed)
    assert consumed == 50 and most_ahead <= 3


def test_results_come_back_in_order_even_when_later_tasks_finish_first():
    barrier = threading.Event()

    def slow():
        barrier.wait(5)
        return "first"

    def fast():
        barrier.set()
        return "second"

    with OrderedPool(threads=2) as pool:
        assert list(pool.ordered([slow, fast])) == ["first", "second"]


def test_threads_default_to_the_cores_and_follow_the_environment(monkeypatch):
    monkeypatch.setenv("MERGE_STUDIO_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.delenv("MERGE_STUDIO_THREADS")
    assert default_threads() >= 1


def test_workers_use_one_torch_thread_and_leave_the_callers_setting_alone():
    before = torch.get_num_threads()
    with OrderedPool(threads=2) as pool:
        inside = list(pool.ordered([torch.get_num_threads, torch.get_num_threads]))
    assert inside == [1, 1] and torch.get_num_threads() == before


def test_thousands_of_tiny_tensors_go_to_the_workers_in_a_few_batches_in_order(make_checkpoint, tmp_path):
    paths = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        paths.append(make_checkpoint(f"m{i}.safetensors", {f"t{k}": torch.randn(4, generator=g) for k in range(1200)}))
    recipe = Recipe(method="simple_average", models=[{"path": str(p)} for p in paths], output=str(tmp_path / "o.safetensors"))
    steps = [e for e in iter_merge(recipe, threads=2) if getattr(e, "stage", "") == "merge"]
    assert 1 < len(steps) <= 4  # 512 tensors a batch, not one hand-off per tensor
    merged, a, b = load_file(tmp_path / "o.safetensors"), load_file(paths[0]), load_file(paths[1])
    assert set(merged) == set(a)
    for name in a:
        assert torch.equal(merged[name], (a[name] + b[name]) / 2), name
