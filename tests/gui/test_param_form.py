"""Forms generated from parameter models validate through the same models as recipes."""

from __future__ import annotations

import enum
from typing import Literal

from pydantic import Field

from merge_studio.core.methods.layered import validate_layered
from merge_studio.core.methods.registry import list_methods
from merge_studio.core.methods.spec import MethodParams, ui
from merge_studio.gui.forms.field_widgets import (
    CheckEditor,
    ComboEditor,
    FloatEditor,
    IntEditor,
    OptionalEditor,
    RawEditor,
    SeedEditor,
    SliderEditor,
    TextEditor,
)
from merge_studio.gui.forms.param_form import ParamForm


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


class EveryKind(MethodParams):
    flag: bool = Field(True, description="a switch")
    count: int = Field(3, ge=1, le=10)
    scale: float = Field(2.5)
    density: float = Field(0.5, gt=0.0, le=1.0, json_schema_extra=ui("slider", step=0.05))
    consensus: Literal["sum", "count"] = "sum"
    mode: Mode = Mode.FAST
    label: str = "x"
    pattern: str = Field("attn", json_schema_extra=ui("regex"))
    seed: int = Field(0, json_schema_extra=ui("seed", per_layer=False))
    limit: float | None = None
    lambda_: float = Field(1.0, alias="lambda", ge=-10, le=10)
    anchors: list[int] = Field(default_factory=lambda: [1, 2])


def test_every_registered_method_gets_a_form_whose_values_validate(qtbot):
    methods = list_methods()
    assert methods, "no methods registered"
    for spec in methods:
        for model in (spec.params, spec.model_params):
            form = ParamForm(model)
            qtbot.addWidget(form)
            values = form.values()
            assert set(values) == {f.alias or n for n, f in model.model_fields.items()}, spec.name
            validate_layered(model, values, spec.name)  # raises if the form produced something invalid
            assert form.errors() == {}, (spec.name, form.errors())
            form.set_values(values)
            assert form.values() == values, spec.name


def test_each_kind_of_field_gets_the_widget_it_declares(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    kinds = {key: type(editor) for key, editor in form.editors.items()}
    assert kinds == {
        "flag": CheckEditor,
        "count": IntEditor,
        "scale": FloatEditor,
        "density": SliderEditor,
        "consensus": ComboEditor,
        "mode": ComboEditor,
        "label": TextEditor,
        "pattern": TextEditor,
        "seed": SeedEditor,
        "limit": OptionalEditor,
        "lambda": SliderEditor,
        "anchors": RawEditor,
    }
    assert form.editors["flag"].toolTip() == "a switch"
    assert form.editors["count"].spin.maximum() == 10


def test_values_round_trip_through_the_params_model(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    wanted = {"flag": False, "count": 7, "scale": -4.25, "density": 0.25, "consensus": "count", "mode": "exact",
              "label": "hello", "pattern": "mlp", "seed": 1234, "limit": 0.75, "lambda": 0.5, "anchors": [3, 4, 5]}
    form.set_values(wanted)
    values = form.values()
    assert values == wanted
    parsed = EveryKind.model_validate(values)
    assert parsed.lambda_ == 0.5 and parsed.mode is Mode.EXACT and parsed.limit == 0.75
    form.set_values({"limit": None})
    assert form.values()["limit"] is None


def test_an_invalid_value_is_shown_next_to_its_field(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    form.show()
    form.editors["density"].spin.setValue(0.0)  # the spin box allows 0, the model wants > 0
    errors = form.errors()
    assert list(errors) == ["density"]
    assert "greater than 0" in errors["density"]
    label = form._error_labels["density"]
    assert label.isVisible() and "greater than 0" in label.text()
    assert form.editors["density"].property("invalid") is True
    form.editors["density"].spin.setValue(0.3)
    assert form.errors() == {}
    assert not form._error_labels["density"].isVisible()


def test_per_layer_values_are_kept_and_shown_read_only(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    gradient = [0.1, 0.5, 0.9]
    filtered = [{"filter": "attn", "value": 0.2}, {"value": 0.8}]
    form.set_values({"density": gradient, "scale": filtered})
    values = form.values()
    assert values["density"] == gradient and values["scale"] == filtered
    editor = form.editors["density"]
    assert isinstance(editor, RawEditor) and editor.read_only
    assert "varies by layer" in editor.edit.toolTip()
    assert form.errors() == {}
    form.set_values({"density": [0.1, 0.0]})  # 0 breaks gt=0 at the last layer
    assert "density" in form.errors()


def test_single_value_button_turns_a_per_layer_value_into_a_slider(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    form.set_values({"density": [0.4, 0.9]})
    form.editors["density"].reset.click()
    assert isinstance(form.editors["density"], SliderEditor)
    assert form.values()["density"] == 0.4


def test_slider_and_spin_box_move_together(qtbot):
    form = ParamForm(EveryKind)
    qtbot.addWidget(form)
    editor = form.editors["lambda"]
    editor.slider.setValue(editor.slider.maximum())
    assert editor.value() == 10.0
    editor.spin.setValue(-10.0)
    assert editor.slider.value() == 0
