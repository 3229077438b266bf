"""Every built-in method is declared completely: names, texts, parameter models with bounds."""

from __future__ import annotations

from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel, ValidationError

from merge_studio.core.methods import get_method, list_methods
from merge_studio.core.methods.task_arithmetic import TaskArithmeticParams

FROM_MERGEKIT_LIST = {
    "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "sce", "karcher", "multislerp", "nuslerp",
    "nearswap", "arcee_fusion", "ram", "ramplus_tl",
}
REQUIRED = {
    "simple_average", "weighted_average", "lerp", "task_arithmetic", "ties",
    "dare_linear", "dare_ties", "slerp", "model_stock", "model_recombination", *FROM_MERGEKIT_LIST,
}
MERGEKIT_NAMES = {
    "weighted_average": "linear", "slerp": "slerp", "task_arithmetic": "task_arithmetic", "ties": "ties",
    "dare_linear": "dare_linear", "dare_ties": "dare_ties", "model_stock": "model_stock",
    **{name: name for name in FROM_MERGEKIT_LIST},
}
OURS = sorted(REQUIRED)
EVERY_REGISTERED = sorted(s.name for s in list_methods())


def _models(name: str) -> list[type[BaseModel]]:
    spec = get_method(name)
    return [spec.params, spec.model_params]


def _bounds(field: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for meta in field.metadata:
        for attr in ("ge", "gt", "le", "lt"):
            value = getattr(meta, attr, None) if isinstance(meta, annotated_types.BaseMetadata) else None
            if value is not None:
                out[attr] = value
    return out


def test_every_required_method_is_listed():
    assert REQUIRED <= {s.name for s in list_methods()}


@pytest.mark.parametrize("name", OURS)
def test_each_method_says_what_it_is_and_where_it_comes_from(name):
    spec = get_method(name)
    assert spec.label and spec.family and spec.reference
    assert spec.description and "\n" not in spec.description
    assert len(spec.details) > 150  # a real paragraph: what, when, formula
    assert spec.mergekit_name == MERGEKIT_NAMES.get(name)


@pytest.mark.parametrize("name", EVERY_REGISTERED)
def test_every_registered_methods_defaults_validate(name):
    for model in _models(name):
        model()


@pytest.mark.parametrize("name", OURS)
def test_defaults_validate_and_every_field_is_described(name):
    for model in _models(name):
        model()  # all defaults are valid
        for fname, field in model.model_fields.items():
            assert field.title, f"{name}.{fname} has no title"
            assert field.description and field.description.endswith("."), f"{name}.{fname} description"
            assert isinstance(field.json_schema_extra, dict) and "per_layer" in field.json_schema_extra


@pytest.mark.parametrize("name", EVERY_REGISTERED)
def test_out_of_range_values_are_rejected(name):
    checked = 0
    for model in _models(name):
        for fname, field in model.model_fields.items():
            key = field.alias or fname
            for attr, bound in _bounds(field).items():
                outside = bound - 1 if attr in ("ge", "gt") else bound + 1
                with pytest.raises(ValidationError):
                    model.model_validate({key: outside})
                if attr == "gt":
                    with pytest.raises(ValidationError):
                        model.model_validate({key: bound})
                checked += 1
    numeric = any(
        field.annotation in (int, float) for model in _models(name) for field in model.model_fields.values()
    )
    assert checked > 0 or not numeric


def test_unknown_parameters_are_rejected():
    with pytest.raises(ValidationError):
        get_method("ties").params.model_validate({"denisty": 0.5})


def test_seeds_and_modes_cannot_vary_by_layer():
    def per_layer(name: str, field: str) -> bool:
        spec = get_method(name)
        model = spec.params if field in spec.params.model_fields else spec.model_params
        return model.model_fields[field].json_schema_extra["per_layer"]

    assert not per_layer("model_recombination", "seed")
    assert not per_layer("ties", "consensus")
    assert not per_layer("dare_ties", "consensus")
    assert not per_layer("model_stock", "filter_wise")
    assert per_layer("ties", "density") and per_layer("slerp", "t") and per_layer("task_arithmetic", "lambda_")


def test_lambda_is_read_and_written_under_mergekits_name():
    params = TaskArithmeticParams.model_validate({"lambda": 0.5})
    assert params.lambda_ == 0.5
    assert params.model_dump(by_alias=True) == {"lambda": 0.5, "normalize": False}
    assert TaskArithmeticParams.model_validate(params.model_dump(by_alias=True)) == params


@pytest.mark.parametrize(
    ("name", "field", "default"),
    [("task_arithmetic", "normalize", False), ("ties", "normalize", True), ("dare_linear", "normalize", False),
     ("dare_ties", "normalize", False), ("dare_linear", "rescale", True), ("dare_ties", "rescale", True),
     ("ties", "consensus", "sum"), ("weighted_average", "normalize", True), ("model_stock", "filter_wise", False),
     ("breadcrumbs", "normalize", False), ("breadcrumbs", "rescale", False), ("breadcrumbs_ties", "normalize", False),
     ("della", "normalize", True), ("della", "rescale", True), ("della_linear", "normalize", False),
     ("della_linear", "rescale", True), ("sce", "select_topk", 1.0), ("ram", "epsilon", 1e-5),
     ("ramplus_tl", "r", 0.1), ("ramplus_tl", "alpha", 0.2), ("karcher", "max_iter", 10), ("karcher", "tol", 1e-5),
     ("multislerp", "normalize_weights", True), ("nuslerp", "nuslerp_flatten", True),
     ("nuslerp", "nuslerp_row_wise", False)],
)
def test_defaults_follow_mergekit(name, field, default):
    assert getattr(get_method(name).params(), field) == default


@pytest.mark.parametrize(("name", "field", "default"), [
    ("breadcrumbs", "density", 1.0), ("breadcrumbs", "gamma", 0.01), ("della", "density", 1.0),
    ("della", "epsilon", 0.15), ("multislerp", "weight", 1.0), ("nuslerp", "weight", 1.0),
])
def test_per_model_defaults_follow_mergekit(name, field, default):
    assert getattr(get_method(name).model_params(), field) == default


def test_task_methods_need_a_base_and_stream_element_wise():
    for name in ("task_arithmetic", "ties", "dare_linear", "dare_ties"):
        spec = get_method(name)
        assert spec.base == "required" and spec.elementwise and spec.n_models == (1, None)
    assert get_method("ties").statistics is not None
    assert not get_method("slerp").elementwise and not get_method("model_stock").elementwise
    assert get_method("model_stock").base == "required"
    assert get_method("model_recombination").outputs == "per_model"
