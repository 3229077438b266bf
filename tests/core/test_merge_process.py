"""Merges in a process of their own: the same output, progress, errors and cancel as in this one."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_studio.core import engine, merge_process
from merge_studio.core.engine import run_merge
from merge_studio.core.merge_process import MergeProcessError, iter_merge_in_process
from merge_studio.core.progress import CancelToken, Progress, drive
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled, MergeStudioError, MethodError, describe_failure


def _recipe(paths, out, method="simple_average", **kw) -> Recipe:
    return Recipe(method=method, models=[{"path": str(p)} for p in paths], output=str(out), **kw)


@pytest.fixture(scope="module")
def big_models(tmp_path_factory) -> list[Path]:
    """Three 64 MB checkpoints: a merge of them takes long enough to be stopped halfway."""
    folder = tmp_path_factory.mktemp("big")
    paths = []
    for i in range(3):
        path = folder / f"big{i}.safetensors"
        save_file({f"w{j}": torch.full((2048, 2048), float(i + j)) for j in range(4)}, str(path))
        paths.append(path)
    return paths


def _not_in_this_process(*_args, **_kwargs):
    raise AssertionError("the merge ran in the test's own process")


def test_a_merge_in_its_own_process_writes_what_the_engine_writes_here(make_checkpoint, tmp_path, monkeypatch):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(3)]
    expected = run_merge(_recipe(paths, tmp_path / "here.safetensors"))
    monkeypatch.setattr(engine, "iter_merge", _not_in_this_process)  # the child's engine is its own
    stages: list[str] = []
    result = drive(iter_merge_in_process(_recipe(paths, tmp_path / "there.safetensors")), lambda p: stages.append(p.stage))
    here, there = load_file(str(expected.output)), load_file(str(result.output))
    assert here.keys() == there.keys()
    for name in here:
        assert torch.equal(here[name], there[name]), name
    assert result.output == tmp_path / "there.safetensors"
    assert result.tensor_count == expected.tensor_count and result.layer_stats.keys() == expected.layer_stats.keys()
    assert stages[0] == "start" and ("merge" in stages or "finish" in stages)


def test_a_users_error_in_the_child_comes_back_with_its_class_message_and_hint(make_checkpoint, tmp_path):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    recipe = _recipe(paths, tmp_path / "o.safetensors", method="weighted_average")
    recipe.models[0].params["weight"] = 1.0
    recipe.models[1].params["weight"] = -1.0  # sums to zero: refused by the method, in the child
    with pytest.raises(MethodError, match="sum to zero"):
        drive(iter_merge_in_process(recipe))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m0.safetensors", "m1.safetensors"]


def test_a_missing_input_is_named_as_it_is_in_process(tmp_path):
    missing = [tmp_path / "nowhere.safetensors", tmp_path / "gone.safetensors"]
    with pytest.raises(MergeStudioError, match="nowhere.safetensors"):
        drive(iter_merge_in_process(_recipe(missing, tmp_path / "o.safetensors")))


def test_an_unexpected_failure_keeps_the_childs_type_and_traceback():
    try:
        raise KeyError("layers.0.weight")
    except KeyError as exc:
        failure = describe_failure(exc)
    rebuilt = merge_process._rebuilt(failure)
    assert isinstance(rebuilt, MergeProcessError) and not isinstance(rebuilt, MergeStudioError)
    assert rebuilt.type_name == "KeyError" and "layers.0.weight" in str(rebuilt)
    assert "Traceback" in rebuilt.remote_traceback and "KeyError" in rebuilt.remote_traceback


def test_cancel_stops_the_child_and_leaves_nothing_behind(big_models, tmp_path):
    token = CancelToken()
    job = iter_merge_in_process(_recipe(big_models, tmp_path / "out" / "merged.safetensors"), token)
    with pytest.raises(Cancelled):
        for event in job:
            if isinstance(event, Progress) and event.stage == "merge":
                token.cancel()
    out_dir = tmp_path / "out"
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    assert not [p for p in multiprocessing.active_children() if p.name == "merge-studio-merge"]


def test_a_child_that_dies_is_reported_and_its_partial_output_removed(big_models, tmp_path):
    job = iter_merge_in_process(_recipe(big_models, tmp_path / "merged.safetensors"))
    with pytest.raises(MergeStudioError, match="ended without a result") as caught:
        for event in job:
            if isinstance(event, Progress) and event.stage == "merge":
                (child,) = [p for p in multiprocessing.active_children() if p.name == "merge-studio-merge"]
                os.kill(child.pid, signal.SIGKILL)  # as the out-of-memory killer would
    assert "removed" in caught.value.hint
    assert list(tmp_path.iterdir()) == []


def test_merges_can_be_kept_in_this_process(monkeypatch):
    assert merge_process.enabled()
    monkeypatch.setenv("MERGE_STUDIO_MERGE_PROCESS", "0")
    assert not merge_process.enabled()


def test_a_process_that_cannot_start_is_a_clear_error(make_checkpoint, tmp_path, monkeypatch):
    paths = [make_checkpoint(f"m{i}.safetensors", seed=i) for i in range(2)]
    context = merge_process.merge_context()

    def refuse(self):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(type(context.Process(target=print)), "start", refuse)
    with pytest.raises(MergeStudioError, match="Could not start the merge process") as caught:
        drive(iter_merge_in_process(_recipe(paths, tmp_path / "o.safetensors")))
    assert "MERGE_STUDIO_MERGE_PROCESS=0" in caught.value.hint
    assert not (tmp_path / "o.safetensors").exists()
