"""Keep a part (the VAE, the text encoder) whole from one model, as the SD mergers offer.

One row per part the loaded models have besides the UNet, each a choice of
"Merge it" or one of the models; the choices go to the recipe's ``part_sources``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel, QWidget

MERGE = ""


class PartSourcesBox(QGroupBox):
    """Per-part choice of "merge" or "take from this model"."""

    sig_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Keep whole from one model", parent)
        self.setObjectName("part_sources")
        self.setToolTip("Copy these parts unchanged from the chosen model instead of merging them")
        self._form = QFormLayout(self)
        self._form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.combos: dict[str, QComboBox] = {}
        self.hide()

    def set_choices(self, parts: list[tuple[str, str]], models: list[tuple[str, str]], chosen: dict[str, Any]) -> None:
        """``parts``: (key, label) of the parts; ``models``: (path, name) of the inputs; ``chosen``: part -> path."""
        while self._form.rowCount():
            self._form.removeRow(0)
        self.combos = {}
        for key, label in parts:
            combo = QComboBox(self)
            combo.setObjectName(f"part_{key}")
            combo.addItem("Merge it", MERGE)
            for path, name in models:
                combo.addItem(f"From {name}", path)
            index = combo.findData(chosen.get(key, MERGE))
            combo.setCurrentIndex(max(index, 0))
            combo.currentIndexChanged.connect(self.sig_changed)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
            self._form.addRow(QLabel(label, self), combo)
            self.combos[key] = combo
        self.setVisible(bool(parts) and len(models) > 1)

    def values(self) -> dict[str, str]:
        """part -> model path, for the parts taken whole."""
        return {key: combo.currentData() for key, combo in self.combos.items() if combo.currentData()}
