"""How the Permutations tab aligns: the method (auto, weight or activation matching) and the data.

Its own small widget so the align strip only places it; the choices are plain
values (``method()``, ``data_source()``) handed to the Qt-free alignment job.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QWidget

METHODS = (
    ("Auto: the better merge", "auto",
     "Run weight matching and activation matching (with data) and keep the one whose midpoint merge has the lower "
     "loss; both are shown, with how much they agree in each group"),
    ("Weight matching", "weight", "Match units by their weights (no data needed); works best on models trained with weight decay"),
    ("Activation matching", "activation", "Match units by how their activations correlate on the data"),
)


class AlignOptions(QWidget):
    """Method and data combos for an alignment."""

    sig_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("align_options")
        self.method_combo = QComboBox(self)
        self.method_combo.setObjectName("align_method")
        for label, value, tip in METHODS:
            self.method_combo.addItem(label, value)
            self.method_combo.setItemData(self.method_combo.count() - 1, tip, 3)
        self.method_combo.setToolTip("How B's units are matched to A's")
        self.data_combo = QComboBox(self)
        self.data_combo.setObjectName("align_data")
        self.data_combo.addItem("digits (built in)", "digits")
        self.data_combo.addItem("none: weights only", "")
        self.data_combo.addItem("File…", "file")
        self.data_combo.setToolTip("Inputs both models are run on, for activation matching and for choosing (Auto)")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addWidget(QLabel("Method", self))
        layout.addWidget(self.method_combo, 1)
        layout.addWidget(QLabel("Data", self))
        layout.addWidget(self.data_combo, 1)
        self.data_combo.activated.connect(self._on_data_combo_activated)
        self.method_combo.currentIndexChanged.connect(self.sig_changed)
        self.data_combo.currentIndexChanged.connect(self.sig_changed)

    def method(self) -> str:
        return str(self.method_combo.currentData())

    def set_method(self, method: str) -> None:
        index = self.method_combo.findData(method)
        if index >= 0:
            self.method_combo.setCurrentIndex(index)

    def data_source(self) -> str | None:
        """``digits``, a data file (or ``file.py:function``), or ``None`` for no data."""
        value = self.data_combo.currentData()
        return value or None

    def set_data_source(self, source: str | None) -> None:
        if not source:
            self.data_combo.setCurrentIndex(self.data_combo.findData(""))
            return
        index = self.data_combo.findData(source)
        if index < 0:
            self.data_combo.insertItem(2, Path(source.split(":")[0]).name, source)
            index = 2
        self.data_combo.setCurrentIndex(index)

    @Slot(int)
    def _on_data_combo_activated(self, index: int) -> None:
        if self.data_combo.itemData(index) != "file":
            return
        chosen, _ = QFileDialog.getOpenFileName(self, "Data for alignment", "", "Data (*.safetensors *.pt *.npz *.py)")
        if chosen:
            self.set_data_source(chosen + (":make_dataset" if chosen.endswith(".py") else ""))
        else:
            self.data_combo.setCurrentIndex(0)
