"""Per-layer parameters: gradients over depth and name filters."""

from __future__ import annotations

import pytest

from merge_studio.core.methods.layered import interpolate, layer_depths, resolve_params


def test_gradient_interpolates_linearly_between_anchors():
    assert interpolate([0.0, 1.0], 0.25) == pytest.approx(0.25)
    assert interpolate([0.0, 1.0, 0.0], 0.5) == pytest.approx(1.0)
    assert interpolate([0.0, 1.0, 0.0], 0.75) == pytest.approx(0.5)
    assert interpolate([2.0, 4.0], 1.0) == pytest.approx(4.0)


def test_filters_are_tried_in_order_and_the_last_is_the_default():
    raw = {"t": [{"filter": "self_attn", "value": 0.2}, {"filter": "mlp.*.weight", "value": 0.4}, {"value": 0.9}]}
    assert resolve_params(raw, "model.layers.3.self_attn.q_proj.weight", 0.5) == {"t": 0.2}
    assert resolve_params(raw, "mlp.up.weight", 0.5) == {"t": 0.4}
    assert resolve_params(raw, "lm_head.weight", 1.0) == {"t": 0.9}


def test_a_filter_that_matches_nothing_leaves_the_default():
    assert resolve_params({"t": [{"filter": "attn", "value": 0.2}]}, "mlp.weight", 0.0) == {}


def test_filtered_values_may_themselves_be_gradients():
    raw = {"t": [{"filter": "attn", "value": [0.0, 1.0]}, {"value": 0.5}]}
    assert resolve_params(raw, "layers.1.attn.w", 0.5) == {"t": pytest.approx(0.5)}


def test_depth_follows_transformer_layer_indices_and_puts_other_tensors_at_the_start_as_mergekit():
    names = ["model.embed_tokens.weight", *[f"model.layers.{i}.mlp.w" for i in range(5)], "model.norm.weight", "lm_head.weight"]
    depths = layer_depths(names)
    assert [depths[f"model.layers.{i}.mlp.w"] for i in range(5)] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    # mergekit plans embeddings, the final norm and the head at t = 0: a gradient's first value
    assert depths["model.embed_tokens.weight"] == depths["lm_head.weight"] == depths["model.norm.weight"] == 0.0


def test_a_single_layer_sits_at_the_end_of_a_gradient_as_in_mergekit():
    assert layer_depths(["model.layers.0.mlp.w", "lm_head.weight"]) == {"model.layers.0.mlp.w": 1.0, "lm_head.weight": 0.0}


def test_on_off_lists_step_through_the_layers():
    raw = {"normalize": [True, False]}
    assert resolve_params(raw, "layers.0.w", 0.0) == {"normalize": True}
    assert resolve_params(raw, "layers.3.w", 0.9) == {"normalize": True}
    assert resolve_params(raw, "layers.4.w", 1.0) == {"normalize": False}


def test_depth_orders_resnet_stages_and_blocks():
    names = ["conv1.weight", "layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight", "layer3.0.conv1.weight", "fc.weight"]
    d = layer_depths(names)
    assert d["conv1.weight"] == 0.0
    assert d["layer1.0.conv1.weight"] < d["layer1.1.conv1.weight"] < d["layer2.0.conv1.weight"] < d["layer3.0.conv1.weight"]
    assert d["fc.weight"] == 0.0
