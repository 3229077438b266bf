"""The Graph tab: click a layer, colour by a value, search, export, and cope without Graphviz."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import QPoint, Qt
from safetensors.torch import save_file

from merge_studio.core.arch import build_module
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.graph.render import dot_available
from merge_studio.gui.views.graph_view import EMPTY_TEXT

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")


@pytest.fixture
def untyped_checkpoint(tmp_path):
    """A checkpoint no architecture recognises: only its module tree can be shown."""
    path = tmp_path / "custom.safetensors"
    save_file({"encoder.proj.weight": torch.zeros(8, 4), "encoder.proj.bias": torch.zeros(8),
               "decoder.out.weight": torch.zeros(2, 8)}, path)
    with open_checkpoint(path) as ckpt:
        yield ckpt


def _show(qtbot, view, arch):
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_arch(arch)


def _click(qtbot, view, module_path):
    item = view.node_item(module_path)
    assert item is not None, module_path
    view.graphics.centerOn(item)
    point = view.graphics.mapFromScene(item.sceneBoundingRect().center())
    with qtbot.waitSignal(view.sig_layer_selected, timeout=3000) as blocker:
        qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=point)
    return blocker.args[0]


def test_empty_graph_tab_explains_what_it_will_show(view):
    assert view.stack.currentWidget() is view.empty_label
    assert view.empty_label.text() == EMPTY_TEXT


@needs_dot
def test_clicking_a_node_selects_that_layer(qtbot, view):
    _show(qtbot, view, "zoo:resnet20")
    assert _click(qtbot, view, "layer2.0.conv1") == "layer2.0.conv1"
    assert _click(qtbot, view, "fc") == "fc"


@needs_dot
def test_hovering_a_node_tells_type_shapes_and_parameters(qtbot, view):
    _show(qtbot, view, "zoo:resnet20")
    tip = view.node_item("layer1.0.conv1").toolTip()
    assert "Conv2d" in tip and "1×16×8×8" in tip and "2.3k parameters" in tip


@needs_dot
def test_overlay_colours_the_layers_it_has_values_for(qtbot, view):
    _show(qtbot, view, "zoo:mlp?hidden=16,16")
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.set_overlay("relative change", {"hidden.0": 0.0, "head": 1.0})
    graph = view.picture.graph
    fill = {n.module_path: graph.fills[n.node_id] for n in graph.nodes if n.module_path}
    assert fill["hidden.0"] == "#440154"  # viridis low end
    assert fill["head"] == "#fde725"  # viridis high end
    assert fill["hidden.1"] == "#f4f4f4"  # no value
    assert view.picture.graph.legend.title == "relative change: from 0 (no change) to 1"  # the legend says the scale
    assert view.overlay_combo.currentText() == "relative change"


@needs_dot
def test_search_highlights_and_centres_the_matching_layer(qtbot, view):
    _show(qtbot, view, "zoo:gpt?n_layer=2&d_model=32")
    view.search_edit.setText("blocks.1.attn.v_proj")
    item = view.node_item("blocks.1.attn.v_proj")
    assert item.pen().color().name() == "#e8590c"
    centre = view.graphics.mapToScene(view.graphics.viewport().rect().center())
    assert item.sceneBoundingRect().adjusted(-200, -200, 200, 200).contains(centre)


@needs_dot
def test_depth_spin_redraws_with_fewer_nodes(qtbot, view):
    _show(qtbot, view, "zoo:resnet20")
    deep = len(view.picture.graph.nodes)
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.depth_spin.setValue(1)
    assert len(view.picture.graph.nodes) < deep
    assert view.node_item("layer1.0.conv1").node.module_path == "layer1"


@needs_dot
def test_export_writes_svg_and_png(qtbot, view, tmp_path):
    _show(qtbot, view, "zoo:vgg?widths=8")
    with qtbot.waitSignal(view.sig_exported, timeout=5000):
        view.export(tmp_path / "g.svg")
    with qtbot.waitSignal(view.sig_exported, timeout=20000):
        view.export(tmp_path / "g.png")
    assert (tmp_path / "g.svg").read_bytes().lstrip().startswith(b"<?xml")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_without_architecture_shows_its_module_tree(qtbot, view, untyped_checkpoint):
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_checkpoint(untyped_checkpoint)
    assert view.stack.currentWidget() is view.tree_view
    model = view.tree_model
    top = {model.item(r, 0).text(): model.item(r, 2).text() for r in range(model.rowCount())}
    assert top == {"encoder": "40", "decoder": "16"}


def test_tree_rows_are_coloured_by_the_overlay_and_clickable(qtbot, view, untyped_checkpoint):
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_checkpoint(untyped_checkpoint)
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    from merge_studio.graph.overlay import OverlayScale

    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.set_overlay("cosine", {"encoder.proj": 0.2, "decoder.out": 0.9}, scale=OverlayScale.share())
    model = view.tree_model

    def rows():
        return {model.item(r, 0).text(): model.item(r, 0) for r in range(model.rowCount())}

    proj = rows()["encoder"].child(0, 0)
    # a similarity keeps its meaning: 0.2 is a fifth of the way up the 0-1 scale, not its bottom
    assert proj.text() == "proj" and proj.background().color().name() == to_hex(colormaps["viridis"](0.2))
    assert rows()["decoder"].background().color().name() == to_hex(colormaps["viridis"](0.9))
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.stretch_check.setChecked(True)  # asked for: the values' own range over the whole map
    proj = rows()["encoder"].child(0, 0)
    assert proj.background().color().name() == "#440154"
    assert rows()["decoder"].background().color().name() == "#fde725"
    with qtbot.waitSignal(view.sig_layer_selected) as blocker:
        view.tree_view.clicked.emit(proj.index())
    assert blocker.args == ["encoder.proj"]


def test_without_graphviz_the_tab_says_how_to_install_it_and_shows_the_tree(qtbot, view, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert not dot_available()
    state = build_module("zoo:mlp?hidden=8").state_dict()
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_checkpoint(state)  # recognised as the zoo MLP, but cannot be laid out
    assert view.stack.currentWidget() is view.tree_view
    assert not view.banner.isHidden()
    assert "sudo apt-get install graphviz" in view.banner.text()
    assert view.tree_model.rowCount() == 2  # hidden, head


@needs_dot
def test_choosing_an_architecture_redraws_the_checkpoint_as_a_graph(qtbot, view, tmp_path):
    path = tmp_path / "vgg.safetensors"
    save_file(build_module("zoo:vgg?widths=8").state_dict(), path)
    with open_checkpoint(path) as ckpt:
        with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
            view.show_checkpoint(ckpt, arch="")  # "" = module tree, even when recognisable
        assert view.stack.currentWidget() is view.tree_view
        with qtbot.waitSignals([view.sig_arch_chosen, view.sig_graph_ready], timeout=20000):
            view.choose_arch("zoo:vgg?widths=8")
        assert view.stack.currentWidget() is view.graphics
        assert view.node_item("blocks.0.conv") is not None


def test_a_wrong_architecture_is_explained_and_the_tree_still_shows(qtbot, view, untyped_checkpoint):
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_checkpoint(untyped_checkpoint, arch="zoo:resnet20")
    assert view.stack.currentWidget() is view.tree_view
    assert "missing from the checkpoint" in view.banner.text()


def test_clicking_the_background_does_not_select_a_layer(qtbot, view):
    with qtbot.assertNotEmitted(view.sig_layer_selected):
        qtbot.mouseClick(view.graphics.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(5, 5))


def test_without_graphviz_an_architecture_shows_its_module_tree(qtbot, view, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_arch("zoo:resnet20")
    assert view.stack.currentWidget() is view.tree_view
    assert "brew install graphviz" in view.banner.text()
    top = {view.tree_model.item(r, 0).text() for r in range(view.tree_model.rowCount())}
    assert {"conv1", "layer1", "layer2", "layer3", "fc"} <= top


def test_exporting_without_graphviz_explains_instead_of_crashing(qtbot, view, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_arch("zoo:mlp?hidden=8")
    with qtbot.waitSignal(view.sig_failed, timeout=20000) as blocker:
        view.export(tmp_path / "g.png")
    assert "Graphviz" in blocker.args[0] and not (tmp_path / "g.png").exists()


@needs_dot
def test_overlay_values_are_computed_off_the_gui_thread_after_a_merge(qtbot, view, tmp_path):
    from merge_studio.core.analysis import iter_layer_relative_change

    spec = "zoo:mlp?hidden=8"
    state = build_module(spec).state_dict()
    save_file(state, tmp_path / "a.safetensors")
    save_file({k: v * (2 if k.startswith("head") else 1) for k, v in state.items()}, tmp_path / "m.safetensors")
    with open_checkpoint(tmp_path / "a.safetensors") as a, open_checkpoint(tmp_path / "m.safetensors") as merged:
        with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
            view.show_checkpoint(merged)
        with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
            view.request_overlay("relative change", lambda cancel: iter_layer_relative_change(a, merged, cancel))
    graph = view.picture.graph
    fills = {n.module_path: graph.fills[n.node_id] for n in graph.nodes if n.module_path}
    assert fills["head"] == "#fde725" and fills["hidden.0"] == "#440154"  # changed by 100% vs 0%


def test_a_key_tree_can_be_shown_directly(view, untyped_checkpoint):
    view.set_key_tree(untyped_checkpoint)
    assert view.stack.currentWidget() is view.tree_view
    assert view.tree_model.rowCount() == 2


@needs_dot
def test_the_svg_is_parsed_on_the_layout_thread_and_its_renderer_handed_to_the_gui(qtbot, view, monkeypatch):
    # parsing a ResNet's SVG and placing its nodes took 15-30 ms: a stall when done on the GUI thread
    import threading

    from PySide6.QtCore import QCoreApplication

    from merge_studio.gui.views import graph_scene

    parsed_on: list[str] = []
    real = graph_scene.prepare_scene
    monkeypatch.setattr(graph_scene, "prepare_scene", lambda picture: parsed_on.append(threading.current_thread().name) or real(picture))
    _show(qtbot, view, "zoo:resnet20")
    assert parsed_on and threading.main_thread().name not in parsed_on
    assert view._renderer.thread() is QCoreApplication.instance().thread()  # noqa: SLF001 - where it lives now
    on_gui = real(view.picture)
    assert set(on_gui.nodes) == {n for n in view._items}  # noqa: SLF001 - every node clickable
    item = view.node_item("layer1.0.conv1")
    assert item.rect() == on_gui.nodes[item.node.node_id][0]
    assert _click(qtbot, view, "layer1.0.conv1") == "layer1.0.conv1"
