"""The block-weight editor: bars per UNet block, presets, the tools' text form, in the parameter form."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt

from merge_studio.core.methods.linear import LerpParams
from merge_studio.core.naming.presets import SD_BLOCKS, sd_preset
from merge_studio.gui.forms.block_weights import XL_BLOCKS, BlockWeightEditor
from merge_studio.gui.forms.field_widgets import field_facts
from merge_studio.gui.forms.param_form import ParamForm


def _editor(qtbot, blocks=SD_BLOCKS) -> BlockWeightEditor:
    editor = BlockWeightEditor(field_facts("t", LerpParams.model_fields["t"]), blocks=blocks)
    qtbot.addWidget(editor)
    editor.resize(420, 220)
    editor.show()
    return editor


def test_a_preset_fills_every_block(qtbot):
    editor = _editor(qtbot)
    with qtbot.waitSignal(editor.sig_changed):
        editor.apply_preset("GRAD_V")
    assert editor.value() == {"blocks": sd_preset("GRAD_V")}
    assert editor.text_edit.text().startswith("0,1,0.916667,0.833333")


def test_pasting_the_tools_text_imports_it_and_a_twenty_value_list_switches_to_sdxl(qtbot):
    editor = _editor(qtbot)
    editor.text_edit.setText(",".join(["0.5"] * 20))
    editor.text_edit.editingFinished.emit()
    assert editor.blocks == XL_BLOCKS
    assert editor.value() == {"blocks": [0.5] * 20}


def test_a_typo_in_pasted_text_is_shown_and_the_values_are_kept(qtbot):
    editor = _editor(qtbot)
    editor.apply_preset("OUT_ONLY")
    assert not editor.import_text("0,1,x")
    assert editor.text_error.isVisibleTo(editor) and "block weight 3" in editor.text_error.text()
    assert editor.value() == {"blocks": sd_preset("OUT_ONLY")}


def test_dragging_across_the_bars_draws_the_values(qtbot):
    editor = _editor(qtbot)
    bars = editor.bars
    plot = bars._plot()
    top = int(plot.top()) - 2  # above the plot: the largest value
    start, end = bars._slot(1).center().toPoint(), bars._slot(4).center().toPoint()
    qtbot.mousePress(bars, Qt.MouseButton.LeftButton, pos=QPoint(start.x(), top))
    for x in range(start.x(), end.x() + 1, 3):
        qtbot.mouseMove(bars, QPoint(x, top))
    qtbot.mouseRelease(bars, Qt.MouseButton.LeftButton, pos=QPoint(end.x(), top))
    values = editor.value()["blocks"]
    assert values[1:5] == [1.0, 1.0, 1.0, 1.0] and values[0] == 0.5 and values[5] == 0.5
    assert editor.block_label.text() == "IN03" and editor.block_spin.value() == 1.0


def test_the_parameter_form_offers_blocks_for_sd_models_and_goes_back_to_one_value(qtbot):
    form = ParamForm(LerpParams)
    qtbot.addWidget(form)
    assert form.findChild(type(form.editors["t"]), "block_toggle") is None
    form.set_block_names(SD_BLOCKS)
    toggle = next(b for b in form.findChildren(type(_editor(qtbot).all_button)) if b.objectName() == "block_toggle")
    toggle.click()
    editor = form.editors["t"]
    assert isinstance(editor, BlockWeightEditor)
    assert form.values() == {"t": {"blocks": [0.5] * 26}}
    editor.apply_preset("IN_ONLY")
    assert form.values()["t"]["blocks"][1] == 1.0 and form.is_valid()
    editor.single_button.click()
    assert form.values() == {"t": 0.0}  # the first value (BASE)


def test_a_recipe_with_block_weights_opens_in_the_block_editor(qtbot):
    form = ParamForm(LerpParams)
    qtbot.addWidget(form)
    form.set_values({"t": {"blocks": "0," + ",".join(["1"] * 19)}})
    editor = form.editors["t"]
    assert isinstance(editor, BlockWeightEditor) and editor.blocks == XL_BLOCKS
    assert form.values()["t"] == {"blocks": [0.0] + [1.0] * 19}


def test_out_of_range_block_values_are_marked_like_any_value(qtbot):
    form = ParamForm(LerpParams)
    qtbot.addWidget(form)
    form.set_values({"t": {"blocks": [0.5] * 25 + [1.5]}})
    assert not form.is_valid() and "t" in form.errors()
