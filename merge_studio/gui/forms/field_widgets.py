"""One editor widget per pydantic field, chosen from its type, bounds and ``ui()`` hints.

``widget_for_field`` looks the field up in a small table of (test, builder)
rows, so a new kind of parameter means one new row. Every editor has the same
face: ``value()``, ``set_value(v)``, ``sig_changed`` and ``set_error(text)``.
"""

from __future__ import annotations

import enum
import math
import random
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic.fields import FieldInfo
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QWidget,
)

from merge_studio.core.methods.layered import is_layered
from merge_studio.core.safe_yaml import load_yaml

BIG = 1e9
INT_MAX = 2**31 - 1


# --- what a field is -------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldFacts:
    """What the editor table needs to know about a field, read once from pydantic."""

    name: str
    key: str  # the recipe key (alias when there is one)
    title: str
    description: str
    annotation: Any  # with ``Optional`` removed
    optional: bool
    default: Any
    lower: float | None
    upper: float | None
    lower_strict: bool
    upper_strict: bool
    hints: dict[str, Any]

    @property
    def widget(self) -> str | None:
        return self.hints.get("widget")

    @property
    def per_layer(self) -> bool:
        return bool(self.hints.get("per_layer", True))

    @property
    def choices(self) -> list[Any]:
        ann = self.annotation
        if typing.get_origin(ann) is typing.Literal:
            return list(typing.get_args(ann))
        if isinstance(ann, type) and issubclass(ann, enum.Enum):
            return [m.value for m in ann]
        return []

    @property
    def bounded(self) -> bool:
        return self.lower is not None and self.upper is not None


def strip_optional(ann: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(ann)):
            return args[0], True
    return ann, False


def field_facts(name: str, info: FieldInfo) -> FieldFacts:
    """Read type, bounds, texts and hints from a pydantic field."""
    ann, optional = strip_optional(info.annotation)
    lower = upper = None
    lower_strict = upper_strict = False
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            lower = float(meta.ge)
        elif isinstance(meta, annotated_types.Gt):
            lower, lower_strict = float(meta.gt), True
        elif isinstance(meta, annotated_types.Le):
            upper = float(meta.le)
        elif isinstance(meta, annotated_types.Lt):
            upper, upper_strict = float(meta.lt), True
        elif isinstance(meta, annotated_types.Interval):
            if meta.ge is not None:
                lower = float(meta.ge)
            if meta.gt is not None:
                lower, lower_strict = float(meta.gt), True
            if meta.le is not None:
                upper = float(meta.le)
            if meta.lt is not None:
                upper, upper_strict = float(meta.lt), True
    hints = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if isinstance(default, enum.Enum):
        default = default.value
    return FieldFacts(
        name=name,
        key=info.alias or name,
        title=info.title or name.rstrip("_").replace("_", " ").capitalize(),
        description=info.description or "",
        annotation=ann,
        optional=optional,
        default=default,
        lower=lower,
        upper=upper,
        lower_strict=lower_strict,
        upper_strict=upper_strict,
        hints=dict(hints),
    )


# --- editors ---------------------------------------------------------------------------------
class FieldEditor(QWidget):
    """Common face of every editor."""

    sig_changed = Signal()
    """The value changed (by the user or by ``set_value``)."""

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.facts = facts
        self.setObjectName(f"field_{facts.name}")
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(6)
        if facts.description:
            self.setToolTip(facts.description)

    def value(self) -> Any:
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def accepts(self, value: Any) -> bool:
        """Whether this editor can show ``value`` (per-layer lists go to a text view)."""
        return not is_layered(value)

    def set_error(self, text: str) -> None:
        """Mark the editor invalid (red outline via the style sheet) with the reason as tooltip."""
        self.setProperty("invalid", bool(text))
        for child in [self, *self.findChildren(QWidget)]:
            child.setProperty("invalid", bool(text))
            child.style().unpolish(child)
            child.style().polish(child)
        self.setToolTip(f"{text}\n\n{self.facts.description}".strip() if text else self.facts.description)


class CheckEditor(FieldEditor):
    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.box = QCheckBox(self)
        self.box.toggled.connect(self.sig_changed)
        self._layout.addWidget(self.box)
        self._layout.addStretch(1)

    def value(self) -> bool:
        return self.box.isChecked()

    def set_value(self, value: Any) -> None:
        self.box.setChecked(bool(value))


class ComboEditor(FieldEditor):
    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.combo = QComboBox(self)
        for choice in facts.choices:
            self.combo.addItem(str(choice), choice)
        self.combo.currentIndexChanged.connect(self.sig_changed)
        self._layout.addWidget(self.combo, 1)

    def value(self) -> Any:
        return self.combo.currentData()

    def set_value(self, value: Any) -> None:
        if isinstance(value, enum.Enum):
            value = value.value
        index = self.combo.findData(value)
        if index < 0:  # an unknown value from a file: show it so validation can name it
            self.combo.addItem(str(value), value)
            index = self.combo.count() - 1
        self.combo.setCurrentIndex(index)


def _spin_range(facts: FieldFacts, integer: bool) -> tuple[float, float]:
    lo = facts.lower if facts.lower is not None else -BIG
    hi = facts.upper if facts.upper is not None else BIG
    if integer:
        lo, hi = max(lo, -INT_MAX), min(hi, INT_MAX)
    return lo, hi


class IntEditor(FieldEditor):
    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.spin = QSpinBox(self)
        lo, hi = _spin_range(facts, integer=True)
        self.spin.setRange(int(lo), int(hi))
        self.spin.setSingleStep(int(facts.hints.get("step") or 1))
        self.spin.valueChanged.connect(self.sig_changed)
        self._layout.addWidget(self.spin, 1)

    def value(self) -> int:
        return self.spin.value()

    def set_value(self, value: Any) -> None:
        self.spin.setValue(int(value))


class SeedEditor(IntEditor):
    """A seed: a spin box and a button that draws a new one."""

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.spin.setRange(0, INT_MAX)
        self.reroll = QPushButton("New", self)
        self.reroll.setToolTip("Draw a new random seed")
        self.reroll.setMaximumWidth(self.reroll.fontMetrics().horizontalAdvance("New") + 40)
        self.spin.setMinimumWidth(84)  # room for any seed; its own hint (ten digits) crowds narrow panels
        self.reroll.clicked.connect(lambda: self.spin.setValue(random.randint(0, 2**31 - 1)))
        self._layout.addWidget(self.reroll)


def _decimals(facts: FieldFacts) -> int:
    if "decimals" in facts.hints:
        return int(facts.hints["decimals"])
    step = facts.hints.get("step")
    if step:
        return max(2, min(6, math.ceil(-math.log10(float(step))) + 1))
    return 4


class FloatEditor(FieldEditor):
    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.spin = QDoubleSpinBox(self)
        self.spin.setDecimals(_decimals(facts))
        lo, hi = _spin_range(facts, integer=False)
        self.spin.setRange(lo, hi)
        self.spin.setSingleStep(float(facts.hints.get("step") or 0.1))
        self.spin.setKeyboardTracking(False)
        self.spin.valueChanged.connect(self.sig_changed)
        self.spin.setMinimumWidth(80)
        self._layout.addWidget(self.spin, 1)

    def value(self) -> float:
        return float(self.spin.value())

    def set_value(self, value: Any) -> None:
        self.spin.setValue(float(value))


class SliderEditor(FloatEditor):
    """A bounded float: slider for quick moves, spin box for exact values."""

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        lo, hi = _spin_range(facts, integer=False)
        step = float(facts.hints.get("step") or (hi - lo) / 100 or 0.01)
        self._lo, self._step = lo, step
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setRange(0, max(1, round((hi - lo) / step)))
        self.slider.valueChanged.connect(self._on_slider_moved)
        self.spin.valueChanged.connect(self._on_spin_changed)
        self._layout.insertWidget(0, self.slider, 2)
        self.spin.setMinimumWidth(72)
        self._on_spin_changed(self.spin.value())

    def _on_slider_moved(self, position: int) -> None:
        value = self._lo + position * self._step
        if abs(value - self.spin.value()) > self._step / 2:
            self.spin.setValue(value)

    def _on_spin_changed(self, value: float) -> None:
        position = round((value - self._lo) / self._step)
        if position != self.slider.value():
            self.slider.blockSignals(True)
            self.slider.setValue(position)
            self.slider.blockSignals(False)


class TextEditor(FieldEditor):
    """Free text; for ``regex`` hints the pattern is compiled as you type."""

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.edit = QLineEdit(self)
        self.edit.textChanged.connect(self.sig_changed)
        if facts.optional:
            self.edit.setPlaceholderText("(none)")
        self._layout.addWidget(self.edit, 1)

    def value(self) -> Any:
        text = self.edit.text()
        if self.facts.widget == "regex" and text:
            try:
                re.compile(text)
            except re.error:
                return text  # validation (or the pattern itself) will name the problem
        return None if (text == "" and self.facts.optional) else text

    def set_value(self, value: Any) -> None:
        self.edit.setText("" if value is None else str(value))


class RawEditor(FieldEditor):
    """Anything else (lists, mappings, unusual types) as YAML text, parsed on read.

    Also shows per-layer values (gradients, filters) that a scalar editor cannot:
    read-only, so a recipe's values are never silently lost.
    """

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None, *, read_only: bool = False) -> None:
        super().__init__(facts, parent)
        self.edit = QLineEdit(self)
        self.edit.setReadOnly(read_only)
        self.edit.textChanged.connect(self.sig_changed)
        self._layout.addWidget(self.edit, 1)
        self._value: Any = None
        self.read_only = read_only
        if read_only:
            self.edit.setObjectName("per_layer_value")
            self.reset = QPushButton("Single value", self)
            self.reset.setToolTip("Replace the per-layer value with one value for every layer")
            self._layout.addWidget(self.reset)

    def accepts(self, value: Any) -> bool:
        return True

    def value(self) -> Any:
        if self.read_only:
            return self._value
        text = self.edit.text().strip()
        if text == "":
            return None
        try:
            return load_yaml(text)
        except yaml.YAMLError:
            return text

    def set_value(self, value: Any) -> None:
        self._value = value
        text = "" if value is None else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("...").strip()
        self.edit.setText(text)
        if self.read_only:
            tip = (
                "This value varies by layer (set in the recipe file); it is kept as it is.\n"
                "A list of numbers fades across the layers; {filter, value} entries apply by tensor name.\n\n"
                f"{self.facts.description}"
            )
            self.edit.setToolTip(tip)
            self.setToolTip(tip)


class OptionalEditor(FieldEditor):
    """An optional value: a check box turns the inner editor on; off means ``None``."""

    def __init__(self, facts: FieldFacts, inner: FieldEditor, parent: QWidget | None = None) -> None:
        super().__init__(facts, parent)
        self.inner = inner
        self.enabled_box = QCheckBox(self)
        self.enabled_box.setToolTip("Unchecked: not set (the method decides)")
        self.enabled_box.toggled.connect(self._on_toggled)
        inner.sig_changed.connect(self.sig_changed)
        inner.setParent(self)
        self._layout.addWidget(self.enabled_box)
        self._layout.addWidget(inner, 1)
        self._on_toggled(False)

    def _on_toggled(self, on: bool) -> None:
        self.inner.setEnabled(on)
        self.sig_changed.emit()

    def value(self) -> Any:
        return self.inner.value() if self.enabled_box.isChecked() else None

    def set_value(self, value: Any) -> None:
        self.enabled_box.setChecked(value is not None)
        if value is not None:
            self.inner.set_value(value)


# --- the table -------------------------------------------------------------------------------
def _is_int(f: FieldFacts) -> bool:
    return f.annotation is int


def _is_float(f: FieldFacts) -> bool:
    return f.annotation is float


EDITOR_TABLE: list[tuple[Callable[[FieldFacts], bool], type[FieldEditor]]] = [
    (lambda f: f.annotation is bool or f.widget == "check", CheckEditor),
    (lambda f: bool(f.choices), ComboEditor),
    (lambda f: _is_int(f) and (f.widget == "seed" or f.name == "seed"), SeedEditor),
    (_is_int, IntEditor),
    (lambda f: _is_float(f) and (f.widget == "slider" or f.widget is None and f.bounded), SliderEditor),
    (_is_float, FloatEditor),
    (lambda f: f.annotation is str, TextEditor),
]


def editor_class(facts: FieldFacts) -> type[FieldEditor]:
    """The first row of the table whose test the field passes; YAML text otherwise."""
    for test, cls in EDITOR_TABLE:
        if test(facts):
            return cls
    return RawEditor


def widget_for_field(name: str, info: FieldInfo, parent: QWidget | None = None) -> FieldEditor:
    """Build the editor for one pydantic field, set to its default."""
    facts = field_facts(name, info)
    cls = editor_class(facts)
    editor = cls(facts, parent)
    if facts.optional and cls not in (TextEditor, RawEditor):
        editor = OptionalEditor(facts, editor, parent)
    if facts.default is not None or isinstance(editor, RawEditor):
        editor.set_value(facts.default)
    return editor
