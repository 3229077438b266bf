"""The module tree of tensor names, overlays with a legend, and life without Graphviz."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.arch import build_module, example_input
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.progress import drive
from merge_studio.graph import GraphvizUnavailable, color_nodes, dot_available, key_tree_graph, module_graph
from merge_studio.graph.jobs import Overlay, iter_checkpoint_picture
from merge_studio.graph.key_tree import key_tree
from merge_studio.graph.overlay import MISSING_COLOR, layer_value
from merge_studio.graph.render import render_png, render_svg

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")

STATE = {
    "encoder.layers.0.weight": torch.zeros(8, 4),
    "encoder.layers.0.bias": torch.zeros(8),
    "encoder.layers.1.weight": torch.zeros(8, 8),
    "head.weight": torch.zeros(2, 8),
    "scale": torch.zeros(()),
}


@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    """Hide Graphviz: PATH points at an empty folder."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))


def test_key_tree_groups_tensors_by_module_with_parameter_counts():
    tree = key_tree(STATE)
    assert list(tree.children) == ["encoder", "head"]
    layers = tree.children["encoder"].children["layers"]
    assert layers.param_count == 8 * 4 + 8 + 64
    assert layers.children["0"].tensors == [("weight", (8, 4)), ("bias", (8,))]
    assert tree.tensors == [("scale", ())]
    assert tree.param_count == 32 + 8 + 64 + 16 + 1


def test_key_tree_graph_labels_show_shapes_and_counts():
    graph = key_tree_graph(STATE, title="custom")
    node = next(n for n in graph.nodes if n.module_path == "encoder.layers.0")
    assert "weight  8×4" in node.label and "40 params" in node.label
    assert graph.kind == "tree" and "custom" in graph.dot


def test_key_tree_graph_depth_folds_deep_modules():
    graph = key_tree_graph(STATE, depth=1)
    paths = {n.module_path for n in graph.nodes}
    assert paths == {"", "encoder", "head"}
    encoder = next(n for n in graph.nodes if n.module_path == "encoder")
    assert ("layers.0.weight", (8, 4)) in encoder.tensors


def test_overlay_colours_exactly_the_layers_with_values():
    graph = module_graph(build_module("zoo:mlp?hidden=8,8"), example_input("zoo:mlp?hidden=8,8"))
    coloured = color_nodes(graph, {"hidden.0": 1.0, "head": 3.0}, title="relative change")
    fills = {n.module_path: coloured.fills[n.node_id] for n in coloured.nodes if n.kind == "module"}
    assert fills["hidden.0"] == "#440154" and fills["head"] == "#fde725"
    assert fills["hidden.1"] == MISSING_COLOR
    assert coloured.legend.vmin == 1.0 and coloured.legend.vmax == 3.0
    assert "relative change" in coloured.dot and "legend" in coloured.dot
    assert graph.legend is None  # the original is untouched


def test_dark_fills_get_light_text():
    graph = module_graph(build_module("zoo:mlp?hidden=8"), example_input("zoo:mlp?hidden=8"))
    coloured = color_nodes(graph, {"hidden.0": 0.0, "head": 1.0})
    dark = next(n for n in coloured.nodes if n.module_path == "hidden.0")
    assert coloured.font_colors[dark.node_id] == "#ffffff"


def test_a_folded_block_shows_the_mean_of_its_layers():
    values = {"layer1.0.conv1": 1.0, "layer1.0.conv2": 3.0, "layer2.0.conv1": 10.0}
    assert layer_value("layer1", values) == 2.0
    assert layer_value("layer1.0.conv1", values) == 1.0
    assert layer_value("layer3", values) is None


def test_overlay_range_can_be_fixed():
    graph = key_tree_graph(STATE)
    coloured = color_nodes(graph, {"head": 0.5}, vmin=0.0, vmax=1.0, cmap="viridis")
    head = next(n for n in coloured.nodes if n.module_path == "head")
    assert coloured.fills[head.node_id] == "#21918c"  # viridis midpoint


@needs_dot
def test_overlaid_tree_and_graph_render(tmp_path):
    graph = color_nodes(key_tree_graph(STATE), {"encoder.layers.0": 0.1, "head": 0.9}, title="cosine")
    assert b"cosine" in render_svg(graph.dot)
    assert render_png(graph.dot)[:4] == b"\x89PNG"


@needs_dot
def test_checkpoint_with_unknown_architecture_pictures_its_tree(tmp_path):
    path = tmp_path / "custom.safetensors"
    save_file(STATE, path)
    with open_checkpoint(path) as ckpt:
        picture = drive(iter_checkpoint_picture(ckpt, overlay=Overlay("relative change", {"head": 0.3})))
    assert picture.arch is None and picture.graph.kind == "tree" and picture.svg
    head = next(n for n in picture.graph.nodes if n.module_path == "head")
    assert picture.graph.fills[head.node_id] != MISSING_COLOR


def test_checkpoint_of_a_zoo_model_is_drawn_as_its_architecture(tmp_path):
    path = tmp_path / "vgg.safetensors"
    save_file(build_module("zoo:vgg?widths=8").state_dict(), path)
    with open_checkpoint(path) as ckpt:
        picture = drive(iter_checkpoint_picture(ckpt))
    assert picture.arch.startswith("zoo:vgg?") and picture.graph.kind == "module"
    assert picture.tree is not None  # the tree is there too, for the tree view


def test_without_dot_rendering_says_how_to_install_it(no_dot):
    assert not dot_available()
    with pytest.raises(GraphvizUnavailable) as info:
        render_svg("digraph { a -> b }")
    assert "sudo apt-get install graphviz" in str(info.value)
    assert "brew install graphviz" in info.value.hint and "conda install graphviz" in info.value.hint


def test_without_dot_a_picture_still_has_its_graph_and_tree(no_dot):
    picture = drive(iter_checkpoint_picture(build_module("zoo:mlp?hidden=8").state_dict()))
    assert picture.dot_missing and picture.svg is None
    assert picture.graph.nodes and picture.tree is not None


def test_the_inspectors_key_tree_is_accepted_too():
    from merge_studio.core.checkpoints.base import TensorInfo
    from merge_studio.core.checkpoints.keys import build_key_tree

    infos = {name: TensorInfo(name, tuple(t.shape), t.dtype) for name, t in STATE.items()}
    graph = key_tree_graph(build_key_tree(infos))
    assert {n.module_path for n in graph.nodes} == {n.module_path for n in key_tree_graph(STATE).nodes}
    layers = next(n for n in graph.nodes if n.module_path == "encoder.layers")
    assert layers.param_count == 8 * 4 + 8 + 64


@needs_dot
def test_tensor_names_with_blanks_control_characters_and_markup_still_draw(tmp_path):
    names = ["a..w", "q.\n.w", 'b"];x[label="y.w', "c<b>&amp;.w", "x" * 3000 + ".w"]
    path = tmp_path / "odd_names.safetensors"
    save_file({n: torch.zeros(2, 2) for n in names}, str(path))
    with open_checkpoint(path) as ck:
        graph = key_tree_graph(ck)
    svg = render_svg(graph.dot).decode()
    assert "(empty)" in svg and "\\n" in svg and "c&lt;b&gt;&amp;amp;" in svg
    assert max(len(line) for line in graph.dot.splitlines()) < 1000  # the long name is cut in the middle


def test_a_module_with_thousands_of_children_draws_the_first_ones_and_one_more_node():
    from merge_studio.graph.key_tree import MAX_CHILDREN

    graph = key_tree_graph({f"layers.{i}.w": (2,) for i in range(5000)})
    assert len(graph.nodes) == 2 + MAX_CHILDREN + 1
    rest = graph.nodes[-1]
    assert f"{5000 - MAX_CHILDREN:,} more" in rest.label and rest.module_path == "layers"
    assert rest.param_count == 2 * (5000 - MAX_CHILDREN)
