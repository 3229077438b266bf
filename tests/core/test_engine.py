"""The streaming engine: results, roles, mismatches, atomic output, cancel, provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from merge_studio.core import chunk_tasks, engine
from merge_studio.core.engine import iter_merge, run_merge
from merge_studio.core.progress import CancelToken, Progress
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled, IncompatibleCheckpointsError, MethodError, OutputError
from tests.core.conftest import tiny_state


def _recipe(paths, out, **kw) -> Recipe:
    return Recipe(models=[{"path": str(p)} for p in paths], output=str(out), **kw)


def test_simple_average_equals_the_mean_and_copies_integer_buffers(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(3)]
    out = tmp_path / "avg.safetensors"
    result = run_merge(_recipe(paths, out, method="simple_average"))
    merged = load_file(out)
    states = [tiny_state(i) for i in range(3)]
    for key in ("layers.0.weight", "head.weight", "layers.1.running_mean"):
        torch.testing.assert_close(merged[key], sum(s[key] for s in states) / 3)
    assert merged["layers.1.num_batches_tracked"].item() == 0  # from the first model, not averaged
    assert "layers.1.num_batches_tracked" in result.copied
    assert result.outputs == (out,)


def test_large_tensors_are_streamed_in_chunks_with_the_same_result(make_checkpoint, tmp_path, monkeypatch):
    big = [{"w": torch.randn(1000, 37, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    paths = [make_checkpoint(f"b{i}.safetensors", big[i]) for i in range(2)]
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 1000)
    events = list(_drain(iter_merge(_recipe(paths, tmp_path / "o.safetensors", method="lerp", params={"t": 0.25}))))
    merge_steps = [e for e in events if isinstance(e, Progress) and e.stage == "merge"]
    assert len(merge_steps) == 37  # one per chunk
    assert [e.done for e in merge_steps] == sorted(e.done for e in merge_steps)
    torch.testing.assert_close(load_file(tmp_path / "o.safetensors")["w"], torch.lerp(big[0]["w"], big[1]["w"], 0.25))


def _drain(gen):
    try:
        while True:
            yield next(gen)
    except StopIteration:
        return


def test_output_dtype_is_the_inputs_unless_asked(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"h{i}.safetensors", seed=i, dtype=torch.bfloat16) for i in range(2)]
    run_merge(_recipe(paths, tmp_path / "a.safetensors", method="simple_average"))
    run_merge(_recipe(paths, tmp_path / "b.safetensors", method="simple_average", dtype="float16"))
    assert load_file(tmp_path / "a.safetensors")["layers.0.weight"].dtype == torch.bfloat16
    b = load_file(tmp_path / "b.safetensors")
    assert b["layers.0.weight"].dtype == torch.float16
    assert b["layers.1.num_batches_tracked"].dtype == torch.int64


def test_missing_keys_stop_the_merge_and_name_the_tensor(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", seed=0)
    state = tiny_state(1)
    del state["head.weight"]
    b = make_checkpoint("b.safetensors", state)
    with pytest.raises(IncompatibleCheckpointsError, match=r"head\.weight: missing from b\.safetensors"):
        run_merge(_recipe([a, b], tmp_path / "o.safetensors", method="simple_average"))
    assert not (tmp_path / "o.safetensors").exists()


def test_shape_mismatch_is_named_with_both_shapes(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", seed=0)
    state = tiny_state(1)
    state["layers.2.weight"] = torch.randn(5, 16)
    b = make_checkpoint("b.safetensors", state)
    with pytest.raises(IncompatibleCheckpointsError, match=r"layers\.2\.weight: shapes differ \(a\.safetensors \(4, 16\), b\.safetensors \(5, 16\)\)"):
        run_merge(_recipe([a, b], tmp_path / "o.safetensors", method="simple_average"))


def test_copy_base_policy_merges_shared_keys_and_copies_the_rest(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", seed=0)
    state = tiny_state(1)
    del state["head.weight"]
    state["extra.bias"] = torch.ones(3)
    b = make_checkpoint("b.safetensors", state)
    result = run_merge(_recipe([a, b], tmp_path / "o.safetensors", method="simple_average", on_mismatch="copy_base"))
    merged = load_file(tmp_path / "o.safetensors")
    torch.testing.assert_close(merged["head.weight"], tiny_state(0)["head.weight"])
    torch.testing.assert_close(merged["extra.bias"], torch.ones(3))
    assert {"head.weight", "extra.bias"} <= set(result.copied)
    skipped = run_merge(_recipe([a, b], tmp_path / "s.safetensors", method="simple_average", on_mismatch="skip"))
    assert set(skipped.skipped) == {"head.weight", "extra.bias"}
    assert "head.weight" not in load_file(tmp_path / "s.safetensors")


def test_cancel_leaves_no_output_and_no_temporary_file(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    token = CancelToken()
    job = iter_merge(_recipe(paths, tmp_path / "out" / "merged.safetensors", method="simple_average"), token)
    for event in job:
        if isinstance(event, Progress) and event.stage == "merge":
            token.cancel()
            break
    with pytest.raises(Cancelled):
        next(job)
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_a_failing_method_leaves_no_output(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    recipe = _recipe(paths, tmp_path / "o.safetensors", method="weighted_average")
    recipe.models[0].params["weight"] = 1.0
    recipe.models[1].params["weight"] = -1.0  # sums to zero: cannot normalise
    with pytest.raises(MethodError, match="sum to zero"):
        run_merge(recipe)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.safetensors", "m1.safetensors"]


def test_output_that_would_overwrite_an_input_is_refused(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    before = paths[0].read_bytes()
    with pytest.raises(OutputError, match="would overwrite the input m0.safetensors"):
        run_merge(_recipe(paths, paths[0], method="simple_average"))
    assert paths[0].read_bytes() == before


def test_sharded_output_has_an_index_and_the_same_tensors(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    run_merge(_recipe(paths, tmp_path / "single.safetensors", method="simple_average"))
    run_merge(_recipe(paths, tmp_path / "sharded", method="simple_average", shard_size=600))
    folder = tmp_path / "sharded"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((folder / s).exists() for s in shards)
    single = load_file(tmp_path / "single.safetensors")
    joined: dict[str, torch.Tensor] = {}
    for s in shards:
        joined.update(load_file(folder / s))
    assert joined.keys() == single.keys()
    for k in single:
        torch.testing.assert_close(joined[k], single[k])
    assert "merge_studio.recipe" in index["metadata"]


def test_merged_file_records_recipe_sources_and_hashes(make_checkpoint, tmp_path):
    import hashlib

    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    out = tmp_path / "o.safetensors"
    run_merge(_recipe(paths, out, method="simple_average"))
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    sources = json.loads(meta["merge_studio.sources"])
    assert [s["name"] for s in sources] == ["m0.safetensors", "m1.safetensors"]
    assert sources[0]["sha256"] == hashlib.sha256(paths[0].read_bytes()).hexdigest()
    assert sources[0]["size"] == paths[0].stat().st_size
    rerun = Recipe.from_mapping(__import__("yaml").safe_load(meta["merge_studio.recipe"]))
    assert rerun.method == "simple_average"
    stats = json.loads(meta["merge_studio.layer_stats"])
    assert stats["layers.0"]["relative_change"] > 0


def test_base_model_is_moved_first_for_methods_without_a_base_role(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", seed=0)
    b = make_checkpoint("b.safetensors", seed=1)
    out = tmp_path / "o.safetensors"
    run_merge(_recipe([b, a], out, method="lerp", base=str(a), params={"t": 0.0}))
    torch.testing.assert_close(load_file(out)["layers.0.weight"], tiny_state(0)["layers.0.weight"])


def test_per_layer_gradient_values_reach_each_tensor(make_checkpoint, tmp_path):
    a = make_checkpoint("a.safetensors", {f"blocks.{i}.w": torch.zeros(3) for i in range(3)})
    b = make_checkpoint("b.safetensors", {f"blocks.{i}.w": torch.ones(3) for i in range(3)})
    out = tmp_path / "o.safetensors"
    run_merge(_recipe([a, b], out, method="lerp", params={"t": [0.0, 1.0]}))
    merged = load_file(out)
    assert [merged[f"blocks.{i}.w"][0].item() for i in range(3)] == pytest.approx([0.0, 0.5, 1.0])


def test_wrong_number_of_models_is_a_clear_error(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(3)]
    with pytest.raises(MethodError, match="exactly 2"):
        run_merge(_recipe(paths, tmp_path / "o.safetensors", method="lerp"))


def test_inputs_are_never_modified(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    before = [p.read_bytes() for p in paths]
    run_merge(_recipe(paths, tmp_path / "o.safetensors", method="simple_average"))
    assert [p.read_bytes() for p in paths] == before
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["m0.safetensors", "m1.safetensors", "o.safetensors"]


def test_whole_model_methods_write_their_report_into_the_output(tmp_path):
    from merge_studio.core.arch import build_module
    from merge_studio.core.writer import write_state_dict

    arch = "zoo:mlp?hidden=32,32"
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        state = build_module(arch).state_dict()
        paths.append(write_state_dict(tmp_path / f"m{seed}.safetensors", state, {"merge_studio.arch": arch}))
    out = tmp_path / "many.safetensors"
    result = run_merge(Recipe(method="merge_many", models=[{"path": str(p)} for p in paths], output=str(out)))
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["merge_studio.report"]) == json.loads(json.dumps(result.report))
    assert meta["merge_studio.arch"] == arch
    assert set(load_file(out)) == set(load_file(paths[0]))


@pytest.mark.parametrize("direct", [True, False], ids=["direct I/O", "page cache"])
def test_a_full_disk_is_a_clear_error_and_leaves_nothing(make_checkpoint, tmp_path, monkeypatch, direct):
    import errno
    import os

    from merge_studio.core import direct_io

    big = [{"w": torch.randn(1000, 37, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    paths = [make_checkpoint(f"b{i}.safetensors", big[i]) for i in range(2)]
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 1000)  # many writes, made on the background thread
    monkeypatch.setattr(direct_io, "USE_DIRECT", direct)
    monkeypatch.setattr(direct_io, "STAGING_BYTES", 8192)  # several direct writes before the disk fills
    real_pwrite, room = os.pwrite, [20_000]

    def pwrite(fd, data, offset):  # a disk with room for 20 kB of tensor data
        size = memoryview(data).nbytes
        if size > room[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        room[0] -= size
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    out = tmp_path / "out" / "merged.safetensors"
    with pytest.raises(OutputError, match=r"cannot write .*merged\.safetensors: the disk is full") as caught:
        run_merge(_recipe(paths, out, method="simple_average"))
    assert "disk space" in (caught.value.hint or "")
    assert list((tmp_path / "out").iterdir()) == []  # no output, no temporary file
