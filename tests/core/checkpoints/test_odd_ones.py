"""Only the models that do not fit are flagged, each with the tensors that make it differ."""

from __future__ import annotations

from merge_studio.core.checkpoints.odd_ones import odd_models

KEYS = ["a.weight", "b.weight"]


def test_of_three_models_only_the_one_with_another_shape_is_odd():
    shapes = {"b.weight": {"m0": (16, 8), "m1": (16, 8), "wide": (24, 8)}}
    odd = odd_models(["m0", "m1", "wide"], KEYS, {}, shapes)
    assert list(odd) == ["wide"]
    assert "'b.weight' is 24×8 here, 16×8 in the others" in odd["wide"][0]


def test_a_model_lacking_a_tensor_the_others_have_is_odd_and_says_which():
    missing = {"m0": [], "m1": [], "short": ["b.weight"]}
    odd = odd_models(["m0", "m1", "short"], KEYS, missing, {})
    assert list(odd) == ["short"] and "'b.weight'" in odd["short"][0]


def test_with_two_models_the_base_decides_and_without_one_both_are_named():
    shapes = {"b.weight": {"base": (16, 8), "other": (24, 8)}}
    assert list(odd_models(["base", "other"], KEYS, {}, shapes, reference="base")) == ["other"]
    assert set(odd_models(["base", "other"], KEYS, {}, shapes)) == {"base", "other"}
