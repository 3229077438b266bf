"""The warning badge marks only the model that does not fit, names still tell models apart, metadata is shown."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontMetrics

from merge_studio.gui.views.checkpoint_model import COL_NAME, SUBTITLE_ROLE
from merge_studio.gui.views.name_elide import fit_name
from tests.gui.conftest import load_into

pytestmark = pytest.mark.gui


def test_only_the_odd_model_gets_the_warning_and_it_names_the_tensors(qtbot, window, tiny_models, odd_model):
    load_into(qtbot, window, [*tiny_models[:2], odd_model])
    tips = [window.table_model.index(r, COL_NAME).data(Qt.ItemDataRole.ToolTipRole) for r in range(3)]
    assert "Incompatible" not in tips[0] and "Incompatible" not in tips[1]
    assert "Incompatible" in tips[2] and "'0.weight' is 24×8 here, 16×8 in the others" in tips[2]
    subtitles = [window.table_model.index(r, COL_NAME).data(SUBTITLE_ROLE) for r in range(3)]
    assert [("match" in (s or "")) for s in subtitles] == [False, False, True]


def test_names_that_do_not_fit_keep_their_distinguishing_end():
    metrics = QFontMetrics(QFont())
    names = ["finetuned-llama-3-8b-instruct-seed1.safetensors", "finetuned-llama-3-8b-instruct-seed2.safetensors"]
    width = metrics.horizontalAdvance("finetuned-llama-3-8b-ins")
    shown = [fit_name(n, metrics, width) for n in names]
    assert shown[0] != shown[1]
    assert all("…" in s and s.endswith(("seed1", "seed2")) for s in shown)
    assert fit_name("mlp_seed0.safetensors", metrics, metrics.horizontalAdvance("mlp_seed0  ")) == "mlp_seed0"
    assert fit_name("a.safetensors  · base", metrics, 1000) == "a.safetensors  · base"


def test_the_inspector_shows_every_metadata_entry_in_full(qtbot, window, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "with_meta.safetensors"
    recipe = "method: lerp\nmodels:\n  - path: a.safetensors\n  - path: b.safetensors\nparams:\n  t: 0.3\n"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"merge_studio.recipe": recipe, "note": "hello"})
    load_into(qtbot, window, [path])
    window.model_list.selectRow(0)
    view = window.inspector.metadata_view
    assert window.inspector.tabs.tabText(window.inspector.tabs.indexOf(view)) == "Metadata"
    keys = [view.table.item(r, 0).text() for r in range(view.table.rowCount())]
    assert keys == ["merge_studio.recipe", "note"]
    view.table.selectRow(0)
    assert view.value.toPlainText() == recipe


def test_metadata_nested_too_deep_for_json_is_shown_as_it_is(qtbot, window, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "deep_meta.safetensors"
    deep = "[" * 100_000 + "]" * 100_000
    save_file({"w": torch.zeros(2)}, str(path), metadata={"deep": deep})
    load_into(qtbot, window, [path])
    window.model_list.selectRow(0)
    view = window.inspector.metadata_view
    view.table.selectRow(0)
    assert view.value.toPlainText() == deep


def test_a_narrow_model_list_gives_the_names_room_by_folding_size_then_params(qtbot, window, tiny_models):
    from merge_studio.gui.views.checkpoint_list import NAME_MIN_WIDTH
    from merge_studio.gui.views.checkpoint_model import COL_PARAMS, COL_SIZE

    load_into(qtbot, window, tiny_models)
    window.show()
    table = window.model_list
    header = table.horizontalHeader()
    window.h_split.setSizes([190, 600, 490])
    qtbot.waitUntil(lambda: table.isColumnHidden(COL_SIZE) and table.isColumnHidden(COL_PARAMS))
    others = sum(header.sectionSize(c) for c in range(1, header.count()))  # coefficients stay editable
    assert header.sectionSize(COL_NAME) >= table.viewport().width() - others - 2  # the name has the rest
    window.h_split.setSizes([560, 400, 320])
    qtbot.waitUntil(lambda: not table.isColumnHidden(COL_SIZE) and not table.isColumnHidden(COL_PARAMS))
    assert header.sectionSize(COL_SIZE) > 30 and header.sectionSize(COL_NAME) >= NAME_MIN_WIDTH
