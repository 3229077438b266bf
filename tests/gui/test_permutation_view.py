"""The Permutations tab: groups, matrices, convergence, unpermutable points, saving, graph hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merge_studio.core.progress import drive
from merge_studio.core.rebasin.align import iter_align
from merge_studio.core.rebasin.apply import apply_permutation
from merge_studio.core.rebasin.similarity import SimilarityProvider
from merge_studio.core.rebasin.spec import spec_from_module
from merge_studio.gui.views.permutation_view import PermutationView, group_for_layer, layer_marks, layer_overlay
from tests.core.rebasin.models import SortsHiddenUnitsLike, TinyResNet, random_perms, randomize_batchnorm

pytestmark = pytest.mark.gui


@pytest.fixture
def resnet_alignment():
    torch.manual_seed(0)
    model = randomize_batchnorm(TinyResNet())
    x = torch.randn(2, 1, 8, 8)
    spec = spec_from_module(model, x)
    state_a = model.state_dict()
    state_b = apply_permutation(spec, state_a, random_perms(spec, 3))
    result = drive(iter_align(model, state_a, state_b, x, device="cpu"))
    return result, SimilarityProvider(result.spec, state_a, state_b, result.matching.perms)


def test_before_any_alignment_the_tab_says_what_will_appear(qtbot):
    view = PermutationView()
    qtbot.addWidget(view)
    assert view.stack.currentWidget() is view.empty
    assert "Align two models" in view.empty.text.text()


def test_a_report_lists_every_group_and_opens_the_first_groups_matrices(qtbot, resnet_alignment):
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    names = [view.groups.topLevelItem(i).text(0) for i in range(view.groups.topLevelItemCount())]
    assert names == [g["name"] for g in result.report["groups"]]
    assert view.current_group == names[0]
    images = [ax for ax in view.figure("group").axes if ax.images]
    assert len(images) == 3  # permutation, similarity before, similarity after
    after = np.asarray(images[2].images[0].get_array())
    assert np.array_equal(after.argmax(axis=1), np.arange(after.shape[0]))
    assert view.members.count() == len(result.report["groups"][0]["members"])
    assert view.figure("convergence").axes[0].lines


def test_selecting_a_group_emits_its_name_and_redraws(qtbot, resnet_alignment):
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    target = result.report["groups"][2]["name"]
    with qtbot.waitSignal(view.sig_group_selected) as blocker:
        assert view.select_group(target)
    assert blocker.args == [target]
    assert target in view.figure("group")._suptitle.get_text()


def test_clicking_a_layer_in_the_graph_opens_the_group_of_its_units(qtbot, resnet_alignment):
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    expected = group_for_layer(result.report, "layer1.0.bn1")
    with qtbot.waitSignal(view.sig_group_selected):
        assert view.select_layer("layer1.0.bn1")
    assert view.current_group == expected == "layer1.0.conv1"


def test_unpermutable_points_are_listed_in_a_distinct_colour_and_marked_for_the_graph(qtbot):
    model = SortsHiddenUnitsLike()
    x = torch.randn(2, 4)
    result = drive(iter_align(model, model.state_dict(), SortsHiddenUnitsLike().state_dict(), x, device="cpu"))
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report)
    last = view.groups.topLevelItem(view.groups.topLevelItemCount() - 1)
    assert "cumsum" in last.text(0) and last.text(2) == "not permuted"
    assert last.foreground(0).color().name() == "#d55e00"
    assert "could not be permuted" in view.summary.text()
    assert layer_marks(result.report) == {"fc2": "#D55E00"}
    overlay = layer_overlay(result.report)
    assert np.isnan(overlay["fc2"]) and 0.0 <= overlay["fc1"] <= 1.0


def test_each_picture_can_be_saved(qtbot, tmp_path, resnet_alignment):
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    for which in ("group", "convergence", "overview"):
        with qtbot.waitSignal(view.sig_saved):
            path = view.save_picture(which, tmp_path / f"{which}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_export_writes_the_shown_groups_permutation_as_csv(qtbot, tmp_path, resnet_alignment, monkeypatch):
    import csv

    from PySide6.QtWidgets import QFileDialog

    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    target = tmp_path / "perm.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    with qtbot.waitSignal(view.sig_saved):
        view.save_button.click()
    rows = list(csv.reader(target.read_text().splitlines()))
    group = result.report["groups"][0]
    assert rows[0][0] == "group" and len(rows) == 1 + len(group["perm"])
    assert [int(r[2]) for r in rows[1:]] == group["perm"]


def test_clearing_the_report_returns_to_the_empty_state(qtbot, resnet_alignment):
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.set_report(result.report, provider)
    view.set_report(None)
    assert view.stack.currentWidget() is view.empty and view.groups.topLevelItemCount() == 0


def test_group_pictures_are_refitted_when_the_canvas_gets_narrower(qtbot, resnet_alignment):
    """The screenshot of the demo ResNet showed overlapping titles: they were fitted to the
    canvas width at the first draw, before the window had its final size."""
    result, provider = resnet_alignment
    view = PermutationView()
    qtbot.addWidget(view)
    view.resize(1600, 500)
    view.show()
    qtbot.waitExposed(view)
    view.set_report(result.report, provider)

    def pictures():
        view.group_canvas.flush()  # the figure is redrawn on the render thread: read it between renders
        return [ax for ax in view.figure("group").axes if ax.images]

    assert not any("\n" in ax.title.get_text() for ax in pictures())
    assert [ax.get_subplotspec().rowspan.start for ax in pictures()] == [0, 0, 0]  # wide: side by side
    view.resize(800, 700)
    qtbot.waitUntil(lambda: all("\n" in ax.title.get_text() for ax in pictures()))
    # tall: the permutation above, the similarity matrices below
    assert [ax.get_subplotspec().rowspan.start for ax in pictures()] == [0, 1, 1]
