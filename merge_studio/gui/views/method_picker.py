"""The method panel: pick a method, set its parameters and per-model coefficients, choose the output."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.methods.registry import list_methods
from merge_studio.core.methods.spec import MethodSpec
from merge_studio.gui.family import session_naming
from merge_studio.gui.forms.coefficient_table import CoefficientTable
from merge_studio.gui.forms.param_form import ParamForm
from merge_studio.gui.forms.part_sources import PartSourcesBox
from merge_studio.gui.session import Session
from merge_studio.gui.views.checkpoint_model import CheckpointTableModel

DTYPE_CHOICES = (("Same as inputs", None), ("float32", "float32"), ("float16", "float16"), ("bfloat16", "bfloat16"))
MISMATCH_CHOICES = (
    ("Stop and report", "error"),
    ("Copy from base / first", "copy_base"),
    ("Leave out", "skip"),
)


BASIC_DEVICE_CHOICES = (("Auto (GPU if present)", "auto"), ("CPU", "cpu"))


def device_choices() -> list[tuple[str, str]]:
    """auto and cpu always; one entry per CUDA device when there are any (imports torch)."""
    choices = list(BASIC_DEVICE_CHOICES)
    try:
        import torch

        for i in range(torch.cuda.device_count()):
            choices.append((f"cuda:{i} {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    except Exception:  # noqa: BLE001, S110 - a broken driver must not stop the window
        pass
    return choices


def _combo_select(combo: QComboBox, data: object) -> None:
    index = combo.findData(data)
    if index < 0 and data is not None:
        combo.addItem(str(data), data)
        index = combo.count() - 1
    combo.setCurrentIndex(max(index, 0))


class MethodPicker(QWidget):
    """Edits the session's method, parameters and output settings."""

    sig_method_changed = Signal(str)
    """The method's registry name."""
    sig_changed = Signal()
    """Parameters or output settings changed (revalidate, mark unsaved)."""
    sig_merge_requested = Signal()
    """The Merge button was clicked."""
    sig_slices_requested = Signal()
    """The "Stack layers…" button was clicked (the window opens the slice editor)."""

    def __init__(self, session: Session, table_model: CheckpointTableModel, parent: QWidget | None = None, *,
                 probe_devices: bool = True) -> None:
        """``probe_devices=False`` lists only auto and CPU until :meth:`add_device_choices`
        (asking torch for GPUs costs over a second; the window does it after its first paint)."""
        super().__init__(parent)
        self.setObjectName("method_picker")
        self.session = session
        self.table_model = table_model
        self._updating = False

        # --- method ---
        self.method_combo = QComboBox(self)
        self.method_combo.setObjectName("method_combo")
        self.method_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo.setMinimumContentsLength(16)
        self._fill_methods()
        self.method_combo.currentIndexChanged.connect(self._on_method_combo_changed)
        self.description = QLabel(self)
        self.description.setObjectName("method_description")
        self.description.setWordWrap(True)
        self.requirements = QLabel(self)
        self.requirements.setObjectName("muted")
        self.requirements.setWordWrap(True)
        method_box = QGroupBox("Method", self)
        ml = QVBoxLayout(method_box)
        ml.addWidget(self.method_combo)
        ml.addWidget(self.description)
        ml.addWidget(self.requirements)
        self.slices_button = QPushButton("Stack layers…", self)
        self.slices_button.setObjectName("slices_button")
        self.slices_button.setToolTip("Pick layer ranges of the models to stack into a model of a new depth "
                                      "(mergekit's slices), or to give parameters per range")
        self.slices_button.clicked.connect(self.sig_slices_requested)
        self.slices_label = QLabel(self)
        self.slices_label.setObjectName("muted")
        self.slices_label.setWordWrap(True)
        slices_row = QHBoxLayout()
        slices_row.addWidget(self.slices_button)
        slices_row.addWidget(self.slices_label, 1)
        ml.addLayout(slices_row)

        # --- parameters ---
        self.params_box = QGroupBox("Parameters", self)
        self.params_layout = QVBoxLayout(self.params_box)
        self.form: ParamForm | None = None
        self.parts_box = PartSourcesBox(self)
        self.parts_box.sig_changed.connect(self._on_parts_box_changed)

        # --- per-model ---
        self.coeff_box = QGroupBox("Per-model coefficients", self)
        cl = QVBoxLayout(self.coeff_box)
        self.coefficients = CoefficientTable(table_model, self.coeff_box)
        self.coefficients.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        coeff_hint = QLabel("Double-click a value to edit it (also in the model list).", self.coeff_box)
        coeff_hint.setObjectName("muted")
        coeff_hint.setWordWrap(True)
        cl.addWidget(self.coefficients)
        cl.addWidget(coeff_hint)
        table_model.sig_params_edited.connect(self._on_changed)
        table_model.modelReset.connect(self._on_models_changed)  # after the coefficient table's own slot

        # --- output ---
        out_box = QGroupBox("Output", self)
        of = QFormLayout(out_box)
        of.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.output_edit = QLineEdit(self)
        self.output_edit.setObjectName("output_edit")
        self.output_edit.setPlaceholderText("merged.safetensors, or a folder for shards")
        self.output_edit.textChanged.connect(self._on_output_widgets_changed)
        browse = QPushButton(self)
        browse.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon))
        browse.setToolTip("Choose where to write the merged model")
        browse.clicked.connect(self._on_browse_clicked)
        row = QHBoxLayout()
        row.setSpacing(4)
        row.addWidget(self.output_edit, 1)
        row.addWidget(browse)
        self.dtype_combo = QComboBox(self)
        for label, value in DTYPE_CHOICES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.setToolTip("Precision of the written tensors")
        self.shard_edit = QLineEdit(self)
        self.shard_edit.setPlaceholderText("no sharding (e.g. 5GB)")
        self.shard_edit.setToolTip("Split the output into shards above this size; the output must then be a folder")
        self.device_combo = QComboBox(self)
        for label, value in device_choices() if probe_devices else BASIC_DEVICE_CHOICES:
            self.device_combo.addItem(label, value)
        self.device_combo.setToolTip("Where tensors are merged; the result is always written from the CPU")
        self.mismatch_combo = QComboBox(self)
        for label, value in MISMATCH_CHOICES:
            self.mismatch_combo.addItem(label, value)
        self.mismatch_combo.setToolTip("What to do with tensors missing from some models or differing in shape")
        for combo in (self.dtype_combo, self.device_combo, self.mismatch_combo):
            combo.currentIndexChanged.connect(self._on_output_widgets_changed)
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
        self.shard_edit.textChanged.connect(self._on_output_widgets_changed)
        self.tokenizer_combo = QComboBox(self)
        self.tokenizer_combo.setObjectName("tokenizer_combo")
        self.tokenizer_combo.setToolTip("Hugging Face folders: the merged folder's tokenizer and vocabulary rows "
                                        "(the base model's, the union of every model's tokens, or one model's)")
        self.tokenizer_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.tokenizer_combo.setMinimumContentsLength(10)
        self.tokenizer_combo.currentIndexChanged.connect(self._on_tokenizer_combo_changed)
        of.addRow("File", row)
        of.addRow("Dtype", self.dtype_combo)
        of.addRow("Shard size", self.shard_edit)
        of.addRow("Device", self.device_combo)
        of.addRow("Mismatched", self.mismatch_combo)
        of.addRow("Tokenizer", self.tokenizer_combo)
        self._output_form = of
        of.setRowVisible(self.tokenizer_combo, False)

        # --- problems and merge ---
        self.problems_label = QLabel(self)
        self.problems_label.setObjectName("problems")
        self.problems_label.setWordWrap(True)
        self.problems_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label = QLabel(self)
        self.warnings_label.setObjectName("warnings")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label.setVisible(False)
        self.merge_button = QPushButton("Merge", self)
        self.merge_button.setObjectName("merge_button")
        self.merge_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.merge_button.setToolTip("Merge the models (Ctrl+M)")
        self.merge_button.setMinimumHeight(34)
        self.merge_button.setEnabled(False)  # until the window has checked there is something valid to merge
        self.merge_button.clicked.connect(self.sig_merge_requested)

        content = QWidget(self)
        content.setObjectName("method_content")
        cl2 = QVBoxLayout(content)
        cl2.setContentsMargins(10, 10, 10, 10)
        cl2.setSpacing(10)
        for w in (method_box, self.params_box, self.coeff_box, self.parts_box, out_box):
            cl2.addWidget(w)
        cl2.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        footer = self.footer = QVBoxLayout()  # the window adds the estimate above the Merge button
        footer.setContentsMargins(10, 4, 10, 10)
        footer.addWidget(self.problems_label)
        footer.addWidget(self.warnings_label)
        footer.addWidget(self.merge_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(scroll, 1)
        layout.addLayout(footer)
        self.setMinimumWidth(320)
        self.load_from_session()

    # --- methods list -----------------------------------------------------------------
    def _fill_methods(self) -> None:
        """Family headers (not selectable) followed by their methods."""
        model = QStandardItemModel(self.method_combo)
        family = None
        for spec in list_methods():
            if spec.family != family:
                family = spec.family
                header = QStandardItem(family.upper())
                header.setFlags(Qt.ItemFlag.NoItemFlags)
                header.setData(None, Qt.ItemDataRole.UserRole)
                font = header.font()
                font.setBold(True)
                font.setPointSizeF(font.pointSizeF() * 0.85)
                header.setFont(font)
                model.appendRow(header)
            item = QStandardItem(f"   {spec.label}")
            item.setData(spec.name, Qt.ItemDataRole.UserRole)
            item.setToolTip(f"{spec.description}\n{spec.reference}".strip())
            model.appendRow(item)
        self.method_combo.setModel(model)

    def method_names(self) -> list[str]:
        """Every method offered, in the order shown."""
        return [d for i in range(self.method_combo.count()) if (d := self.method_combo.itemData(i))]

    def select_method(self, name: str) -> None:
        index = self.method_combo.findData(name)
        if index >= 0:
            self.method_combo.setCurrentIndex(index)

    def _on_method_combo_changed(self, index: int) -> None:
        if self._updating:
            return
        name = self.method_combo.itemData(index)
        if not name:
            return
        if self.form is not None:
            self.session.set_params(self.form.values())
        self.session.set_method(name)
        self._show_method(self.session.spec)
        self.table_model.refresh()
        self.sig_method_changed.emit(name)
        self._on_changed()

    def _show_method(self, spec: MethodSpec) -> None:
        self.description.setText(spec.description)
        self.description.setToolTip("\n\n".join(x for x in (spec.details, spec.reference) if x))
        lo, hi = spec.n_models
        count = f"exactly {lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
        needs = [f"merges {count} models"]
        if spec.base == "required":
            needs.append("needs a base model (right-click a model ▸ Use as base)")
        elif spec.base == "optional":
            needs.append("uses a base model when one is marked")
        if spec.needs_arch:
            needs.append("needs the architecture")
        if spec.needs_data:
            needs.append("needs data")
        self.requirements.setText("; ".join(needs).capitalize() + ".")
        if self.form is not None:
            self.params_layout.removeWidget(self.form)
            self.form.deleteLater()
        self.form = ParamForm(spec.params, self.params_box)
        self.form.set_values(self.session.params())
        self.form.sig_changed.connect(self._on_form_changed)
        self.params_layout.addWidget(self.form)
        self.coeff_box.setVisible(self.coefficients.has_columns())
        self._on_models_changed()

    def _on_models_changed(self) -> None:
        """The loaded models' family decides the block editor's blocks and the parts on offer."""
        naming = session_naming(self.session)
        self.coeff_box.setVisible(self.coefficients.has_columns())  # the table now has this method's columns
        if self.form is not None:
            self.form.set_block_names(naming.blocks if naming is not None else ())
        parts = [(p.key, p.label) for p in (naming.parts if naming is not None else ()) if p.key != "unet"]
        models = [(str(m.path), m.name) for m in self.session.ready_models if not m.is_adapter]
        self.parts_box.blockSignals(True)
        self.parts_box.set_choices(parts, models, self.session.output.part_sources)
        self.parts_box.blockSignals(False)

    def _on_parts_box_changed(self) -> None:
        if not self._updating:
            self.session.output.part_sources = self.parts_box.values()
            self._on_changed()

    def _on_form_changed(self) -> None:
        if self.form is not None and not self._updating:
            self.session.set_params(self.form.values())
            self._on_changed()

    # --- output -----------------------------------------------------------------------
    def _on_browse_clicked(self) -> None:
        start = self.output_edit.text() or self.session.suggest_output()
        path, _ = QFileDialog.getSaveFileName(self, "Write the merged model to", start, "Safetensors (*.safetensors);;All files (*)")
        if path:
            self.output_edit.setText(path)

    def _on_output_widgets_changed(self) -> None:
        if self._updating:
            return
        out = self.session.output
        out.path = self.output_edit.text().strip()
        out.dtype = self.dtype_combo.currentData()
        out.shard_size = self.shard_edit.text().strip() or None
        out.device = self.device_combo.currentData() or "auto"
        out.on_mismatch = self.mismatch_combo.currentData() or "error"
        self._on_changed()

    def _on_changed(self) -> None:
        self.sig_changed.emit()

    def refresh_tokenizer_choices(self) -> None:
        """Offer the tokenizer sources for the models in the list (shown for Hugging Face folders only)."""
        from merge_studio.core.hf.choices import tokenizer_choices

        models = [(m.name, str(m.path)) for m in self.session.ready_models]
        choices = tokenizer_choices(models)
        current = self.session.output.tokenizer_source
        self._updating, was_updating = True, self._updating
        try:
            self.tokenizer_combo.clear()
            for label, value in choices:
                self.tokenizer_combo.addItem(label, value)
            if current is not None and self.tokenizer_combo.findData(current) < 0:
                self.tokenizer_combo.addItem(f"From {Path(current).name}", current)
            _combo_select(self.tokenizer_combo, current)
        finally:
            self._updating = was_updating
        self._output_form.setRowVisible(self.tokenizer_combo, bool(choices))

    def _on_tokenizer_combo_changed(self) -> None:
        if self._updating or self.tokenizer_combo.count() == 0:
            return
        self.session.output.tokenizer_source = self.tokenizer_combo.currentData()
        self._on_changed()

    # --- whole state ------------------------------------------------------------------
    def add_device_choices(self) -> None:
        """Add the GPUs torch finds to the device list (after ``probe_devices=False``)."""
        for label, value in device_choices():
            index = self.device_combo.findData(value)
            if index < 0:
                self.device_combo.addItem(label, value)
            else:
                self.device_combo.setItemText(index, label)

    def load_from_session(self) -> None:
        """Show the session's method, parameters and output (after opening a recipe)."""
        self._updating = True
        try:
            self.select_method(self.session.method)
            out = self.session.output
            self.output_edit.setText(out.path)
            _combo_select(self.dtype_combo, out.dtype)
            self.shard_edit.setText(out.shard_size or "")
            _combo_select(self.device_combo, out.device)
            _combo_select(self.mismatch_combo, out.on_mismatch)
        finally:
            self._updating = False
        self.refresh_tokenizer_choices()
        self._show_method(self.session.spec)
        self.show_slices()

    def show_slices(self) -> None:
        """Say how many slices the recipe has and how deep they stack."""
        slices = self.session.output.slices or []
        depth = sum(sl["sources"][0]["layer_range"][1] - sl["sources"][0]["layer_range"][0] for sl in slices)
        self.slices_label.setText(f"{len(slices)} slice{'s' if len(slices) != 1 else ''}, {depth} layers" if slices else "")

    def set_output_path(self, path: str | Path) -> None:
        self.output_edit.setText(str(path))

    def set_problems(self, problems: list[str], warnings: list[str] | None = None) -> None:
        """Show what stops the merge and, below it, what does not (parameters the method ignores)."""
        errors = self.form.errors() if self.form is not None else {}
        lines = [f"{k}: {v}" for k, v in errors.items()] + problems
        self.problems_label.setText("\n".join(f"• {p}" for p in lines))
        self.problems_label.setVisible(bool(lines))
        notes = warnings or []
        self.warnings_label.setText("\n".join(f"• {w}" for w in notes))
        self.warnings_label.setVisible(bool(notes))

    def set_running(self, running: bool) -> None:
        """While a merge runs the form is locked, so what it shows is what is being merged."""
        self.findChild(QWidget, "method_content").setEnabled(not running)
        self.merge_button.setEnabled(not running)
        self.merge_button.setText("Merging…" if running else "Merge")
