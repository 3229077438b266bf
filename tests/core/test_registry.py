"""The registry lists every built-in method under the names users of other tools know."""

from __future__ import annotations

import pytest

from merge_studio.core.methods import get_method, list_methods

REQUIRED = {
    "simple_average", "weighted_average", "lerp", "task_arithmetic", "ties", "dare_linear",
    "dare_ties", "slerp", "model_stock", "model_recombination", "fisher", "weight_matching", "merge_many",
}


def test_every_required_method_is_registered():
    assert REQUIRED <= {m.name for m in list_methods()}


@pytest.mark.parametrize(("alias", "name"), [("linear", "weighted_average"), ("average", "simple_average")])
def test_peer_names_find_our_methods(alias, name):
    assert get_method(alias).name == name


def test_every_method_declares_what_the_window_and_docs_need():
    for spec in list_methods():
        assert spec.label and spec.family and spec.description, spec.name
        assert spec.name == spec.name.lower() and " " not in spec.name
        for field in spec.params.model_fields.values():
            assert field.description, f"{spec.name}: a parameter has no description"
