"""The block-weight editor: one value per UNet block (BASE, IN00…, M00, OUT00…), as in supermerger.

:class:`BlockBars` draws the blocks as bars grouped into BASE, IN, M and OUT; a
click or a drag across the bars sets their values (drawing a curve), arrow keys
move and nudge. :class:`BlockWeightEditor` is the parameter-form editor around
it: a preset list with the tools' names, the selected block's exact value, and
the comma-separated text those tools import and export. Its value is the recipe
form ``{blocks: [v, …]}`` (see :mod:`merge_studio.core.naming.blocks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.naming.blocks import (
    BASE_KEY,
    BLOCKS_KEY,
    block_mapping,
    format_block_text,
    is_block_weights,
    listed_values,
    parse_block_text,
)
from merge_studio.core.naming.presets import DESCRIPTIONS, PRESET_NAMES, SD_BLOCKS, preset_for
from merge_studio.errors import RecipeError
from merge_studio.gui.forms.field_widgets import FieldEditor, FieldFacts

XL_BLOCKS = ("BASE", *(f"IN{i:02d}" for i in range(9)), "M00", *(f"OUT{i:02d}" for i in range(9)))
GROUP_COLORS = {"BASE": "#eceff1", "IN": "#e3f2fd", "M": "#f3e5f5", "OUT": "#fff3e0"}
BAR_COLORS = {"BASE": "#78909c", "IN": "#1e88e5", "M": "#8e24aa", "OUT": "#fb8c00"}


def group_of(block: str) -> str:
    return "BASE" if block == "BASE" else "M" if block.startswith("M") else "OUT" if block.startswith("OUT") else "IN"


def blocks_for_count(count: int) -> tuple[str, ...]:
    """The block list a positional value of ``count`` numbers belongs to (SD 1.x/2.x or SDXL)."""
    if count in (len(XL_BLOCKS), len(XL_BLOCKS) - 1):
        return XL_BLOCKS
    return SD_BLOCKS


class BlockBars(QWidget):
    """Bars for the blocks; click or drag to set values, arrows to move and nudge."""

    sig_changed = Signal()
    """Values changed by the user."""
    sig_selected = Signal(int)
    """The selected block changed (its index)."""

    MARGIN_TOP, LABEL_HEIGHT, GROUP_HEIGHT = 6, 14, 14

    def __init__(self, blocks: Sequence[str], lo: float = 0.0, hi: float = 1.0, step: float = 0.05,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("block_bars")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.blocks = tuple(blocks)
        self.values = [0.0] * len(self.blocks)
        self.lo, self.hi, self.step = lo, hi, step
        self.limits = (lo, hi)  # what the field allows (the view may show less)
        self.selected = 0
        self._hover = -1

    # --- geometry ---------------------------------------------------------------------
    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(14 * len(self.blocks) + 8, 132)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(9 * len(self.blocks) + 8, 132)

    def _plot(self) -> QRectF:
        return QRectF(4, self.MARGIN_TOP + self.GROUP_HEIGHT, self.width() - 8,
                      self.height() - self.MARGIN_TOP - self.GROUP_HEIGHT - self.LABEL_HEIGHT - 2)

    def _slot(self, i: int) -> QRectF:
        plot = self._plot()
        w = plot.width() / max(len(self.blocks), 1)
        return QRectF(plot.left() + i * w, plot.top(), w, plot.height())

    def _y(self, value: float) -> float:
        plot = self._plot()
        frac = (value - self.lo) / (self.hi - self.lo) if self.hi > self.lo else 0.0
        return plot.bottom() - max(0.0, min(1.0, frac)) * plot.height()

    def index_at(self, x: float) -> int:
        plot = self._plot()
        w = plot.width() / max(len(self.blocks), 1)
        return max(0, min(len(self.blocks) - 1, int((x - plot.left()) // w)))

    def value_at(self, y: float) -> float:
        plot = self._plot()
        frac = (plot.bottom() - y) / plot.height() if plot.height() > 0 else 0.0
        value = self.lo + max(0.0, min(1.0, frac)) * (self.hi - self.lo)
        value = round(value / self.step) * self.step
        return round(max(self.limits[0], min(self.limits[1], value)), 6)

    def set_values(self, values: Sequence[float]) -> None:
        self.values = [float(v) for v in values]
        low, high = min(self.values + [0.0]), max(self.values + [1.0])
        self.lo, self.hi = max(self.limits[0], min(self.lo, low)), min(self.limits[1], max(self.hi, high))
        self.update()

    # --- painting ---------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        plot = self._plot()
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() * 0.72))
        p.setFont(small)
        # group bands and their titles
        start = 0
        while start < len(self.blocks):
            group = group_of(self.blocks[start])
            end = start
            while end + 1 < len(self.blocks) and group_of(self.blocks[end + 1]) == group:
                end += 1
            band = self._slot(start).united(self._slot(end))
            p.fillRect(QRectF(band.left(), self.MARGIN_TOP, band.width(), band.bottom() - self.MARGIN_TOP),
                       QColor(GROUP_COLORS[group]))
            p.setPen(QColor("#455a64"))
            title = QRectF(band.left(), self.MARGIN_TOP, band.width(), self.GROUP_HEIGHT)
            p.drawText(title, Qt.AlignmentFlag.AlignCenter, group if band.width() > 24 else group[0])
            start = end + 1
        # zero line and bars
        zero = self._y(0.0)
        p.setPen(QPen(QColor("#90a4ae"), 1, Qt.PenStyle.DashLine))
        p.drawLine(QPointF(plot.left(), zero), QPointF(plot.right(), zero))
        label_step = max(1, math.ceil((p.fontMetrics().horizontalAdvance("00") + 3) / max(self._slot(0).width(), 1.0)))
        for i, (block, value) in enumerate(zip(self.blocks, self.values, strict=True)):
            slot = self._slot(i)
            pad = max(1.0, slot.width() * 0.18)
            top, bottom = sorted((self._y(value), zero))
            bar = QRectF(slot.left() + pad, top, slot.width() - 2 * pad, max(bottom - top, 1.5))
            color = QColor(BAR_COLORS[group_of(block)])
            if i != self.selected and i != self._hover:
                color.setAlpha(190)
            p.fillRect(bar, color)
            if i == self.selected and self.hasFocus():
                p.setPen(QPen(QColor("#263238"), 1.5))
                p.drawRect(bar.adjusted(-1, -1, 1, 1))
            number = block.lstrip("INOUTM")
            if group_of(block) in ("IN", "OUT") and number.isdigit() and int(number) % label_step == 0:
                # the band titles above name BASE and M; the IN and OUT blocks get their numbers
                p.setPen(QColor("#263238") if i == self.selected else QColor("#607d8b"))
                label = number
                wide = QRectF(slot.center().x() - 12, plot.bottom() + 1, 24, self.LABEL_HEIGHT)
                p.drawText(wide, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, label)
        p.end()

    # --- interaction ------------------------------------------------------------------
    def _set_from(self, pos: QPointF) -> None:
        i = self.index_at(pos.x())
        value = self.value_at(pos.y())
        changed = self.values[i] != value
        self.values[i] = value
        self._select(i)
        if changed:
            self.update()
            self.sig_changed.emit()

    def _select(self, i: int) -> None:
        if i != self.selected:
            self.selected = i
            self.update()
            self.sig_selected.emit(i)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._set_from(event.position())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._set_from(event.position())
        else:
            i = self.index_at(event.position().x())
            if i != self._hover:
                self._hover = i
                self.setToolTip(f"{self.blocks[i]}: {self.values[i]:g}")
                self.update()

    def leaveEvent(self, event) -> None:  # noqa: ANN001, N802
        self._hover = -1
        self.update()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        key = event.key()
        if key in (Qt.Key.Key_Left, Qt.Key.Key_Right):
            self._select(max(0, min(len(self.blocks) - 1, self.selected + (1 if key == Qt.Key.Key_Right else -1))))
        elif key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            delta = self.step if key == Qt.Key.Key_Up else -self.step
            value = round(max(self.limits[0], min(self.limits[1], self.values[self.selected] + delta)), 6)
            self.values[self.selected] = value
            self.set_values(self.values)
            self.sig_changed.emit()
        else:
            super().keyPressEvent(event)


class BlockWeightEditor(FieldEditor):
    """A parameter given per UNet block: bars, presets, the selected block's value and the text form."""

    def __init__(self, facts: FieldFacts, parent: QWidget | None = None, *, blocks: Sequence[str] = SD_BLOCKS) -> None:
        super().__init__(facts, parent)
        self.setObjectName(f"field_{facts.name}_blocks")
        lo = facts.lower if facts.lower is not None else -10.0
        hi = facts.upper if facts.upper is not None else 10.0
        step = float(facts.hints.get("step") or 0.05)
        self._limits = (lo, hi)
        self._base_only: float | None = None
        body = QWidget(self)
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        self._layout.addWidget(body, 1)

        self.preset_combo = QComboBox(self)
        self.preset_combo.setObjectName("block_presets")
        self.preset_combo.addItem("Preset…", None)
        for name in PRESET_NAMES:
            self.preset_combo.addItem(name, name)
            if name in DESCRIPTIONS:
                self.preset_combo.setItemData(self.preset_combo.count() - 1, DESCRIPTIONS[name], Qt.ItemDataRole.ToolTipRole)
        self.preset_combo.setToolTip("Fill the blocks with a preset (supermerger / merge-block-weighted names)")
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_combo.setMinimumContentsLength(8)
        self.preset_combo.activated.connect(self._on_preset_combo_activated)
        self.copy_button = QToolButton(self)
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip("Copy the weights as comma-separated text (supermerger's form)")
        self.copy_button.clicked.connect(self._on_copy_button_clicked)
        self.single_button = QToolButton(self)
        self.single_button.setText("One value")
        self.single_button.setToolTip("Use one value for every block again")
        top = QHBoxLayout()
        top.setSpacing(4)
        top.addWidget(self.preset_combo, 1)
        top.addWidget(self.copy_button)
        top.addWidget(self.single_button)
        column.addLayout(top)

        self.bars = BlockBars(blocks, max(lo, 0.0) if lo < 0 <= hi else lo, min(hi, 1.0) if hi > 1 >= lo else hi,
                              step, self)
        self.bars.limits = (lo, hi)
        self.bars.sig_changed.connect(self._on_bars_changed)
        self.bars.sig_selected.connect(self._show_selected)
        column.addWidget(self.bars)

        self.block_label = QLabel(self)
        self.block_label.setMinimumWidth(self.block_label.fontMetrics().horizontalAdvance("OUT11") + 6)
        self.block_spin = QDoubleSpinBox(self)
        self.block_spin.setRange(lo, hi)
        self.block_spin.setSingleStep(step)
        self.block_spin.setDecimals(3)
        self.block_spin.setKeyboardTracking(False)
        self.block_spin.setToolTip("The selected block's exact value (click a bar, or use the arrow keys on the bars)")
        self.block_spin.valueChanged.connect(self._on_block_spin_changed)
        self.all_button = QToolButton(self)
        self.all_button.setText("Set all")
        self.all_button.setToolTip("Give every block this value")
        self.all_button.clicked.connect(self._on_all_button_clicked)
        middle = QHBoxLayout()
        middle.setSpacing(4)
        middle.addWidget(self.block_label)
        middle.addWidget(self.block_spin)
        middle.addWidget(self.all_button)
        middle.addStretch(1)
        column.addLayout(middle)

        self.text_edit = QLineEdit(self)
        self.text_edit.setObjectName("block_text")
        self.text_edit.setToolTip(
            "The weights as text, BASE first, as supermerger and merge-block-weighted write them: "
            "paste a list here to import it, copy it to use it there"
        )
        self.text_edit.editingFinished.connect(self._on_text_edit_finished)
        column.addWidget(self.text_edit)
        self.text_error = QLabel(self)
        self.text_error.setObjectName("field_error")
        self.text_error.setWordWrap(True)
        self.text_error.hide()
        column.addWidget(self.text_error)
        fill = float(facts.default) if isinstance(facts.default, int | float) else 0.0
        self.set_blocks(blocks, [fill] * len(blocks))

    # --- values -----------------------------------------------------------------------
    @property
    def blocks(self) -> tuple[str, ...]:
        return self.bars.blocks

    def set_blocks(self, blocks: Sequence[str], values: Sequence[float] | None = None) -> None:
        """Show ``blocks`` (26 for SD 1.x/2.x, 20 for SDXL), keeping the values of blocks of the same name."""
        old = dict(zip(self.bars.blocks, self.bars.values, strict=True))
        self.bars.blocks = tuple(blocks)
        fill = self.facts.default if isinstance(self.facts.default, int | float) else 0.0
        self.bars.set_values(values if values is not None else [old.get(b, fill) for b in blocks])
        self._show_selected(min(self.bars.selected, len(blocks) - 1))
        self._show_text()

    def accepts(self, value: Any) -> bool:
        return is_block_weights(value)

    def value(self) -> dict[str, Any]:
        return {BLOCKS_KEY: list(self.bars.values)}

    def set_value(self, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.set_blocks(self.blocks, [float(value)] * len(self.blocks))
            self.sig_changed.emit()
            return
        positional, named = listed_values(value)
        blocks = blocks_for_count(len(positional)) if positional is not None else self.blocks
        mapping = block_mapping(value, blocks)
        fill = self.facts.default if isinstance(self.facts.default, int | float) else 0.0
        self.set_blocks(blocks, [mapping.get(b, fill) for b in blocks])
        self.sig_changed.emit()

    # --- slots ------------------------------------------------------------------------
    def _show_selected(self, index: int) -> None:
        self.bars.selected = index
        self.block_label.setText(self.blocks[index])
        self.block_spin.blockSignals(True)
        self.block_spin.setValue(self.bars.values[index])
        self.block_spin.blockSignals(False)

    def _show_text(self) -> None:
        self.text_edit.setText(format_block_text(self.bars.values))
        self.text_error.hide()

    def _changed(self) -> None:
        self._show_selected(self.bars.selected)
        self._show_text()
        self.sig_changed.emit()

    def _on_bars_changed(self) -> None:
        self._changed()

    def _on_block_spin_changed(self, value: float) -> None:
        self.bars.values[self.bars.selected] = float(value)
        self.bars.set_values(self.bars.values)
        self._show_text()
        self.sig_changed.emit()

    def _on_all_button_clicked(self) -> None:
        self.bars.set_values([self.block_spin.value()] * len(self.blocks))
        self._changed()

    def _on_preset_combo_activated(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name:
            self.apply_preset(name)
        self.preset_combo.setCurrentIndex(0)

    def apply_preset(self, name: str) -> None:
        """Set the values of a named preset (for this model's blocks)."""
        self.bars.set_values(preset_for(name, self.blocks))
        self._changed()

    def import_text(self, text: str) -> bool:
        """Take the tools' comma-separated form; a wrong count or a typo is shown under the field."""
        try:
            values = parse_block_text(text)
            blocks = self.blocks if len(values) in (len(self.blocks), len(self.blocks) - 1) else blocks_for_count(len(values))
            mapping = block_mapping({BLOCKS_KEY: values, **({BASE_KEY: self.bars.values[0]} if len(values) == len(blocks) - 1 else {})},
                                    blocks)
        except RecipeError as exc:
            self.text_error.setText(exc.message + (f" ({exc.hint})" if exc.hint else ""))
            self.text_error.show()
            return False
        self.set_blocks(blocks, [mapping[b] for b in blocks])
        self.sig_changed.emit()
        return True

    def _on_text_edit_finished(self) -> None:
        text = self.text_edit.text().strip()
        if text != format_block_text(self.bars.values):
            self.import_text(text)

    def _on_copy_button_clicked(self) -> None:
        QGuiApplication.clipboard().setText(format_block_text(self.bars.values))


def can_vary_by_block(facts: FieldFacts) -> bool:
    """A number that may vary by layer: it can be given per block."""
    return facts.annotation is float and facts.per_layer


def block_toggle(parent: QWidget | None = None) -> QToolButton:
    """The small button beside a number in the form that turns it into block weights."""
    button = QToolButton(parent)
    button.setObjectName("block_toggle")
    button.setText("Blocks")
    button.setToolTip("Give this value per UNet block (BASE, IN, M, OUT), as in supermerger")
    return button
