"""The Graph tab's module tree of a Stable Diffusion checkpoint: parts, then blocks in order."""

from __future__ import annotations

from merge_studio.graph.key_tree import key_tree, key_tree_graph
from merge_studio.graph.overlay import layer_value
from tests.sd_models import make_sd_state


def test_an_sdxl_tree_is_grouped_into_parts_and_blocks_in_order():
    tree = key_tree({k: tuple(v.shape) for k, v in make_sd_state("sdxl", compact=True).items()}, "xl")
    assert [c.name for c in tree.children.values()] == [
        "UNet · model.diffusion_model", "Text encoders · conditioner.embedders", "VAE · first_stage_model"]
    unet = next(iter(tree.children.values()))
    assert [c.name.split(" · ")[0] for c in unet.children.values()] == [
        "Time embedding (IN00)", "Class embedding (IN00)", "Input blocks (IN00–IN08)", "M00",
        "Output blocks (OUT00–OUT08)", "Output layer (OUT08)"]
    outputs = list(unet.children.values())[4]
    assert [c.path for c in outputs.children.values()][-2:] == [
        "model.diffusion_model.output_blocks.7", "model.diffusion_model.output_blocks.8"]


def test_grouped_nodes_keep_their_module_paths_for_overlays_and_clicks():
    tree = key_tree({k: tuple(v.shape) for k, v in make_sd_state("sd1", compact=True).items()}, "sd")
    values = {"model.diffusion_model.input_blocks.4.1.proj_in": 2.0, "model.diffusion_model.output_blocks.3.0.skip_connection": 4.0}
    unet = next(iter(tree.children.values()))
    assert unet.path == "model.diffusion_model" and layer_value(unet.path, values) == 3.0
    graph = key_tree_graph(tree, depth=3, title="sd")
    assert any(n.label.startswith("<<B>IN04 · 4</B>") and n.module_path.endswith("input_blocks.4") for n in graph.nodes)
