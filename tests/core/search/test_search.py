"""Coefficient search: ranges, resuming a stopped study, cancelling, and trials in worker processes or on Ray."""

from __future__ import annotations

import pytest
import yaml

from merge_studio.cli.main import main
from merge_studio.core.progress import CancelToken, drive
from merge_studio.core.recipe import ModelEntry, Recipe
from merge_studio.core.search import (
    Objective,
    SearchError,
    SearchSpace,
    TrialResult,
    iter_search,
    load_search,
    parameter_importance,
    run_search,
)
from merge_studio.core.search.space import apply_values
from merge_studio.errors import Cancelled
from tests.digit_tasks import small_suite

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_suite(tmp_path_factory.mktemp("digit-tasks"))


def _recipe(suite, out) -> Recipe:
    return Recipe(method="task_arithmetic", base=str(suite.base), arch=suite.arch, output=str(out), hash_sources=False,
                  params={"lambda": 1.0}, models=[ModelEntry(path=str(p), params={"weight": 0.3}) for p in suite.models])


def _objective(suite) -> Objective:
    return Objective("accuracy", tuple(str(p) for p in suite.data), "train")


SPACE = SearchSpace.parse(["lambda=0.2:1.5", "weight=0:1"])


# --- the space ---------------------------------------------------------------------------------
def test_a_per_model_parameter_gets_one_dimension_per_model_and_a_gradient_one_per_anchor():
    space = SearchSpace.parse(["weight=0:1", "lambda=0:2@3", "models.1.density=0.1:1:log"])
    dims = space.dimensions("ties", 2)
    assert [d.key for d in dims] == ["models.0.weight", "models.1.weight", "lambda@0", "lambda@1", "lambda@2",
                                     "models.1.density"]
    recipe = {"method": "ties", "models": [{"path": "a"}, {"path": "b", "params": {"density": 0.5}}], "params": {}}
    values = {"models.0.weight": 0.2, "models.1.weight": 0.8, "lambda@0": 0.1, "lambda@1": 0.5, "lambda@2": 1.5,
              "models.1.density": 0.3}
    out = apply_values(recipe, dims, values)
    assert out["params"]["lambda"] == [0.1, 0.5, 1.5]
    assert out["models"][0]["params"] == {"weight": 0.2}
    assert out["models"][1]["params"] == {"density": 0.3, "weight": 0.8}
    assert recipe["models"][1]["params"] == {"density": 0.5}  # the original is left alone


@pytest.mark.parametrize(("text", "message"), [
    ("lambda=1:0", "empty"), ("lambda", "cannot read"), ("density=0:1:log", "above 0"),
])
def test_unreadable_ranges_say_what_to_write(text, message):
    with pytest.raises(SearchError, match=message):
        SearchSpace.parse([text])


def test_an_unknown_parameter_lists_the_methods_parameters():
    with pytest.raises(SearchError, match="no parameter 'alpha'") as info:
        SearchSpace.parse(["alpha=0:1"]).dimensions("task_arithmetic", 2)
    assert "lambda" in info.value.hint and "weight" in info.value.hint


def test_objectives_read_kind_sources_and_split():
    o = Objective.parse("loss:a.npz,b.npz@train")
    assert (o.kind, o.data, o.split, o.direction) == ("loss", ("a.npz", "b.npz"), "train", "minimize")
    assert Objective.parse("accuracy").direction == "maximize"
    with pytest.raises(SearchError, match="unknown objective"):
        Objective.parse("fun")


# --- running -----------------------------------------------------------------------------------
def test_a_stopped_search_resumes_to_the_number_of_trials_asked_for(suite, tmp_path):
    recipe = _recipe(suite, tmp_path / "m.safetensors")
    first = run_search(recipe, SPACE, [_objective(suite)], trials=5, workers=0)
    assert len(first.trials) == 5
    assert first.storage == tmp_path / "m.safetensors.search.db" and first.storage.is_file()
    second = run_search(recipe, SPACE, [_objective(suite)], trials=10, workers=0)
    assert len(second.trials) == 10
    assert [t.params for t in second.trials[:5]] == [t.params for t in first.trials]
    stored = load_search(second.storage)
    assert len(stored.trials) == 10 and stored.best[0].values == second.best[0].values
    assert second.best[0].values[0] == max(t.values[0] for t in second.trials)
    assert set(parameter_importance(stored)) == {d.key for d in stored.dims}


def test_the_best_recipe_reproduces_the_best_trials_score(suite, tmp_path):
    from merge_studio.core.engine import run_merge
    from merge_studio.core.search.objectives import score

    result = run_search(_recipe(suite, tmp_path / "m.safetensors"), SPACE, [_objective(suite)], trials=4, workers=0)
    best = result.best_recipe()
    assert best.params["lambda"] == result.best[0].params["lambda"]
    merged = run_merge(best)
    assert score(_objective(suite), merged.output, yaml.safe_load(best.to_yaml())) == pytest.approx(result.best[0].values[0])


def test_cancelling_keeps_the_finished_trials(suite, tmp_path):
    cancel = CancelToken()
    seen: list[TrialResult] = []

    def on_trial(item):
        seen.append(item)
        if len(seen) == 2:
            cancel.cancel()

    recipe = _recipe(suite, tmp_path / "m.safetensors")
    with pytest.raises(Cancelled):
        drive(iter_search(recipe, SPACE, [_objective(suite)], trials=20, workers=0, cancel=cancel), on_partial=on_trial)
    assert len(load_search(tmp_path / "m.safetensors.search.db").trials) == 2


def test_two_objectives_give_a_pareto_front(suite, tmp_path):
    objectives = [Objective("accuracy", (str(suite.data[0]),), "train"), Objective("accuracy", (str(suite.data[1]),), "train")]
    result = run_search(_recipe(suite, tmp_path / "m.safetensors"), SearchSpace.parse(["weight=0:1"]), objectives,
                        trials=6, workers=0)
    assert result.best and all(len(t.values) == 2 for t in result.best)
    for t in result.best:  # nobody on the front is beaten on both objectives
        assert not any(o.values[0] > t.values[0] and o.values[1] > t.values[1] for o in result.trials)


def test_a_range_the_method_rejects_fails_with_the_methods_message(suite, tmp_path):
    recipe = _recipe(suite, tmp_path / "m.safetensors")
    with pytest.raises(SearchError, match="first trials all failed.*lambda"):
        run_search(recipe, SearchSpace.parse(["lambda=20:30"]), [_objective(suite)], trials=3, workers=0)


@pytest.mark.slow
def test_two_worker_processes_run_the_trials(suite, tmp_path):
    result = run_search(_recipe(suite, tmp_path / "m.safetensors"), SPACE, [_objective(suite)], trials=6, workers=2)
    assert len(result.trials) == 6 and result.failed == 0


@pytest.mark.slow
def test_trials_run_as_ray_tasks_on_a_local_cluster(suite, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        result = run_search(_recipe(suite, tmp_path / "m.safetensors"), SPACE, [_objective(suite)], trials=6,
                            workers=2, ray="auto")
        assert ray.is_initialized()  # the test's cluster is left to the test
    finally:
        ray.shutdown()
    assert len(result.trials) == 6 and result.failed == 0
    assert 0.0 < result.best[0].values[0] <= 1.0


def test_the_search_command_merges_the_best_trial_and_saves_its_recipe(suite, tmp_path, capsys):
    recipe_path = tmp_path / "r.yaml"
    _recipe(suite, tmp_path / "m.safetensors").save(recipe_path)
    data = ",".join(str(p) for p in suite.data)
    code = main(["search", str(recipe_path), "--param", "lambda=0.2:1.5", "--objective", f"accuracy:{data}@train",
                 "--trials", "3", "--workers", "0", "--json", "-q"])
    assert code == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 3 and (tmp_path / "m.safetensors").is_file()
    saved = yaml.safe_load((tmp_path / "m.safetensors.recipe.yaml").read_text())
    assert saved["params"]["lambda"] == pytest.approx(out["best"][0]["params"]["lambda"])


@pytest.mark.slow
def test_cancelling_stops_the_worker_processes(suite, tmp_path):
    import multiprocessing
    import time

    cancel = CancelToken()
    seen: list[TrialResult] = []

    def on_trial(item):
        seen.append(item)
        cancel.cancel()

    start = time.perf_counter()
    with pytest.raises(Cancelled):
        drive(iter_search(_recipe(suite, tmp_path / "m.safetensors"), SPACE, [_objective(suite)], trials=200,
                          workers=2, cancel=cancel), on_partial=on_trial)
    assert time.perf_counter() - start < 60
    assert not multiprocessing.active_children()
    stored = load_search(tmp_path / "m.safetensors.search.db")
    assert len(stored.trials) == 1 and stored.failed >= 1  # the one running beside it was recorded as failed


def test_language_models_are_searched_for_perplexity_on_text(tmp_path):
    pytest.importorskip("transformers")
    from tests.hf_models import make_hf_folder, training_text

    a, b = make_hf_folder(tmp_path / "a", "llama", seed=1), make_hf_folder(tmp_path / "b", "llama", seed=2)
    text = tmp_path / "notes.txt"
    text.write_text(training_text())
    recipe = Recipe(method="lerp", models=[ModelEntry(path=str(a)), ModelEntry(path=str(b))], output=str(tmp_path / "out"),
                    hash_sources=False)
    objective = Objective.parse(f"perplexity:{text}")
    result = run_search(recipe, SearchSpace.parse(["t=0:1"]), [objective], trials=2, workers=0)
    assert objective.direction == "minimize" and result.failed == 0
    assert all(t.values[0] > 1.0 for t in result.trials)
    assert result.best[0].values[0] == min(t.values[0] for t in result.trials)
    assert not list(tmp_path.glob("out*/"))  # trials leave no model behind
