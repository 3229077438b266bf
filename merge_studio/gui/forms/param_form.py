"""A form generated from a method's parameter model, validated by that same model.

Because the form validates through the pydantic class the recipe and the CLI
use, the window rejects exactly what they reject, and says so next to the field
before anything runs.
"""

from __future__ import annotations

import collections.abc
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from merge_studio.core.methods.layered import is_layered, leaf_values
from merge_studio.core.naming.blocks import is_block_weights
from merge_studio.gui.forms.block_weights import BlockWeightEditor, block_toggle, can_vary_by_block
from merge_studio.gui.forms.field_widgets import FieldEditor, RawEditor, strip_optional, field_facts, widget_for_field


def _takes_a_list(info: FieldInfo) -> bool:
    """A field whose own type is a list: its list values are not per-layer values."""
    ann, _ = strip_optional(info.annotation)
    return typing.get_origin(ann) in (list, tuple, set, frozenset, collections.abc.Sequence) or ann in (list, tuple)


def validation_errors(model: type[BaseModel], values: dict[str, Any]) -> dict[str, str]:
    """Problems by recipe key: every value a per-layer entry can produce is checked."""
    keys = {(info.alias or name): name for name, info in model.model_fields.items()}
    list_keys = {k for k, n in keys.items() if _takes_a_list(model.model_fields[n])}
    plain: dict[str, Any] = {}
    variants: list[tuple[str, Any]] = []
    errors: dict[str, str] = {}
    for key, value in values.items():
        leaves = leaf_values(value) if is_layered(value) and key not in list_keys else [value]
        if not leaves:
            errors[key] = "empty value"
            continue
        plain[key] = leaves[0]
        variants.extend((key, leaf) for leaf in leaves[1:])

    def collect(candidate: dict[str, Any]) -> None:
        try:
            model.model_validate(candidate)
        except ValidationError as exc:
            for err in exc.errors():
                loc = err["loc"][0] if err["loc"] else ""
                key = next((k for k, n in keys.items() if loc in (k, n)), str(loc))
                errors.setdefault(key, err["msg"].removeprefix("Value error, "))

    collect(plain)
    for key, leaf in variants:
        if key not in errors:
            collect({**plain, key: leaf})
    return errors


LABEL_MAX_WIDTH = 120


class ParamForm(QWidget):
    """Editors for every field of ``params_model``, with in-place errors."""

    sig_changed = Signal()
    """Some value changed; ``values()`` and ``errors()`` are up to date."""

    def __init__(self, params_model: type[BaseModel], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("param_form")
        self.params_model = params_model
        self.block_names: tuple[str, ...] = ()  # the loaded models' UNet blocks (SD), for block weights
        self.editors: dict[str, FieldEditor] = {}  # by recipe key
        self._error_labels: dict[str, QLabel] = {}
        self._form = QFormLayout()
        self._form.setContentsMargins(0, 0, 0, 0)
        self._form.setHorizontalSpacing(10)
        self._form.setVerticalSpacing(6)
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self._form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._form)
        for name, info in params_model.model_fields.items():
            editor = widget_for_field(name, info, self)
            self._add_row(editor)
        if not self.editors:
            empty = QLabel("This method has no parameters.", self)
            empty.setObjectName("muted")
            outer.addWidget(empty)
        self._errors: dict[str, str] = {}
        self._revalidate()

    def _add_row(self, editor: FieldEditor, row: int | None = None) -> None:
        facts = editor.facts
        label = QLabel(facts.title, self)
        label.setToolTip(facts.description)
        label.setWordWrap(True)  # long titles take two lines instead of widening the panel
        label.setMaximumWidth(LABEL_MAX_WIDTH)
        label.setMinimumWidth(min(label.fontMetrics().horizontalAdvance(facts.title) + 4, LABEL_MAX_WIDTH))
        label.setBuddy(editor)
        error = QLabel("", self)
        error.setObjectName("field_error")
        error.setWordWrap(True)
        error.hide()
        box = QWidget(self)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        if self.block_names and can_vary_by_block(facts) and not isinstance(editor, BlockWeightEditor | RawEditor):
            row_box = QHBoxLayout()
            row_box.setSpacing(4)
            row_box.addWidget(editor, 1)
            toggle = block_toggle(box)
            toggle.clicked.connect(lambda _=False, k=facts.key: self._make_blocks(k))
            row_box.addWidget(toggle)
            lay.addLayout(row_box)
        else:
            lay.addWidget(editor)
        lay.addWidget(error)
        if isinstance(editor, BlockWeightEditor):  # wide: the title above, the bars across the whole panel
            label.setMaximumWidth(16777215)
            label.setText(f"{facts.title} — per UNet block")
            lay.insertWidget(0, label)
            if row is None:
                self._form.addRow(box)
            else:
                self._form.insertRow(row, box)
        elif row is None:
            self._form.addRow(label, box)
        else:
            self._form.insertRow(row, label, box)
        self.editors[facts.key] = editor
        self._error_labels[facts.key] = error
        editor.sig_changed.connect(self._on_editor_changed)
        if isinstance(editor, RawEditor) and editor.read_only:
            editor.reset.clicked.connect(lambda _=False, k=facts.key: self._make_single(k))
        if isinstance(editor, BlockWeightEditor):
            editor.single_button.clicked.connect(lambda _=False, k=facts.key: self._make_single(k))

    def _replace_editor(self, key: str, editor: FieldEditor) -> None:
        old = self.editors.pop(key)
        row, _role = self._form.getWidgetPosition(old.parentWidget())
        self._form.removeRow(row)
        self._error_labels.pop(key, None)
        self._add_row(editor, row)

    def _make_single(self, key: str) -> None:
        """Turn a per-layer value back into one value (its first anchor) in a normal editor."""
        old = self.editors[key]
        name = old.facts.name
        leaves = leaf_values(old.value())
        editor = widget_for_field(name, self.params_model.model_fields[name], self)
        if leaves and editor.accepts(leaves[0]):
            editor.set_value(leaves[0])
        self._replace_editor(key, editor)
        self._on_editor_changed()

    def _block_editor(self, name: str, value: Any) -> BlockWeightEditor:
        facts = field_facts(name, self.params_model.model_fields[name])
        editor = BlockWeightEditor(facts, self, **({"blocks": self.block_names} if self.block_names else {}))
        editor.set_value(value)
        return editor

    def _make_blocks(self, key: str) -> None:
        """Turn one value into block weights, every block starting at that value."""
        old = self.editors[key]
        self._replace_editor(key, self._block_editor(old.facts.name, old.value()))
        self._on_editor_changed()

    def set_block_names(self, blocks: tuple[str, ...]) -> None:
        """The UNet blocks of the loaded models (empty when they have none): numbers get a
        "Blocks" button, and block editors show these blocks."""
        blocks = tuple(blocks)
        if blocks == self.block_names:
            return
        self.block_names = blocks
        for key, editor in list(self.editors.items()):
            if isinstance(editor, BlockWeightEditor):
                if blocks:
                    editor.set_blocks(blocks)
                continue
            if isinstance(editor, RawEditor) or not can_vary_by_block(editor.facts):
                continue
            value = editor.value()
            fresh = widget_for_field(editor.facts.name, self.params_model.model_fields[editor.facts.name], self)
            fresh.set_value(value)
            self._replace_editor(key, fresh)
        self._revalidate()

    # --- values -----------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """Raw values by recipe key (per-layer values kept as given)."""
        return {key: editor.value() for key, editor in self.editors.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        """Show ``values``; unknown keys are ignored, missing keys keep their current value."""
        for key, value in values.items():
            editor = self.editors.get(key) or next(
                (e for e in self.editors.values() if e.facts.name == key), None
            )
            if editor is None:
                continue
            if is_block_weights(value) and can_vary_by_block(editor.facts):
                if isinstance(editor, BlockWeightEditor):
                    editor.blockSignals(True)
                    editor.set_value(value)
                    editor.blockSignals(False)
                else:
                    self._replace_editor(editor.facts.key, self._block_editor(editor.facts.name, value))
                continue
            read_only = isinstance(editor, RawEditor) and editor.read_only
            if isinstance(editor, BlockWeightEditor):  # a plain value again: back to the normal editor
                normal = widget_for_field(editor.facts.name, self.params_model.model_fields[editor.facts.name], self)
                self._replace_editor(editor.facts.key, normal)
                editor = normal
            if not editor.accepts(value) or (read_only and is_layered(value)):
                if not read_only:
                    facts = field_facts(editor.facts.name, self.params_model.model_fields[editor.facts.name])
                    replacement = RawEditor(facts, self, read_only=True)
                    self._replace_editor(editor.facts.key, replacement)
                    editor = replacement
                editor.set_value(value)
                continue
            if read_only:
                normal = widget_for_field(editor.facts.name, self.params_model.model_fields[editor.facts.name], self)
                self._replace_editor(editor.facts.key, normal)
                editor = normal
            editor.blockSignals(True)
            try:
                editor.set_value(value)
            finally:
                editor.blockSignals(False)
        self._on_editor_changed()

    def errors(self) -> dict[str, str]:
        """Current problems by recipe key (empty when the values are valid)."""
        return dict(self._errors)

    def is_valid(self) -> bool:
        return not self._errors

    def _revalidate(self) -> None:
        self._errors = validation_errors(self.params_model, self.values())
        for key, editor in self.editors.items():
            text = self._errors.get(key, "")
            editor.set_error(text)
            label = self._error_labels[key]
            label.setText(text)
            label.setVisible(bool(text))

    def _on_editor_changed(self) -> None:
        self._revalidate()
        self.sig_changed.emit()
