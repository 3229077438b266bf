"""Every model source yields a traced graph whose nodes know their layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from merge_studio.core.arch import build_module, example_input
from merge_studio.graph import module_graph, render_png, render_svg
from merge_studio.graph.build import SMALL_MODEL_PARAMS
from merge_studio.core.progress import drive
from merge_studio.errors import ArchitectureError
from merge_studio.graph.jobs import iter_arch_picture
from merge_studio.graph.render import dot_available

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")

ZOO_SPECS = {
    "mlp": ("zoo:mlp?hidden=16,16", "hidden.1"),
    "vgg": ("zoo:vgg?widths=8,16", "blocks.1.conv"),
    "resnet20": ("zoo:resnet20", "layer3.2.conv2"),
    "vit": ("zoo:vit?dim=32&depth=1", "blocks.0.attn.q_proj"),
    "gpt": ("zoo:gpt?d_model=32&n_layer=1", "blocks.0.mlp.fc2"),
}


@needs_dot
@pytest.mark.parametrize("name", sorted(ZOO_SPECS))
def test_each_zoo_model_traces_and_renders(name):
    spec, inner_layer = ZOO_SPECS[name]
    picture = drive(iter_arch_picture(spec, depth=4))
    paths = {n.module_path for n in picture.graph.nodes}
    assert inner_layer in paths
    svg = picture.svg.decode()
    node = next(n for n in picture.graph.nodes if n.module_path == inner_layer)
    assert f'id="{node.node_id}"' in svg  # the SVG element a click maps back to


def test_nodes_carry_type_shapes_and_parameter_count():
    model = build_module("zoo:resnet20")
    graph = module_graph(model, example_input("zoo:resnet20", batch_size=1))
    conv = next(n for n in graph.nodes if n.module_path == "layer2.0.conv1")
    assert conv.module_type == "Conv2d"
    assert conv.input_shapes == ((1, 16, 8, 8),) and conv.output_shapes == ((1, 32, 4, 4),)
    assert conv.param_count == 32 * 16 * 9
    assert any(n.module_type == "add" and n.kind == "function" for n in graph.nodes)  # residual additions


def test_lower_depth_folds_layers_into_their_blocks():
    model = build_module("zoo:resnet20")
    graph = module_graph(model, example_input("zoo:resnet20", batch_size=1), depth=1)
    paths = {n.module_path for n in graph.nodes if n.module_path}
    assert {"layer1", "layer2", "layer3", "fc"} <= paths
    assert not any(p.startswith("layer1.") for p in paths)
    assert graph.nodes_for("layer1.0.conv1")[0].module_path == "layer1"


def test_expand_nested_draws_blocks_as_clusters():
    model = build_module("zoo:resnet20")
    graph = module_graph(model, example_input("zoo:resnet20", batch_size=1), depth=2, expand_nested=True)
    assert "subgraph cluster_" in graph.dot


def test_tracing_never_moves_or_changes_the_callers_module():
    model = build_module("zoo:mlp?hidden=8")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module_graph(model, example_input("zoo:mlp?hidden=8"), on_meta=True)
    assert all(not t.is_meta for t in model.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_meta_device_models_trace_without_weights():
    model = build_module("zoo:gpt?d_model=32&n_layer=1", device="meta")
    graph = module_graph(model, example_input("zoo:gpt?d_model=32&n_layer=1"))
    assert any(n.module_path == "lm_head" for n in graph.nodes)
    assert SMALL_MODEL_PARAMS > 0


def test_a_forward_that_needs_real_data_falls_back_from_meta():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum().item() > 0:  # .item() cannot run on meta
                return self.proj(x)
            return x

    graph = module_graph(DataDependent(), torch.ones(1, 4), on_meta=True)
    assert any(n.module_path == "proj" for n in graph.nodes)


def test_a_wrong_example_input_is_reported_for_people():
    with pytest.raises(ArchitectureError, match="example input"):
        module_graph(build_module("zoo:mlp?hidden=8"), torch.zeros(2, 5))


@needs_dot
def test_a_factory_file_yields_a_graph(factory_file):
    picture = drive(iter_arch_picture(f"{factory_file}:build?hidden=5"))
    encoder = next(n for n in picture.graph.nodes if n.module_path == "encoder")
    assert encoder.output_shapes == ((1, 5),)
    assert picture.svg


@needs_dot
def test_an_exported_program_yields_a_graph(exported_program):
    path, _ = exported_program
    picture = drive(iter_arch_picture(str(path)))
    assert picture.arch == str(path)
    assert {n.module_type for n in picture.graph.nodes if n.kind == "tensor"} == {"tensor"}
    assert len(picture.graph.nodes) >= 4 and picture.svg


@needs_dot
def test_png_and_svg_rendering_produce_real_images():
    graph = module_graph(build_module("zoo:mlp?hidden=8"), example_input("zoo:mlp?hidden=8"))
    assert render_png(graph.dot, dpi=72)[:4] == b"\x89PNG"
    assert b"<svg" in render_svg(graph.dot)
