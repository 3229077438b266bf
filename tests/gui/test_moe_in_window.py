"""Merge ▸ Assemble mixture of experts…: a dialog pre-filled from the list, a job with progress, the result listed."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from merge_studio.core.moe.config import MoeConfig
from merge_studio.gui.dialogs.moe_dialog import MoeDialog
from merge_studio.gui.dialogs.moe_fields import prompts_to_text, text_to_prompts
from tests.gui.conftest import load_into
from tests.hf_models import make_hf_folder

pytest.importorskip("transformers")


@pytest.fixture
def llamas(tmp_path):
    return [make_hf_folder(tmp_path / f"llama-{i}", "llama", seed=i) for i in range(3)]


def _fill_prompts(dialog: MoeDialog) -> None:
    for row, prompts in enumerate(("def parse(text):\nimport os", "Once upon a time")):
        dialog.expert_list.setCurrentRow(row)
        dialog.positive_edit.setPlainText(prompts)


def test_the_merge_menu_offers_the_assembly(window):
    assert window.actions_by_name["moe"].text().startswith("Assemble mi")
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Merge")
    assert window.actions_by_name["moe"] in menu.actions()


def test_the_dialog_starts_from_the_lists_base_and_models_and_runs_in_the_window(qtbot, window, llamas, tmp_path):
    load_into(qtbot, window, llamas)
    window.set_base(window.session.models[0].id)
    dialog = window.moe.dialog()
    qtbot.addWidget(dialog)
    assert dialog.base_picker.path() == str(llamas[0]) and dialog.expert_list.count() == 2
    assert not dialog.ok_button.isEnabled() and "no positive_prompts" in dialog.summary.text()
    _fill_prompts(dialog)
    dialog.per_token_spin.setValue(1)
    assert dialog.ok_button.isEnabled() and "Mixtral of 2 experts, 1 per token" in dialog.summary.text()
    request = dialog.request()
    assert request.config.experts[0].positive_prompts == ["def parse(text):", "import os"]
    with qtbot.waitSignal(window.sig_models_loaded, timeout=30_000):
        window.moe.run(request)
    assert window.moe.last_result.architecture == "Mixtral"
    assert window.session.models[-1].path == request.output
    assert "Wrote a Mixtral of 2 experts" in window.log_panel.text()


def test_a_gpt2_base_is_explained_in_the_dialog_and_assemble_stays_off(qtbot, tmp_path):
    gpt2 = make_hf_folder(tmp_path / "gpt2", "gpt2")
    dialog = MoeDialog([], tmp_path / "out", base=gpt2, experts=[gpt2, tmp_path / "other"])
    qtbot.addWidget(dialog)
    dialog.gate_combo.setCurrentIndex(dialog.gate_combo.findData("random"))
    assert not dialog.ok_button.isEnabled()
    assert "gpt2" in dialog.summary.text() and "Mixtral" in dialog.summary.text()


def test_the_dialog_reads_and_writes_mergekit_moe_yaml(qtbot, llamas, tmp_path):
    yml = tmp_path / "moe.yml"
    yml.write_text(f"base_model: {llamas[0]}\ngate_mode: cheap_embed\nexperts_per_token: 1\ndtype: bfloat16\n"
                   f"experts:\n  - source_model: {llamas[1]}\n    positive_prompts: [\"a\\nb\", 'c']\n"
                   f"    negative_prompts: ['d']\n  - source_model: {llamas[2]}\n    positive_prompts: ['e']\n")
    dialog = MoeDialog([], tmp_path / "out")
    qtbot.addWidget(dialog)
    assert dialog.load_yaml(yml)
    assert dialog.expert_list.count() == 2 and dialog.gate_combo.currentData() == "cheap_embed"
    dialog.expert_list.setCurrentRow(0)
    assert dialog.positive_edit.toPlainText() == "a\\nb\nc"
    dialog.save_yaml(tmp_path / "again.yml")
    from merge_studio.core.moe.config import load_moe_config

    again = load_moe_config(tmp_path / "again.yml")
    assert again == load_moe_config(yml)
    assert isinstance(again, MoeConfig) and again.dtype == "bfloat16"


def test_prompts_with_line_breaks_survive_the_one_a_line_editor():
    prompts = ["<|im_start|>user\nHello", "back\\slash", "a\\nb", "trailing\\", "plain"]
    assert text_to_prompts(prompts_to_text(prompts)) == prompts


def test_the_dialog_renders_at_1024x768(qtbot, llamas, tmp_path):
    dialog = MoeDialog([(p, p.name) for p in llamas], tmp_path / "llama-0-moe", base=llamas[0], experts=llamas[1:])
    qtbot.addWidget(dialog)
    _fill_prompts(dialog)
    dialog.resize(1024, 768)
    dialog.show()
    QApplication.processEvents()  # lay the editors out at the new size before grabbing
    image = dialog.grab()
    assert image.width() >= 1000
    image.save(str(tmp_path / "moe_dialog.png"))


def test_cancel_in_the_status_bar_stops_the_assembly_and_writes_nothing(qtbot, window, llamas, tmp_path):
    dialog = MoeDialog([], tmp_path / "out", base=llamas[0], experts=llamas[1:])
    qtbot.addWidget(dialog)
    _fill_prompts(dialog)
    worker = window.moe.run(dialog.request())
    with qtbot.waitSignal(worker.sig_done, timeout=30_000):
        window.job_status.sig_cancel_requested.emit()
    assert window.moe.worker is None and window.moe.last_result is None
    assert not (tmp_path / "out").exists()
    assert "cancelled; nothing was written" in window.log_panel.text()
