"""The Graph tab colours a stacked model's layers by the model each came from."""

from __future__ import annotations

import pytest

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.engine import run_merge
from merge_studio.core.mergekit_config import recipe_from_mergekit
from merge_studio.graph.render import dot_available
from merge_studio.gui.views.graph_view import SOURCE_COLOURS, SOURCE_OVERLAY
from tests.hf_models import make_hf_folder


@pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")
def test_a_stacked_models_layers_are_filled_with_their_source_models_colour(qtbot, view, tmp_path):
    pytest.importorskip("transformers")
    a, b = make_hf_folder(tmp_path / "alpha", seed=1), make_hf_folder(tmp_path / "beta", seed=2)
    recipe = recipe_from_mergekit({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(b), "layer_range": [0, 2]}]},
    ]}).model_copy(update={"output": str(tmp_path / "stacked")})
    out = run_merge(recipe).output
    with open_checkpoint(out) as ck, qtbot.waitSignal(view.sig_graph_ready, timeout=30000):
        view.show_checkpoint(ck)
    assert view.overlay_combo.currentText() == SOURCE_OVERLAY
    graph = view.picture.graph
    fill = {n.module_path: graph.fills.get(n.node_id) for n in graph.nodes if n.module_path}
    assert [fill[f"model.layers.{i}.mlp"] for i in range(4)] == [SOURCE_COLOURS[0]] * 2 + [SOURCE_COLOURS[1]] * 2
    assert fill[f"model.layers.3.self_attn"] == SOURCE_COLOURS[1]
    assert 'label="alpha"' in graph.legend_dot and 'label="beta"' in graph.legend_dot


def test_a_plain_merge_offers_no_source_overlay(qtbot, view, tmp_path):
    pytest.importorskip("transformers")
    a = make_hf_folder(tmp_path / "alpha", seed=1)
    recipe = recipe_from_mergekit({"merge_method": "passthrough", "models": [{"model": str(a)}]})
    out = run_merge(recipe.model_copy(update={"output": str(tmp_path / "copy")})).output
    with open_checkpoint(out) as ck, qtbot.waitSignal(view.sig_graph_ready, timeout=30000):
        view.show_checkpoint(ck)
    assert SOURCE_OVERLAY not in view.overlay_names()
