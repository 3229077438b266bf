"""AdaMerging: learned coefficients lower the entropy, and given coefficients re-run the merge without data."""

from __future__ import annotations

import pytest
import torch
import yaml
from matplotlib.figure import Figure
from safetensors.torch import load_file

from merge_studio.cli.main import main
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.methods.adamerging import (
    AdaMergingModelParams,
    AdaMergingParams,
    adamerging_merge,
    apply_coefficients,
    iter_learn_coefficients,
    merge_keys,
    prediction_entropy,
    stack_task_vectors,
)
from merge_studio.core.methods.spec import ModelJobContext
from merge_studio.core.progress import drive
from merge_studio.errors import MethodError
from merge_studio.plots.coefficients import plot_coefficients
from tests.digit_tasks import small_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_suite(tmp_path_factory.mktemp("digit-tasks"))


def _entropy(module, base, tvs, lambdas, keys, pools):
    from torch.func import functional_call

    merged = apply_coefficients(base, tvs, lambdas, keys)
    with torch.no_grad():
        return sum(float(prediction_entropy(functional_call(module, merged, (x,)))) for x in pools) / len(pools)


@pytest.mark.parametrize("mode", ["layer_wise", "task_wise"])
def test_learning_lowers_the_prediction_entropy_on_every_tasks_data(suite, mode):
    base = load_file(str(suite.base))
    states = [load_file(str(p)) for p in suite.models]
    keys = merge_keys(base, states)
    tvs = stack_task_vectors(base, states, keys)
    module = suite.module(base)
    pools = [t.train.inputs[:256] for t in suite.tasks]
    lambdas, history = drive(iter_learn_coefficients(module, base, tvs, keys, pools, mode=mode, steps=40, lr=0.02))
    assert lambdas.shape == ((len(keys), 3) if mode == "layer_wise" else (1, 3))
    assert float(lambdas.min()) >= 0.0 and float(lambdas.max()) <= 1.0
    start = _entropy(module, base, tvs, torch.full_like(lambdas, 0.3), keys, pools)
    assert _entropy(module, base, tvs, lambdas, keys, pools) < start - 0.05
    assert len(history) == 40


def _recipe(suite, out, **params):
    return {
        "method": "adamerging",
        "base": str(suite.base),
        "models": [{"path": str(m), "params": {"data": str(d)}} for m, d in zip(suite.models, suite.data, strict=True)],
        "params": {"steps": 30, "lr": 0.02, **params},
        "output": str(out),
    }


def test_saved_coefficients_rerun_the_same_merge_without_data(suite, tmp_path):
    first, again = tmp_path / "learned.safetensors", tmp_path / "replayed.safetensors"
    recipe, saved = tmp_path / "ada.yaml", tmp_path / "ada-learned.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(suite, first)))
    assert main(["merge", str(recipe), "--save-recipe", str(saved), "-q"]) == 0
    replay = yaml.safe_load(saved.read_text())
    coefficients = replay["params"]["coefficients"]
    assert set(coefficients) == set(load_file(str(suite.base)))  # one list per tensor
    assert all(len(v) == 3 for v in coefficients.values())
    for entry in replay["models"]:
        entry["params"]["data"] = str(tmp_path / "gone.safetensors")  # reading it would fail
    replay["output"] = str(again)
    saved.write_text(yaml.safe_dump(replay))
    assert main(["merge", str(saved), "-q"]) == 0
    a, b = load_file(str(first)), load_file(str(again))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert suite.accuracies(first)["average"] > 0.3


def test_the_learned_merge_reports_its_coefficients_and_the_entropy_it_reached(suite):
    cks = [open_checkpoint(p) for p in suite.models]
    ctx = ModelJobContext(device=torch.device("cpu"), arch=suite.arch, model_names=("r", "i", "m"))
    params = AdaMergingParams(mode="task_wise", steps=20, lr=0.05)
    out = drive(adamerging_merge(cks, open_checkpoint(suite.base), params,
                                 [AdaMergingModelParams(data=str(d)) for d in suite.data], ctx))
    assert list(out.report["coefficients"]) == ["*"] and len(out.report["coefficients"]["*"]) == 3
    assert out.report["entropy_last"] < out.report["entropy_first"]
    assert out.report["learned_params"]["coefficients"] == out.report["coefficients"]


def test_coefficients_of_the_wrong_length_name_the_tensor(suite):
    cks = [open_checkpoint(p) for p in suite.models]
    ctx = ModelJobContext(device=torch.device("cpu"), arch=suite.arch)
    params = AdaMergingParams(coefficients={"*": [0.3, 0.3]})
    with pytest.raises(MethodError, match="2 values for 3 models"):
        drive(adamerging_merge(cks, open_checkpoint(suite.base), params, [AdaMergingModelParams()] * 3, ctx))


def test_the_coefficient_plot_draws_one_line_per_model_across_layers():
    ax = Figure(figsize=(6, 3)).add_subplot()
    lines = plot_coefficients(ax, {"hidden.0.weight": [0.2, 0.5], "hidden.0.bias": [0.3, 0.4], "head.weight": [0.1, 0.9]},
                              ["rotated", "inverted"])
    assert len(lines) == 2
    assert list(lines[1].get_ydata()) == [0.5, 0.4, 0.9]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hidden.0", "hidden.0.bias", "head"]
    bars = plot_coefficients(Figure().add_subplot(), {"*": [0.3, 0.7]}, ["a", "b"])
    assert [b.get_height() for b in bars] == [0.3, 0.7]
