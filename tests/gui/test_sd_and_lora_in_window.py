"""Stable Diffusion checkpoints and LoRA adapters in the window: inspector, method panel, adapter menu."""

from __future__ import annotations

import pytest
import torch
from PySide6.QtWidgets import QToolButton, QTreeWidget

from merge_studio.core.lora.writer import AdapterContent, LoraFactors, write_adapter
from merge_studio.gui.dialogs.lora_dialogs import ExtractLoraDialog, ExtractRequest, MergeAdaptersDialog
from merge_studio.gui.forms.block_weights import BlockWeightEditor
from merge_studio.gui.views.checkpoint_model import COL_FORMAT
from tests.gui.conftest import load_into, write_model
from tests.sd_models import make_sd_checkpoint


@pytest.fixture
def sd_pair(tmp_path):
    return [make_sd_checkpoint(tmp_path / f"sd-{i}.safetensors", "sd1", seed=i, compact=True) for i in (1, 2)]


@pytest.fixture
def mlp_and_adapters(tmp_path):
    base = write_model(tmp_path / "mlp.safetensors", 0)
    g = torch.Generator().manual_seed(1)
    adapters = []
    for i, rank in enumerate((2, 3)):
        factors = {"0": LoraFactors(torch.randn(rank, 8, generator=g), torch.randn(16, rank, generator=g), float(rank)),
                   "2": LoraFactors(torch.randn(rank, 16, generator=g), torch.randn(16, rank, generator=g), float(rank))}
        adapters.append(write_adapter(tmp_path / f"lora{i}", AdapterContent("peft", factors)))
    return base, adapters


def test_an_sd_checkpoint_shows_its_family_and_a_tree_of_parts_and_blocks(qtbot, window, sd_pair):
    load_into(qtbot, window, sd_pair[:1])
    window.model_list.select_id(window.session.models[0].id)
    inspector = window.inspector
    assert "Stable Diffusion 1.x" in inspector._fact_labels["Format"].text()
    tree: QTreeWidget = inspector.module_tree
    tops = [tree.topLevelItem(i).text(0) for i in range(tree.topLevelItemCount())]
    assert tops[:3] == ["UNet · model.diffusion_model", "Text encoder (CLIP ViT-L) · cond_stage_model",
                        "VAE · first_stage_model"]
    unet = tree.topLevelItem(0)
    inputs = next(unet.child(i) for i in range(unet.childCount()) if unet.child(i).text(0).startswith("Input blocks"))
    assert [inputs.child(i).text(0) for i in (0, 11)] == ["IN00 · 0", "IN11 · 11"]


def test_the_method_panel_offers_block_weights_and_parts_for_sd_models(qtbot, window, sd_pair, tmp_path):
    load_into(qtbot, window, sd_pair)
    panel = window.method_panel
    panel.select_method("add_difference")
    toggle = next(b for b in panel.form.findChildren(QToolButton) if b.objectName() == "block_toggle")
    toggle.click()
    editor = panel.form.editors["alpha"]
    assert isinstance(editor, BlockWeightEditor) and len(editor.blocks) == 26
    editor.apply_preset("GRAD_A")
    assert panel.parts_box.isVisibleTo(panel) and set(panel.parts_box.combos) == {"text_encoder", "vae"}
    vae = panel.parts_box.combos["vae"]
    vae.setCurrentIndex(vae.findData(str(sd_pair[1])))
    window.session.set_base(window.session.models[1].id)
    recipe = window.session.to_recipe()
    assert recipe.params["alpha"]["blocks"][13] == 1.0  # M00 of GRAD_A
    assert recipe.part_sources == {"vae": str(sd_pair[1])}


def test_an_adapter_is_listed_as_one_and_left_out_of_merges(qtbot, window, mlp_and_adapters):
    base, adapters = mlp_and_adapters
    load_into(qtbot, window, [base, adapters[0]])
    adapter_row = window.session.models[1]
    assert adapter_row.is_adapter
    assert window.table_model.index(1, COL_FORMAT).data() == "PEFT LoRA adapter"
    assert [e.path for e in window.session.to_recipe().models] == [str(base)]
    assert window.inspector.set_compatibility is not None and window._compat.ok


def test_the_adapter_menu_applies_it_onto_the_base_as_a_new_input(qtbot, window, mlp_and_adapters):
    base, adapters = mlp_and_adapters
    load_into(qtbot, window, [base, adapters[0]])
    window.model_list.selectRow(1)
    menu = window.model_list.build_context_menu(window.table_model.index(1, 0))
    apply = next(a for a in menu.actions() if a.text().startswith("Apply onto a base model"))
    with qtbot.waitSignal(window.sig_models_loaded, timeout=10_000):
        apply.trigger()
    added = window.session.models[2]
    assert added.status == "ready" and added.name == "mlp.safetensors+lora0"
    assert added.checkpoint.adapted_names() == ["0.weight", "2.weight"]
    assert not added.is_adapter and len(window.session.to_recipe().models) == 2


def test_merging_adapters_from_the_window_writes_and_lists_the_result(qtbot, window, mlp_and_adapters, tmp_path):
    base, adapters = mlp_and_adapters
    load_into(qtbot, window, [base, *adapters])
    rows = [(m.path, m.name, 3) for m in window.session.models[1:]]
    dialog = MergeAdaptersDialog(rows, tmp_path / "merged", window)
    dialog.svd_radio.setChecked(True)
    dialog.rank_spin.setValue(2)
    dialog.weight_spins[1].setValue(0.5)
    request = dialog.request()
    assert request.mode == "svd" and request.rank == 2 and request.weights == (1.0, 0.5)
    with qtbot.waitSignal(window.sig_models_loaded, timeout=20_000):
        window.lora.merge(request)
    assert window.lora.last_result.ranks == [2] and 0 < window.lora.last_result.kept_energy < 1
    assert window.session.models[-1].path == tmp_path / "merged" and window.session.models[-1].is_adapter
    assert "kept" in window.log_panel.text()


def test_extracting_a_lora_from_the_window_logs_the_error(qtbot, window, tiny_models, tmp_path):
    load_into(qtbot, window, tiny_models[:2])
    tuned, base = window.session.models
    dialog = ExtractLoraDialog((tuned.path, tuned.name), [(base.path, base.name)], tmp_path / "x", window)
    dialog.rank_spin.setValue(2)
    request = dialog.request()
    assert request == ExtractRequest(tuned.path, base.path, 2, "auto", tmp_path / "x")
    with qtbot.waitSignal(window.sig_models_loaded, timeout=20_000):
        window.lora.extract(request)
    assert window.lora.last_result.rank == 2
    assert "Extracted a rank-2 LoRA" in window.log_panel.text()
    assert window.session.models[-1].is_adapter
