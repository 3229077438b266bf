"""The Graph tab draws repeated layers once and expands them when asked."""

from __future__ import annotations

import pytest

from merge_studio.graph.render import dot_available

pytestmark = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")


def test_six_identical_blocks_show_once_and_the_menu_expands_them(qtbot, view):
    view.depth_spin.setValue(2)
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_arch("zoo:gpt?n_layer=6")
    assert view.repeats_button.isVisible()
    assert "blocks.0–5 drawn once (×6)" in view.status_label.text()
    assert view.node_item("blocks.4.attn") is view.node_item("blocks.0.attn") is not None
    assert "drawn once for 6 layers" in view.node_item("blocks.0.attn").toolTip()
    expand = view.repeats_button.menu().actions()[0]
    assert expand.text() == "Show each of the 6 TransformerBlock in blocks"
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        expand.trigger()
    assert view.node_item("blocks.4.attn").node.module_path == "blocks.4.attn"
    collapse = view.repeats_button.menu().actions()[0]
    assert collapse.text() == "Draw the 6 TransformerBlock in blocks once (×6)"
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        collapse.trigger()
    assert view.node_item("blocks.4.attn").node.module_path == "blocks.0.attn"


def test_a_model_without_repeats_hides_the_repeats_button(qtbot, view):
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20000):
        view.show_arch("zoo:mlp")
    assert not view.repeats_button.isVisible()
