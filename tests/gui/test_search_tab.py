"""The Search tab: trials reach the live plot and the best table, cancel keeps them, Merge with these writes."""

from __future__ import annotations

import pytest
import yaml

from merge_studio.core.recipe import ModelEntry, Recipe
from merge_studio.gui.plot_canvas import wait_for_plots
from merge_studio.gui.views.search import SearchTab
from tests.digit_tasks import small_suite

pytestmark = pytest.mark.gui
pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return small_suite(tmp_path_factory.mktemp("digit-tasks"))


@pytest.fixture()
def tab(qtbot, suite, tmp_path):
    def recipe() -> Recipe:
        return Recipe(method="task_arithmetic", base=str(suite.base), arch=suite.arch, hash_sources=False,
                      output=str(tmp_path / "merged.safetensors"), params={"lambda": 1.0},
                      models=[ModelEntry(path=str(p), params={"weight": 0.3}) for p in suite.models])

    widget = SearchTab(recipe_provider=recipe)
    qtbot.addWidget(widget)
    widget.resize(1024, 768)
    widget.show()
    widget.params_edit.setText("lambda=0.2:1.5 weight=0:1")
    widget.objectives_edit.setText("accuracy:" + ",".join(str(p) for p in suite.data) + "@train")
    widget.workers_spin.setValue(0)  # trials on the job's thread: no process start-up in a test
    yield widget
    widget.runner.shutdown()


def test_trials_reach_the_live_plot_and_the_best_table(tab, qtbot, tmp_path):
    tab.trials_spin.setValue(4)
    with qtbot.waitSignal(tab.sig_finished, timeout=60_000):
        assert tab.start() is not None
        assert not tab.start_button.isEnabled() and tab.cancel_button.isEnabled()
    assert tab.plot.trial_count == 4
    assert tab.best_table.rowCount() == 4
    values = [float(tab.best_table.item(r, 1).text()) for r in range(4)]
    assert values == sorted(values, reverse=True)  # accuracy: the best first
    assert tab.selected_trial().number == int(tab.best_table.item(0, 0).text())
    assert set(tab.importance) == {"lambda", "models.0.weight", "models.1.weight", "models.2.weight"}
    assert (tmp_path / "merged.safetensors.search.db").is_file()
    assert tab.start_button.isEnabled() and not tab.cancel_button.isEnabled()
    assert wait_for_plots()
    axes = tab.plot.axes
    assert len(axes.collections[0].get_offsets()) == 4 and axes.get_xlabel() == "trial"
    tab.grab().save(str(tmp_path / "search_tab.png"))


def test_a_resumed_search_shows_the_earlier_trials_first(tab, qtbot):
    tab.trials_spin.setValue(2)
    with qtbot.waitSignal(tab.sig_finished, timeout=60_000):
        tab.start()
    tab.trials_spin.setValue(3)
    with qtbot.waitSignal(tab.sig_trial, timeout=60_000):
        tab.start()
    assert tab.plot.trial_count == 3  # two read back from the study, then the new one
    qtbot.waitUntil(lambda: not tab.running, timeout=60_000)


def test_cancel_stops_the_search_and_keeps_the_finished_trials(tab, qtbot):
    tab.trials_spin.setValue(200)
    with qtbot.waitSignal(tab.sig_trial, timeout=60_000):
        tab.start()
    with qtbot.waitSignal(tab.sig_finished, timeout=60_000):
        tab.cancel()
    assert 1 <= len(tab.result.trials) < 200
    assert "cancelled" in tab.status.text() or "trials in" in tab.status.text()
    assert tab.start_button.isEnabled()


def test_merge_with_these_writes_the_chosen_trials_model_and_recipe(tab, qtbot, tmp_path):
    tab.trials_spin.setValue(3)
    with qtbot.waitSignal(tab.sig_finished, timeout=60_000):
        tab.start()
    chosen = tab.selected_trial()
    out = tmp_path / "chosen.safetensors"
    with qtbot.waitSignal(tab.sig_merged, timeout=60_000) as merged:
        tab.merge_selected(out)
    assert merged.args[0] == out and out.is_file()
    saved = yaml.safe_load((tmp_path / "chosen.safetensors.recipe.yaml").read_text())
    assert saved["params"]["lambda"] == pytest.approx(chosen.params["lambda"])
    assert saved["models"][1]["params"]["weight"] == pytest.approx(chosen.params["models.1.weight"])


def test_a_recipe_without_an_output_asks_for_one(tab):
    tab.recipe_provider = lambda: Recipe(method="lerp", models=[ModelEntry(path="a"), ModelEntry(path="b")])
    tab.params_edit.setText("t=0:1")
    assert tab.start() is None and "output file" in tab.status.text()


def test_a_bad_range_is_explained_without_starting(tab):
    tab.params_edit.setText("alpha=0:1")
    assert tab.start() is None
    assert "no parameter 'alpha'" in tab.status.text() and not tab.running


def test_the_window_searches_the_method_and_models_it_shows(qtbot, window, suite, tmp_path):
    from tests.gui.conftest import load_into

    load_into(qtbot, window, [suite.base, *suite.models])
    window.set_base(window.session.models[0].id)
    window.method_panel.select_method("task_arithmetic")
    tab = window.extra_views["Search"]
    tab.params_edit.setText("lambda=0.2:1.5")
    tab.objectives_edit.setText(f"accuracy:{suite.data[0]}@train")
    tab.workers_spin.setValue(0)
    tab.trials_spin.setValue(2)
    window.method_panel.set_output_path(tmp_path / "merged.safetensors")
    with qtbot.waitSignal(tab.sig_finished, timeout=60_000):
        assert tab.start() is not None
    assert tab.plot.trial_count == 2
    assert tab.recipe_for(tab.selected_trial()).base == str(suite.base)
    assert (tmp_path / "merged.safetensors.search.db").is_file()
