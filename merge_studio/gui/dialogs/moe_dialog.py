"""The dialog that asks what a mixture-of-experts assembly needs: base, experts and their prompts, routers.

It reads and writes mergekit-moe's YAML, so a config made here runs with
``merge-studio moe`` (or mergekit-moe) and one written by hand opens here. It only
collects choices and returns a :class:`MoeRequest`; the window runs the core job
(:mod:`merge_studio.core.moe.build`). Under the form, one line says what will be
written (a Mixtral of 4 experts...) or why it cannot be, from the base's config alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.moe.config import GATE_MODES, ExpertEntry, MoeConfig
from merge_studio.errors import MergeStudioError
from merge_studio.gui.dialogs.moe_fields import (
    PathPicker,
    model_type,
    prompts_to_text,
    text_to_prompts,
)

DTYPES = (("Same as the base", None), ("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "float32"))
PATH_ROLE = Qt.ItemDataRole.UserRole


@dataclass(frozen=True)
class MoeRequest:
    config: MoeConfig
    output: Path


class MoeDialog(QDialog):
    """Base, experts with their prompts, shared expert, router mode, experts per token, dtype, output."""

    def __init__(self, models: list[tuple[Path, str]], output: Path, parent: QWidget | None = None, *,
                 base: Path | None = None, experts: list[Path] | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("moe_dialog")
        self.setWindowTitle("Assemble a mixture of experts")
        self._models = models
        self._entries: list[ExpertEntry] = []
        self._shared_entry: ExpertEntry | None = None
        self._current = -1

        self.base_picker = PathPicker(models, self)
        self.base_picker.setObjectName("moe_base")
        if base is not None:
            self.base_picker.set_path(str(base))
        self.base_picker.sig_changed.connect(self._refresh_summary)

        self.expert_list = QListWidget(self)
        self.expert_list.setObjectName("moe_experts")
        self.expert_list.currentRowChanged.connect(self._on_expert_list_row_changed)
        add = QPushButton("Add…", self)
        add.setToolTip("Add an expert model folder")
        add.clicked.connect(self._ask_add_expert)
        self.add_loaded = QComboBox(self)
        self.add_loaded.addItem("Add a loaded model…", "")
        for path, name in models:
            self.add_loaded.addItem(name, str(path))
        self.add_loaded.activated.connect(self._on_add_loaded_activated)
        self.add_loaded.setVisible(bool(models))
        remove = QPushButton("Remove", self)
        remove.clicked.connect(self._remove_expert)
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(add)
        list_buttons.addWidget(self.add_loaded, 1)
        list_buttons.addWidget(remove)
        left = QVBoxLayout()
        left.addWidget(self.expert_list, 1)
        left.addLayout(list_buttons)

        self.positive_edit = QPlainTextEdit(self)
        self.positive_edit.setObjectName("moe_positive")
        self.positive_edit.setPlaceholderText("Prompts this expert should get, one a line")
        self.negative_edit = QPlainTextEdit(self)
        self.negative_edit.setObjectName("moe_negative")
        self.negative_edit.setPlaceholderText("Prompts it should not get (optional)")
        prompt_hint = QLabel("One prompt a line; write \\n for a line break inside a prompt.", self)
        prompt_hint.setObjectName("muted")
        for edit in (self.positive_edit, self.negative_edit):
            edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)  # a line is a prompt
            edit.textChanged.connect(self._refresh_summary)
        right = QVBoxLayout()
        right.addWidget(QLabel("Positive prompts", self))
        right.addWidget(self.positive_edit, 2)
        right.addWidget(QLabel("Negative prompts", self))
        right.addWidget(self.negative_edit, 1)
        right.addWidget(prompt_hint)
        experts_box = QGroupBox("Experts (each one's MLPs become one expert of every layer)", self)
        box_row = QHBoxLayout(experts_box)
        box_row.addLayout(left, 2)
        box_row.addLayout(right, 3)

        self.shared_picker = PathPicker(models, self, optional=True)
        self.shared_picker.setToolTip("Qwen2-MoE only: a model whose MLP every token goes through")
        self.shared_picker.sig_changed.connect(self._refresh_summary)
        self.gate_combo = QComboBox(self)
        self.gate_combo.setObjectName("moe_gate_mode")
        for mode, sentence in GATE_MODES.items():
            self.gate_combo.addItem(mode, mode)
            self.gate_combo.setItemData(self.gate_combo.count() - 1, sentence, Qt.ItemDataRole.ToolTipRole)
        self.gate_combo.currentIndexChanged.connect(self._refresh_summary)
        self.gate_hint = QLabel(self)
        self.gate_hint.setObjectName("muted")
        self.gate_hint.setWordWrap(True)
        self.per_token_spin = QSpinBox(self)
        self.per_token_spin.setRange(1, 64)
        self.per_token_spin.setValue(2)
        self.per_token_spin.valueChanged.connect(self._refresh_summary)
        self.dtype_combo = QComboBox(self)
        for label, value in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.output_edit = QLineEdit(str(output), self)
        self.output_edit.setObjectName("moe_output")
        out_browse = QPushButton("…", self)
        out_browse.setMaximumWidth(out_browse.fontMetrics().horizontalAdvance("…") + 24)
        out_browse.clicked.connect(self._browse_output)
        out_row = QHBoxLayout()
        out_row.addWidget(self.output_edit, 1)
        out_row.addWidget(out_browse)

        form = QFormLayout()
        form.addRow("Base model", self.base_picker)
        gate_row = QHBoxLayout()
        self.gate_combo.setMinimumWidth(self.gate_combo.fontMetrics().horizontalAdvance("uniform_random") + 48)
        gate_row.addWidget(self.gate_combo)
        gate_row.addWidget(self.gate_hint, 1)
        sizes_row = QHBoxLayout()
        sizes_row.addWidget(self.per_token_spin)
        sizes_row.addSpacing(24)
        sizes_row.addWidget(QLabel("Output dtype", self))
        sizes_row.addWidget(self.dtype_combo)
        sizes_row.addStretch(1)
        top = QFormLayout()
        top.addRow("Shared expert", self.shared_picker)
        top.addRow("Routers from", gate_row)
        top.addRow("Experts per token", sizes_row)
        top.addRow("Output folder", out_row)

        self.summary = QLabel(self)
        self.summary.setObjectName("moe_summary")
        self.summary.setWordWrap(True)
        load = QPushButton("Open YAML…", self)
        load.setToolTip("Fill the dialog from a mergekit-moe YAML file")
        load.clicked.connect(self._ask_load_yaml)
        save = QPushButton("Save YAML…", self)
        save.setToolTip("Save these choices as a mergekit-moe YAML file (runs with merge-studio moe)")
        save.clicked.connect(self._ask_save_yaml)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Assemble")
        self.buttons.addButton(load, QDialogButtonBox.ButtonRole.ResetRole)
        self.buttons.addButton(save, QDialogButtonBox.ButtonRole.ResetRole)
        self.buttons.accepted.connect(self._on_buttons_accepted)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(experts_box, 1)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.buttons)
        for path in experts or []:
            self.add_expert(str(path))
        self._refresh_summary()
        self.resize(760, 620)

    # --- experts ------------------------------------------------------------------------------
    def add_expert(self, path: str, positive: list[str] | None = None, negative: list[str] | None = None) -> None:
        self._store_current()
        self._entries.append(ExpertEntry(source_model=path, positive_prompts=positive, negative_prompts=negative))
        item = QListWidgetItem(self._label(path))
        item.setToolTip(path)
        self.expert_list.addItem(item)
        self.expert_list.setCurrentRow(self.expert_list.count() - 1)
        self._refresh_summary()

    def _label(self, path: str) -> str:
        for p, name in self._models:
            if str(p) == path:
                return name
        return Path(path).name or path

    def _ask_add_expert(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Add an expert model folder", self.base_picker.path())
        if path:
            self.add_expert(path)

    def _on_add_loaded_activated(self, index: int) -> None:
        path = self.add_loaded.itemData(index)
        self.add_loaded.setCurrentIndex(0)
        if path:
            self.add_expert(path)

    def _remove_expert(self) -> None:
        row = self.expert_list.currentRow()
        if row < 0:
            return
        self._current = -1  # its edits go with it
        del self._entries[row]
        self.expert_list.takeItem(row)
        self._refresh_summary()

    def _store_current(self) -> None:
        if 0 <= self._current < len(self._entries):
            entry = self._entries[self._current]
            self._entries[self._current] = entry.model_copy(update={
                "positive_prompts": text_to_prompts(self.positive_edit.toPlainText()) or None,
                "negative_prompts": text_to_prompts(self.negative_edit.toPlainText()) or None,
            })

    def _on_expert_list_row_changed(self, row: int) -> None:
        self._store_current()
        self._current = -1  # nothing is stored while the editors show the next expert
        entry = self._entries[row] if 0 <= row < len(self._entries) else None
        self.positive_edit.setPlainText(prompts_to_text(entry.positive_prompts) if entry else "")
        self.negative_edit.setPlainText(prompts_to_text(entry.negative_prompts) if entry else "")
        self._current = row
        self.positive_edit.setEnabled(entry is not None)
        self.negative_edit.setEnabled(entry is not None)

    # --- YAML -----------------------------------------------------------------------------------
    def set_config(self, config: MoeConfig) -> None:
        """Fill the dialog from a config (what Open YAML does)."""
        self._current = -1
        self._entries.clear()
        self.expert_list.clear()
        self.base_picker.set_path(config.base_model)
        for e in config.experts:
            self.add_expert(e.source_model, e.positive_prompts, e.negative_prompts)
            self._entries[-1] = e
        shared = config.shared_experts[0] if config.shared_experts else None
        self._shared_entry = shared
        self.shared_picker.set_path(shared.source_model if shared else "")
        self.gate_combo.setCurrentIndex(max(0, self.gate_combo.findData(config.gate_mode)))
        self.per_token_spin.setValue(config.experts_per_token)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(config.dtype)))
        self._refresh_summary()

    def config(self) -> MoeConfig:
        """The choices as mergekit-moe's config (not yet checked against the models)."""
        self._store_current()
        shared_path = self.shared_picker.path()
        shared = None
        if shared_path:  # the YAML's entry keeps its prompts; a new one gets every expert's
            old = self._shared_entry
            shared = [old.model_copy(update={"source_model": shared_path}) if old is not None else
                      ExpertEntry(source_model=shared_path, positive_prompts=self._all_positive() or None)]
        values = dict(base_model=self.base_picker.path(), experts=list(self._entries),
                      gate_mode=self.gate_combo.currentData(), dtype=self.dtype_combo.currentData(),
                      experts_per_token=self.per_token_spin.value(), shared_experts=shared)
        return MoeConfig.model_validate(values) if self._entries else MoeConfig.model_construct(**values)

    def _all_positive(self) -> list[str]:
        return [p for e in self._entries for p in e.positive_prompts or []]

    def _ask_load_yaml(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a mergekit-moe YAML", "", "YAML (*.yml *.yaml)")
        if path:
            self.load_yaml(Path(path))

    def load_yaml(self, path: Path) -> bool:
        from merge_studio.core.moe.config import load_moe_config

        try:
            self.set_config(load_moe_config(path))
        except MergeStudioError as exc:
            self._show_problem(str(exc))
            return False
        return True

    def _ask_save_yaml(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save as mergekit-moe YAML", "moe.yml", "YAML (*.yml *.yaml)")
        if path:
            self.save_yaml(Path(path))

    def save_yaml(self, path: Path) -> None:
        text = self.config().to_yaml()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)

    def _browse_output(self) -> None:
        start = Path(self.output_edit.text())
        folder = QFileDialog.getExistingDirectory(self, "Write the model folder in", str(start.parent))
        if folder:
            self.output_edit.setText(str(Path(folder) / start.name))

    # --- checking -------------------------------------------------------------------------------
    def problem(self) -> str | None:
        """Why the choices cannot be assembled, from what is known without reading a model."""
        from merge_studio.core.hf.moe_families import moe_form_for

        config = self.config()
        if not config.base_model:
            return "Choose a base model."
        if not self._entries:
            return "Add the expert models."
        try:
            config.check(allow_all_same=False)
            family = model_type(config.base_model)
            if family is not None:
                moe_form_for(family, shared_experts=len(config.shared_experts or []))
        except MergeStudioError as exc:
            return str(exc)
        if not self.output_edit.text().strip():
            return "Choose an output folder."
        return None

    def _refresh_summary(self) -> None:
        from merge_studio.core.hf.moe_families import moe_form_for

        self.gate_hint.setText(GATE_MODES.get(self.gate_combo.currentData() or "", "").capitalize() + ".")
        problem = self.problem()
        self.ok_button.setEnabled(problem is None)
        if problem is not None:
            self._show_problem(problem)
            return
        config = self.config()
        family = model_type(config.base_model)
        form = moe_form_for(family, shared_experts=len(config.shared_experts or [])).label if family else "an MoE"
        n = len(config.experts)
        self.summary.setStyleSheet("")
        self.summary.setText(f"Writes a {form} of {n} expert{'s' * (n != 1)}, {config.experts_per_token} per token; "
                             "attention, norms and embeddings from the base.")

    def _show_problem(self, text: str) -> None:
        self.summary.setStyleSheet("color: #b3261e;")
        self.summary.setText(text)

    def _on_buttons_accepted(self) -> None:
        if self.problem() is None:
            self.accept()

    def request(self) -> MoeRequest:
        return MoeRequest(self.config(), Path(self.output_edit.text().strip()).expanduser())
