"""The window's views working together: align from the Permutations tab, graph overlays and marks,
layer clicks, architectures remembered in recipes, re-basin reports after a merge, the demo."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from merge_studio.core.arch import arch_metadata, build_module
from merge_studio.plots.permutations import BLOCKED_COLOUR
from tests.gui.conftest import load_into

ARCH = "zoo:mlp?in_features=64&hidden=16&num_classes=10"


def write_mlp(path: Path, seed: int, *, with_arch: bool = True) -> Path:
    torch.manual_seed(seed)
    module = build_module(ARCH)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata=arch_metadata(ARCH) if with_arch else None)
    return path


@pytest.fixture
def mlps(tmp_path) -> list[Path]:
    folder = tmp_path / "mlps"
    folder.mkdir()
    return [write_mlp(folder / f"mlp_seed{i}.safetensors", i) for i in range(3)]


def align_in_window(qtbot, window, paths):
    load_into(qtbot, window, paths)
    tab = window.extra_views["Permutations"]
    tab.strip.refresh_models()
    with qtbot.waitSignal(tab.strip.sig_aligned, timeout=20_000) as blocker:
        assert tab.strip.start() is not None
    qtbot.waitUntil(lambda: not tab.strip.running, timeout=10_000)
    return tab, blocker.args[0]


def show_tab(window, title):
    for i in range(window.tabs.count()):
        if window.tabs.tabText(i) == title:
            window.tabs.setCurrentIndex(i)
            return window.tabs.widget(i)
    raise AssertionError(title)


def test_aligning_two_mlps_from_the_tab_fills_the_report_graph_overlay_and_barrier(qtbot, window, mlps):
    tab, outcome = align_in_window(qtbot, window, mlps[:2])
    assert tab.strip.paths() == (mlps[0].absolute(), mlps[1].absolute())
    report = tab.view.report
    assert report is not None and [g["name"] for g in report["groups"]] == ["hidden.0"]
    assert tab.view.current_group == "hidden.0"
    assert tab.view._similarity("hidden.0").shape == (16, 16)  # the provider reached the view
    assert tab.strip.status.text().startswith("Aligned mlp_seed1 to mlp_seed0")
    assert "units moved" in tab.view.summary.text()
    graph = window.extra_views["Graph"]
    assert graph.overlay_names()[-1] == "units permuted" and graph.overlay_combo.currentText() == "units permuted"
    assert set(graph.current_overlay().values) >= {"hidden.0"}
    barrier = window.extra_views["Barrier"]
    aligned = barrier.current_aligned_state()
    assert aligned is not None and torch.equal(aligned["head.bias"], outcome.aligned["head.bias"])
    assert barrier.build_request().aligned_state is aligned


def test_saving_aligned_b_records_the_permutation_and_the_architecture(qtbot, window, mlps, tmp_path):
    tab, outcome = align_in_window(qtbot, window, mlps[:2])
    assert tab.strip.save_button.isEnabled()
    target = tmp_path / "b_aligned.safetensors"
    with qtbot.waitSignal(tab.strip.sig_saved, timeout=10_000):
        tab.strip.save(target)
    qtbot.waitUntil(lambda: not window.runner.is_running("save-aligned"), timeout=5_000)
    from safetensors import safe_open

    with safe_open(str(target), "pt") as f:
        meta = f.metadata()
    assert meta["merge_studio.arch"] == ARCH and "merge_studio.permutation" in " ".join(meta)
    assert meta["merge_studio.aligned_to"] == mlps[0].name
    saved = load_file(str(target))
    perm = torch.as_tensor(outcome.report["groups"][0]["perm"])
    b = load_file(str(mlps[1]))
    assert torch.equal(saved["hidden.0.weight"], b["hidden.0.weight"][perm])


def test_unpermutable_layers_are_marked_in_their_own_colour(qtbot, tmp_path):
    from merge_studio.gui.views.graph_view import GraphView
    from merge_studio.gui.views.permutation_view import layer_marks, layer_overlay

    report = {
        "groups": [{"name": "hidden.0", "size": 16, "moved_fraction": 0.5, "perm": list(range(16)),
                    "members": [{"tensor": "hidden.0.weight", "axis": 0, "offset": 0, "n": 16, "block": 1}]}],
        "unpermuted": [{"node": "head", "reason": "a sort mixes the units", "tensors": ["head.weight"]}],
        "blocked": {"head.weight": ["a sort mixes the units"]},
    }
    view = GraphView()
    qtbot.addWidget(view)
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20_000):
        view.show_arch(ARCH)
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20_000):
        view.set_overlay("units permuted", layer_overlay(report), marks=layer_marks(report))
    graph = view.picture.graph
    head = next(n for n in graph.nodes if n.module_path == "head")
    hidden = next(n for n in graph.nodes if n.module_path == "hidden.0")
    assert graph.fills[head.node_id] == BLOCKED_COLOUR
    assert graph.fills[hidden.node_id] not in (BLOCKED_COLOUR, "white")
    assert b"could not be permuted" in view.picture.svg  # the legend explains the colour
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20_000):  # a share keeps its 0..1 scale
        view.set_overlay("share kept", {"hidden.0": 0.99, "head": 0.98}, vmin=0.0, vmax=1.0)
    legend = view.picture.graph.legend
    assert (legend.vmin, legend.vmax) == (0.0, 1.0)
    with qtbot.waitSignal(view.sig_graph_ready, timeout=20_000):  # another overlay: no marks
        view.set_overlay("relative change", {"head": 0.1, "hidden.0": 0.2})
    assert view.picture.graph.fills[head.node_id] != BLOCKED_COLOUR
    view.set_key_tree({"head.weight": (10, 16), "hidden.0.weight": (16, 64)})
    view.overlay_combo.setCurrentText("units permuted")
    index = view._tree_index("head")
    assert index is not None and index.data(0x8 | 0) is not None  # BackgroundRole is 8
    assert index.data(8).color().name() == BLOCKED_COLOUR.lower()
    view.shutdown()


def test_clicking_a_graph_node_opens_its_group_and_its_tensors(qtbot, window, mlps):
    from PySide6.QtCore import Qt

    tab, _ = align_in_window(qtbot, window, mlps[:2])
    window.model_list.select_id(window.session.models[0].id)
    graph = window.extra_views["Graph"]
    with qtbot.waitSignal(graph.sig_graph_ready, timeout=20_000):
        show_tab(window, "Graph")
    tab.view.select_group("hidden.0")
    tab.view.groups.clearSelection()
    tab.view._current = None
    item = graph.node_item("head")
    assert item is not None
    with qtbot.waitSignal(graph.sig_layer_selected, timeout=2_000) as blocker:
        graph.graphics.centerOn(item)
        pos = graph.graphics.mapFromScene(item.sceneBoundingRect().center())
        qtbot.mouseClick(graph.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == ["head"]
    assert tab.view.current_group == "hidden.0"  # head's inputs are hidden.0's units
    # the Graph tab describes the node itself; the Inspector's filter is left alone
    properties = graph.properties
    assert properties.tensor_names == ["head.bias", "head.weight"]
    assert "head" in properties.title.text() and "Linear" in properties.details.text()
    assert window.inspector.filter_edit.text() == ""
    qtbot.waitUntil(lambda: properties.stats_table.rowCount() == 4, timeout=10_000)  # 2 tensors × 2 models
    models = {properties.stats_table.item(r, 1).text() for r in range(4)}
    assert models == {m.name for m in window.session.models[:2]}


def test_the_arch_chosen_in_the_graph_is_saved_in_the_recipe_and_restored(qtbot, window, tmp_path):
    from merge_studio.gui.main_window import MainWindow

    folder = tmp_path / "plain"
    folder.mkdir()
    paths = [write_mlp(folder / f"m{i}.safetensors", i, with_arch=False) for i in range(2)]
    load_into(qtbot, window, paths)
    window.model_list.select_id(window.session.models[0].id)
    graph = window.extra_views["Graph"]
    with qtbot.waitSignal(graph.sig_graph_ready, timeout=20_000):
        show_tab(window, "Graph")
    with qtbot.waitSignal(graph.sig_graph_ready, timeout=20_000):
        graph.choose_arch("zoo:mlp?hidden=16")
    assert window.session.models[0].arch == "zoo:mlp?hidden=16"
    window.method_panel.set_output_path(tmp_path / "out.safetensors")
    recipe = window.save_recipe(tmp_path / "r.yaml")
    assert yaml.safe_load(recipe.read_text())["arch"] == "zoo:mlp?hidden=16"

    other = MainWindow()
    qtbot.addWidget(other)
    try:
        with qtbot.waitSignal(other.sig_models_loaded, timeout=10_000):
            assert other.open_recipe(recipe)
        assert other.session.output.arch == "zoo:mlp?hidden=16"
        assert [m.arch for m in other.session.models] == ["zoo:mlp?hidden=16"] * 2
        assert other.session.arch_for(other.session.models[0]) == "zoo:mlp?hidden=16"
    finally:
        other.close()


def test_an_arch_typed_in_the_align_strip_is_remembered_for_a_and_b(qtbot, window, tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    paths = [write_mlp(folder / f"m{i}.safetensors", i, with_arch=False) for i in range(2)]
    load_into(qtbot, window, paths)
    strip = window.extra_views["Permutations"].strip
    strip.refresh_models()
    assert strip.arch.text().startswith("zoo:mlp")  # detected from the shapes
    strip.arch.clear()
    qtbot.keyClicks(strip.arch, "zoo:mlp?hidden=16")
    with qtbot.waitSignal(strip.sig_aligned, timeout=20_000):
        strip.start()
    qtbot.waitUntil(lambda: not strip.running, timeout=10_000)
    assert [m.arch for m in window.session.models] == ["zoo:mlp?hidden=16"] * 2
    assert window.session.to_recipe().arch == "zoo:mlp?hidden=16"


def test_a_bad_architecture_shows_the_reason_and_keeps_the_tab_usable(qtbot, window, mlps):
    load_into(qtbot, window, mlps[:2])
    strip = window.extra_views["Permutations"].strip
    strip.refresh_models()
    strip.arch.setText("zoo:mlp?hidden=32")
    with qtbot.waitSignal(strip.sig_failed, timeout=20_000):
        strip.start()
    qtbot.waitUntil(lambda: not strip.running, timeout=10_000)
    assert "hidden" in strip.status.text() and strip.run_button.isEnabled()
    assert window.error_dialogs
    for dialog in list(window.error_dialogs):
        dialog.close()


def merge(qtbot, window, timeout=30_000):
    with qtbot.waitSignal(window.sig_merge_finished, timeout=timeout) as blocker:
        assert window.start_merge() is not None, window.log_panel.text()
    qtbot.waitUntil(lambda: window.merge_worker is None, timeout=timeout)
    assert blocker.args[0] is not None, window.log_panel.text()
    return blocker.args[0]


def test_a_weight_matching_merge_shows_its_report_and_offers_the_graph_overlays(qtbot, window, mlps, tmp_path):
    load_into(qtbot, window, mlps[:2])
    window.method_panel.select_method("weight_matching")
    window.method_panel.set_output_path(tmp_path / "wm.safetensors")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    result = merge(qtbot, window)
    assert result.report is not None
    view = window.extra_views["Permutations"].view
    assert view.report is not None and view.report["groups"][0]["name"] == "hidden.0"
    graph = window.extra_views["Graph"]
    qtbot.waitUntil(lambda: {"relative change", "cosine similarity"} <= set(graph.overlay_names()), timeout=10_000)
    assert "units permuted" in graph.overlay_names()
    assert graph.overlay_combo.currentText() == "relative change"  # the others are offered, not forced
    assert all(v > 0 for v in graph._overlays["relative change"].values.values())
    cosine = graph._overlays["cosine similarity"].values
    assert set(cosine) == {"hidden.0", "head"} and all(-1.0 <= v <= 1.0 for v in cosine.values())
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=10_000)


def test_a_ties_merge_offers_the_share_of_task_vector_mass_kept(qtbot, window, mlps, tmp_path):
    load_into(qtbot, window, mlps)
    window.set_base(window.session.models[0].id)
    window.method_panel.select_method("ties")
    window.method_panel.set_output_path(tmp_path / "ties.safetensors")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    merge(qtbot, window)
    graph = window.extra_views["Graph"]
    qtbot.waitUntil(lambda: "task-vector mass kept" in graph.overlay_names(), timeout=10_000)
    kept = graph._overlays["task-vector mass kept"].values
    assert kept and all(0.0 <= v <= 1.0 for v in kept.values())
    graph.overlay_combo.setCurrentText("task-vector mass kept")  # each overlay can be shown
    assert graph.current_overlay().title == "task-vector mass kept: scale 0 to 1"  # a share: fixed scale
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=10_000)


def test_the_demo_opens_two_mlps_with_weight_matching_and_the_barrier_tab_ready(qtbot, window, mlps, monkeypatch):
    import merge_studio.core.demo as demo

    models = [SimpleNamespace(path=p, arch="zoo:mlp") for p in mlps]

    def fake_demo(folder=None, *, cancel=None, force=False):
        yield from ()
        return SimpleNamespace(models=models, paths=lambda arch_prefix=None: [m.path for m in models])

    monkeypatch.setattr(demo, "iter_demo_models", fake_demo)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        assert window.load_demo() is not None
    assert [m.path for m in window.session.models] == mlps[:2]
    assert window.session.method == "weight_matching" and window.session.output.arch == "zoo:mlp"
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)  # nothing left to choose
    barrier = show_tab(window, "Barrier")
    assert barrier.run_button.isEnabled() and barrier.model_a.count() == 2
    assert barrier.model_b.currentData() == str(mlps[1])


def test_after_merging_the_demo_mlps_the_barrier_tab_evaluates_inputs_and_merged(qtbot, window, mlps, tmp_path):
    load_into(qtbot, window, mlps[:2])
    window.method_panel.select_method("simple_average")
    out = tmp_path / "avg.safetensors"
    window.method_panel.set_output_path(out)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=20_000):
        merge(qtbot, window)
    barrier = show_tab(window, "Barrier")
    assert barrier.merged.currentData() == str(out)
    barrier.split_train.setChecked(False)
    with qtbot.waitSignal(barrier.sig_finished, timeout=30_000) as blocker:
        barrier.evaluate_button.click()
    scores = blocker.args[0]
    assert scores is not None and len(scores.names) == 3
    assert barrier.scores_page.table.rowCount() >= 3
    qtbot.waitUntil(lambda: barrier.worker is None, timeout=5_000)


def _menu_action(menu, starts_with):
    return next(a for a in menu.actions() if a.text().startswith(starts_with))


def test_two_models_selected_compare_in_the_graph_and_align_from_the_list_menu(qtbot, window, mlps):
    from PySide6.QtCore import QItemSelectionModel

    load_into(qtbot, window, mlps[:2])
    listing = window.model_list
    listing.selectRow(0)
    listing.selectionModel().select(listing.model().index(1, 0),
                                    QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
    menu = listing.build_context_menu(listing.model().index(1, 0))
    graph = window.extra_views["Graph"]
    _menu_action(menu, "Compare the two").trigger()
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Graph"
    qtbot.waitUntil(lambda: graph.overlay_combo.currentText() == "difference ‖A − B‖/‖B‖", timeout=10_000)
    assert set(graph.current_overlay().values) == {"hidden.0", "head"}
    qtbot.waitUntil(lambda: "cosine similarity" in graph.overlay_names(), timeout=10_000)
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=20_000)  # the two are also scored side by side

    strip = window.extra_views["Permutations"].strip
    with qtbot.waitSignal(strip.sig_aligned, timeout=20_000) as blocker:
        _menu_action(menu, "Align the second").trigger()
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Permutations"
    assert blocker.args[0].names == (mlps[0].name, mlps[1].name)
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=10_000)
    menu.deleteLater()


def test_screenshot_jobs_run_before_the_picture(qtbot, window, mlps, tmp_path):
    from merge_studio.gui.app import run_jobs

    load_into(qtbot, window, mlps[:2])
    window.method_panel.select_method("simple_average")
    window.method_panel.set_output_path(tmp_path / "avg.safetensors")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    problems = run_jobs(window, ["align", "merge", "fly"], timeout_ms=30_000)
    assert problems == ["unknown job 'fly' (choose from align, merge, barrier, evaluate, test)"]
    assert window.extra_views["Permutations"].view.report is not None
    assert (tmp_path / "avg.safetensors").exists() and not window.runner.running()


CUMSUM_NET = '''
import torch
from torch import nn

example_input_shape = (6,)


class CumsumNet(nn.Module):
    """torch.cumsum over hidden units depends on their order: the spec cannot permute through it."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = torch.cumsum(torch.relu(self.fc2(h)), dim=1)
        return self.fc3(h)


def build():
    return CumsumNet()
'''


def test_aligning_a_model_with_an_unpermutable_op_marks_those_layers_in_the_graph(qtbot, window, tmp_path):
    factory = tmp_path / "cumsum_net.py"
    factory.write_text(CUMSUM_NET)
    arch = f"{factory}:build"
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        module = build_module(arch)
        path = tmp_path / f"cumsum_{seed}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path),
                  metadata=arch_metadata(arch))
        paths.append(path)
    tab, outcome = align_in_window(qtbot, window, paths)
    assert outcome.report["unpermuted"], "cumsum must stop the spec"
    graph = window.extra_views["Graph"]
    marks = graph.current_marks()
    assert marks and set(marks.values()) == {BLOCKED_COLOUR}
    assert "not be permuted" in tab.view.summary.text()
    window.model_list.select_id(window.session.models[0].id)
    with qtbot.waitSignal(graph.sig_graph_ready, timeout=20_000):
        show_tab(window, "Graph")
    drawn = graph.picture.graph
    marked = [n for n in drawn.nodes if drawn.fills.get(n.node_id) == BLOCKED_COLOUR]
    assert {n.module_path for n in marked} == set(marks)


def test_a_merge_many_merge_shows_the_model_that_moved_most(qtbot, window, mlps, tmp_path):
    load_into(qtbot, window, mlps)
    window.method_panel.select_method("merge_many")
    window.method_panel.set_output_path(tmp_path / "mm.safetensors")
    qtbot.waitUntil(lambda: window.method_panel.merge_button.isEnabled(), timeout=5_000)
    result = merge(qtbot, window)
    assert result.report["format"] == "merge_studio.merge_many_report"
    view = window.extra_views["Permutations"].view
    shown = view.report
    assert shown["shown_model"] in {p.name for p in mlps}
    group = shown["groups"][0]
    assert group["perm"] == result.report["perms"][shown["shown_model"]][group["name"]]
    assert view.current_group == group["name"]
    assert view.summary.text().startswith(f"{shown['shown_model']}: 1 groups")
    assert any("the model that moved most" in text for _level, text in window.log_panel.lines)
    qtbot.waitUntil(lambda: not window.runner.running(), timeout=10_000)


def test_the_align_strip_follows_the_model_list_and_prefers_base_and_other(qtbot, window, mlps):
    load_into(qtbot, window, mlps)
    strip = window.extra_views["Permutations"].strip
    assert strip.model_a.count() == 3 and strip.paths() == (mlps[0].absolute(), mlps[1].absolute())
    window.remove_models([window.session.models[0].id])
    assert strip.model_a.count() == 2 and strip.paths()[0] == mlps[1].absolute()
    strip.model_a.setCurrentIndex(-1)  # nothing kept: the preference decides
    strip.model_b.setCurrentIndex(-1)
    window.set_base(window.session.models[1].id)
    assert strip.paths() == (mlps[2].absolute(), mlps[1].absolute())
    window.method_panel.device_combo.setCurrentIndex(window.method_panel.device_combo.findData("cpu"))
    assert strip.device_provider() == window.session.output.device


def test_auto_alignment_on_digits_says_which_method_it_kept_and_how_much_the_two_agree(qtbot, window, mlps):
    tab, outcome = align_in_window(qtbot, window, mlps[:2])
    assert tab.strip.options.method() == "auto" and tab.strip.options.data_source() == "digits"  # the defaults
    assert outcome.report["choice"] == "auto" and set(outcome.report["candidates"]) == {"weight", "activation"}
    assert "Auto kept" in tab.view.summary.text()
    header = tab.view.groups.headerItem()
    assert [header.text(i) for i in range(header.columnCount())] == ["Group", "Units", "Moved", "Agree"]
    agree = tab.view.groups.topLevelItem(0).text(3)
    assert agree.endswith("%") and 0 <= int(agree[:-1]) <= 100


def test_weight_matching_without_data_needs_nothing_but_the_weights(qtbot, window, mlps):
    window.build_deferred_views()
    strip = window.extra_views["Permutations"].strip
    strip.options.set_method("weight")
    strip.options.set_data_source(None)
    tab, outcome = align_in_window(qtbot, window, mlps[:2])
    assert outcome.report["method"] == "weight" and "candidates" in outcome.report
    assert set(outcome.report["candidates"]) == {"weight"} and "agreement" not in outcome.report
    assert tab.view.groups.headerItem().columnCount() == 3
