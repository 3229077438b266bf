"""Identical layers are drawn once with "×N" (a 32-layer transformer stays readable), and expand on request."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from merge_studio.core.arch.zoo_transformers import GPT
from merge_studio.core.progress import drive
from merge_studio.graph.build import module_graph
from merge_studio.graph.overlay import color_nodes
from merge_studio.graph.render import dot_available, render_svg
from merge_studio.graph.repeats import find_repeated_blocks, fold_values

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")
LLAMA_7B = Path(__file__).parents[1] / "fixtures" / "llama-2-7b"


@pytest.fixture(scope="module")
def gpt6():
    torch.manual_seed(0)
    return GPT(n_layer=6).eval(), torch.randint(0, 64, (1, 8))


def _paths(graph):
    return {n.module_path for n in graph.nodes if n.module_path}


def test_six_identical_blocks_are_drawn_once_with_their_count(gpt6):
    model, tokens = gpt6
    graph = module_graph(model, tokens, depth=2)
    assert [(b.path, b.count) for b in graph.repeats] == [("blocks", 6)]
    assert "blocks.0.attn" in _paths(graph)
    assert not any(p.startswith("blocks.1") for p in _paths(graph))
    assert "blocks.0–5 · TransformerBlock ×6" in graph.template
    assert len(model.blocks) == 6  # the model is given back whole


def test_an_expanded_block_draws_every_layer(gpt6):
    model, tokens = gpt6
    collapsed = module_graph(model, tokens, depth=2)
    expanded = module_graph(model, tokens, depth=2, expand={"blocks"})
    assert {f"blocks.{i}.attn" for i in range(6)} <= _paths(expanded)
    assert not expanded.repeats and [b.path for b in expanded.expanded] == ["blocks"]
    assert len(expanded.nodes) > 3 * len(collapsed.nodes) // 2


def test_children_that_differ_are_not_collapsed():
    stack = nn.Sequential(*(nn.Linear(4 + i, 5 + i) for i in range(5)))
    assert find_repeated_blocks(stack) == []
    assert [b.count for b in find_repeated_blocks(nn.Sequential(*(nn.Linear(4, 4) for _ in range(5))))] == [5]


def test_per_layer_values_show_their_mean_on_the_drawn_layer_and_their_spread_in_its_tooltip(gpt6):
    model, tokens = gpt6
    graph = module_graph(model, tokens, depth=2)
    values = {f"blocks.{i}.attn.qkv": float(i) for i in range(6)}
    folded, spreads = fold_values(values, graph.repeats)
    assert folded == {"blocks.0.attn.qkv": 2.5}
    assert (spreads["blocks.0.attn.qkv"].low, spreads["blocks.0.attn.qkv"].high) == (0.0, 5.0)
    coloured = color_nodes(graph, values, title="relative change")
    attn = graph.nodes_for("blocks.3.attn")[0]  # any layer finds the one drawn for all
    assert attn.module_path == "blocks.0.attn"
    assert coloured.fills[attn.node_id] != "#f4f4f4"
    assert "relative change: mean 2.5 over 6 layers (min 0, max 5)" in coloured.describe(attn)
    assert "drawn once for 6 layers: blocks.0–5" in coloured.describe(attn)


@needs_dot
def test_a_7b_llama_config_draws_its_32_decoder_layers_as_one_block():
    pytest.importorskip("transformers")
    from merge_studio.graph.jobs import iter_arch_picture

    picture = drive(iter_arch_picture(f"hf:{LLAMA_7B}", depth=3))
    assert [(b.path, b.count, b.module_type) for b in picture.graph.repeats] == [("model.layers", 32, "LlamaDecoderLayer")]
    assert len(picture.graph.nodes) < 30
    assert b"model.layers.0\xe2\x80\x9331 \xc2\xb7 LlamaDecoderLayer \xc3\x9732" in picture.svg


@needs_dot
def test_expanded_layers_share_position_inputs_through_one_labelled_edge(tmp_path):
    pytest.importorskip("transformers")
    from merge_studio.core.arch import build_module, example_input
    from tests.hf_models import make_hf_folder

    folder = make_hf_folder(tmp_path / "llama", "llama", num_hidden_layers=6)
    spec = f"hf:{folder}"
    graph = module_graph(build_module(spec), example_input(spec, batch_size=1), depth=3, expand={"model.layers"})
    assert {f"model.layers.{i}.self_attn" for i in range(6)} <= _paths(graph)
    assert "to all 6 layers" in graph.dot
    assert render_svg(graph.dot)  # and it lays out


def test_a_mark_on_any_layer_marks_the_block_drawn_for_all_of_them(gpt6):
    from merge_studio.gui.views.graph_marks import mark_graph

    model, tokens = gpt6
    graph = module_graph(model, tokens, depth=2)
    marked = mark_graph(graph, {"blocks.4.mlp.fc1": "#ff0000"})
    mlp = graph.nodes_for("blocks.0.mlp")[0]
    assert marked.fills[mlp.node_id] == "#ff0000"
    assert marked.fills[graph.nodes_for("blocks.0.attn")[0].node_id] != "#ff0000"
