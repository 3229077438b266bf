"""Data-aware merges from the command line on the multi-task digits suite, judged by accuracy."""

from __future__ import annotations

import pytest
import yaml
from safetensors.torch import load_file

from merge_studio.cli.main import main
from tests.digit_tasks import small_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_suite(tmp_path_factory.mktemp("digit-tasks"))


def _average_state(suite):
    states = [load_file(str(p)) for p in suite.models]
    return {k: sum(s[k] for s in states) / len(states) for k in states[0]}


def test_regmean_recipe_with_each_models_own_data_merges_better_than_the_average(suite, tmp_path):
    out = tmp_path / "regmean.safetensors"
    recipe = {
        "method": "regmean",
        "models": [{"path": str(m), "params": {"data": str(d)}} for m, d in zip(suite.models, suite.data, strict=True)],
        "params": {"alpha": 0.9, "num_examples": 300},
        "arch": suite.arch,
        "output": str(out),
    }
    path = tmp_path / "regmean.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(path), "-q"]) == 0
    merged = suite.accuracies(out)
    average = suite.accuracies(_average_state(suite))
    assert merged["average"] > average["average"] + 0.05, (merged, average)
    assert merged["average"] > 0.4
