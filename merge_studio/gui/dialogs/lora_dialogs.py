"""Dialogs that ask what a LoRA job needs: merging adapters, extracting a LoRA.

They only collect choices and return a plain request; the window runs the core
job (:mod:`merge_studio.core.lora.combine`, :mod:`merge_studio.core.lora.extract`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class MergeAdaptersRequest:
    paths: tuple[Path, ...]
    weights: tuple[float, ...]
    mode: str  # "concat" | "svd"
    rank: int | None
    output: Path


@dataclass(frozen=True)
class ExtractRequest:
    tuned: Path
    base: Path
    rank: int
    format: str  # "auto" | "peft" | "kohya"
    output: Path


def _output_row(parent: QWidget, edit: QLineEdit, folder: bool) -> QHBoxLayout:
    browse = QPushButton("…", parent)
    browse.setToolTip("Choose where to write the adapter")
    browse.setMaximumWidth(browse.fontMetrics().horizontalAdvance("…") + 24)

    def choose() -> None:
        start = edit.text()
        if folder and not start.endswith(".safetensors"):
            path = QFileDialog.getExistingDirectory(parent, "Write the adapter folder in", str(Path(start).parent))
            path = str(Path(path) / Path(start).name) if path else ""
        else:
            path, _ = QFileDialog.getSaveFileName(parent, "Write the LoRA to", start, "Safetensors (*.safetensors)")
        if path:
            edit.setText(path)

    browse.clicked.connect(choose)
    row = QHBoxLayout()
    row.addWidget(edit, 1)
    row.addWidget(browse)
    return row


class MergeAdaptersDialog(QDialog):
    """Weights per adapter, concatenation or SVD to a rank, and where to write the result."""

    def __init__(self, adapters: list[tuple[Path, str, int]], output: Path, parent: QWidget | None = None) -> None:
        """``adapters``: (path, name, largest rank) of each adapter to merge."""
        super().__init__(parent)
        self.setObjectName("merge_adapters_dialog")
        self.setWindowTitle("Merge LoRA adapters")
        self._paths = [p for p, _, _ in adapters]
        form = QFormLayout()
        self.weight_spins: list[QDoubleSpinBox] = []
        for _, name, rank in adapters:
            spin = QDoubleSpinBox(self)
            spin.setRange(-10.0, 10.0)
            spin.setSingleStep(0.1)
            spin.setValue(1.0)
            spin.setToolTip(f"How much of {name} goes into the merge (rank {rank})")
            form.addRow(name, spin)
            self.weight_spins.append(spin)
        self.concat_radio = QRadioButton("Concatenate: exact, rank is the sum of the ranks", self)
        self.svd_radio = QRadioButton("Re-factorise (SVD) to rank", self)
        self.concat_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.concat_radio)
        group.addButton(self.svd_radio)
        self.rank_spin = QSpinBox(self)
        self.rank_spin.setRange(1, 4096)
        self.rank_spin.setValue(max((r for _, _, r in adapters), default=8))
        self.rank_spin.setEnabled(False)
        self.svd_radio.toggled.connect(self.rank_spin.setEnabled)
        svd_row = QHBoxLayout()
        svd_row.addWidget(self.svd_radio)
        svd_row.addWidget(self.rank_spin)
        svd_row.addStretch(1)
        self.output_edit = QLineEdit(str(output), self)
        self.output_edit.setObjectName("adapter_output")
        hint = QLabel("The kept energy of an SVD merge is shown in the log when it is done.", self)
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Merge")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Weights", self))
        layout.addLayout(form)
        layout.addWidget(self.concat_radio)
        layout.addLayout(svd_row)
        layout.addWidget(QLabel("Output", self))
        layout.addLayout(_output_row(self, self.output_edit, folder=not str(output).endswith(".safetensors")))
        layout.addWidget(hint)
        layout.addWidget(buttons)

    def request(self) -> MergeAdaptersRequest:
        svd = self.svd_radio.isChecked()
        return MergeAdaptersRequest(
            tuple(self._paths), tuple(s.value() for s in self.weight_spins), "svd" if svd else "concat",
            self.rank_spin.value() if svd else None, Path(self.output_edit.text().strip()).expanduser(),
        )


class ExtractLoraDialog(QDialog):
    """Which model is the base, the rank, the format and the output of a LoRA extraction."""

    def __init__(self, tuned: tuple[Path, str], bases: list[tuple[Path, str]], output: Path,
                 parent: QWidget | None = None, *, default_base: Path | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("extract_lora_dialog")
        self.setWindowTitle("Extract a LoRA")
        self._tuned = tuned[0]
        self._stem = Path(output).name
        self.base_combo = QComboBox(self)
        for path, name in bases:
            self.base_combo.addItem(name, str(path))
        if default_base is not None:
            self.base_combo.setCurrentIndex(max(0, self.base_combo.findData(str(default_base))))
        self.rank_spin = QSpinBox(self)
        self.rank_spin.setRange(1, 4096)
        self.rank_spin.setValue(16)
        self.rank_spin.setToolTip("Rank of every layer's factors: higher keeps more of the fine-tune, in a larger file")
        self.format_combo = QComboBox(self)
        for label, value in (("Automatic (kohya for Stable Diffusion, else PEFT)", "auto"),
                             ("PEFT folder", "peft"), ("kohya .safetensors", "kohya")):
            self.format_combo.addItem(label, value)
        self.output_edit = QLineEdit(str(output), self)
        self.output_edit.setObjectName("adapter_output")
        form = QFormLayout()
        form.addRow("Fine-tuned", QLabel(tuned[1], self))
        form.addRow("Base", self.base_combo)
        form.addRow("Rank", self.rank_spin)
        form.addRow("Format", self.format_combo)
        form.addRow("Output", _output_row(self, self.output_edit, folder=True))
        hint = QLabel("Each layer's change is factorised by a truncated SVD; the error of every layer is "
                      "shown in the log when it is done.", self)
        hint.setObjectName("muted")
        hint.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Extract")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(hint)
        layout.addWidget(buttons)

    def request(self) -> ExtractRequest:
        return ExtractRequest(self._tuned, Path(self.base_combo.currentData()), self.rank_spin.value(),
                              self.format_combo.currentData(), Path(self.output_edit.text().strip()).expanduser())
