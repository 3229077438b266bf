"""The Permutations tab as the window shows it: a strip to run an alignment over the report view.

:class:`AlignStrip` chooses A and B among the loaded models, the architecture
(detected, editable) and the seed, and runs :func:`iter_align_files` on the
window's :class:`JobRunner`; :class:`PermutationsTab` stacks it over the
:class:`PermutationView` that draws the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QGridLayout, QLabel, QLineEdit, QPushButton, QSizePolicy, QSpinBox, QVBoxLayout, QWidget,
)

from merge_studio.gui.align_job import AlignOutcome, iter_align_files, save_aligned, suggest_aligned_path
from merge_studio.gui.views.align_options import AlignOptions
from merge_studio.gui.views.permutation_view import PermutationView
from merge_studio.gui.views.status_panel import EtaClock
from merge_studio.gui.workers import JobRunner, JobWorker

ModelsProvider = Callable[[], Sequence[tuple[str, Path]]]
ArchProvider = Callable[[Path], "str | None"]


class AlignStrip(QWidget):
    """A, B, architecture, seed, Align/Cancel and "Save aligned B…"."""

    sig_aligned = Signal(object)
    """An :class:`AlignOutcome` after a successful alignment."""
    sig_job_started = Signal(object)
    """The :class:`JobWorker` of an alignment or a save (the window shows its progress)."""
    sig_arch_chosen = Signal(str)
    """The user typed an architecture and aligned with it (remember it for A and B)."""
    sig_saved = Signal(str)
    sig_failed = Signal(object)

    def __init__(self, runner: JobRunner | None = None, parent: QWidget | None = None, *,
                 models_provider: ModelsProvider | None = None, arch_provider: ArchProvider | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("align_strip")
        self.runner = runner or JobRunner(self)
        self.models_provider = models_provider
        self.arch_provider = arch_provider
        self.preferred_provider: Callable[[], tuple[Path, Path] | None] | None = None  # e.g. base + other
        self.device_provider: Callable[[], str] | None = None  # the window's Output ▸ Device
        self.device = "auto"
        self.outcome: AlignOutcome | None = None
        self.worker: JobWorker | None = None
        self.eta = EtaClock()  # "about 12 s left", as merges show
        self._arch_typed = False

        self.model_a = QComboBox(self, toolTip="The reference model: B's units are reordered to match it")
        self.model_b = QComboBox(self, toolTip="The model whose hidden units are permuted")
        for combo in (self.model_a, self.model_b):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.arch = QLineEdit(self, placeholderText="detected from the file", clearButtonEnabled=True)
        self.arch.setToolTip("Architecture: zoo:NAME?k=v, file.py:function, package.module:function or a .pt2 path")
        self.seed = QSpinBox(self, minimum=0, maximum=2**31 - 1, value=0, toolTip="Seed of the first descent")
        self.run_button = QPushButton("Align B to A", self)
        self.run_button.setObjectName("align_button")
        self.save_button = QPushButton("Save aligned B…", self, enabled=False)
        self.options = AlignOptions(self)
        self.status = QLabel("Align two models (by weights, by activations on data, or the better of both) "
                             "to see which units moved.", self)
        self.status.setObjectName("muted")
        self.status.setWordWrap(True)

        grid = QGridLayout(self)
        grid.setContentsMargins(8, 6, 8, 2)
        grid.setHorizontalSpacing(6)
        grid.setVerticalSpacing(4)
        grid.addWidget(QLabel("A", self), 0, 0)
        grid.addWidget(self.model_a, 0, 1)
        grid.addWidget(QLabel("B", self), 0, 2)
        grid.addWidget(self.model_b, 0, 3)
        grid.addWidget(QLabel("Seed", self), 0, 4)
        grid.addWidget(self.seed, 0, 5)
        grid.addWidget(self.options, 1, 0, 1, 6)
        grid.addWidget(QLabel("Arch", self), 2, 0)
        grid.addWidget(self.arch, 2, 1, 1, 3)
        grid.addWidget(self.run_button, 2, 4, 1, 2)
        grid.addWidget(self.status, 3, 0, 1, 4)
        grid.addWidget(self.save_button, 3, 4, 1, 2)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

        self.run_button.clicked.connect(self._on_run_button_clicked)
        self.save_button.clicked.connect(self._on_save_button_clicked)
        self.arch.textEdited.connect(self._on_arch_edited)
        self.model_a.currentIndexChanged.connect(self._on_model_a_changed)
        self.model_b.currentIndexChanged.connect(self._refresh_buttons)
        self._refresh_buttons()

    # --- models ---------------------------------------------------------------------------
    def set_models(self, models: Sequence[tuple[str, str | Path]], preferred: tuple[Path, Path] | None = None) -> None:
        """The models to choose from; keeps the current choice, else ``preferred``, else the first two."""
        previous = (self.model_a.currentData(), self.model_b.currentData())
        wanted = tuple(str(p) for p in preferred) if preferred else (None, None)
        for combo, before, want, fallback in ((self.model_a, previous[0], wanted[0], 0),
                                              (self.model_b, previous[1], wanted[1], 1)):
            combo.blockSignals(True)
            combo.clear()
            for name, path in models:
                combo.addItem(Path(name).stem if name.endswith(".safetensors") else name, str(path))
                combo.setItemData(combo.count() - 1, str(path), 3)  # tooltip: the full path
            index = combo.findData(before) if before else -1
            if index < 0 and want:
                index = combo.findData(want)
            combo.setCurrentIndex(index if index >= 0 else min(fallback, combo.count() - 1))
            combo.blockSignals(False)
        if self.model_b.count() >= 2 and self.model_b.currentData() == self.model_a.currentData():
            # one model was loaded when B was chosen: now B can be another one
            others = [i for i in range(self.model_b.count()) if self.model_b.itemData(i) != self.model_a.currentData()]
            wanted_b = self.model_b.findData(wanted[1]) if wanted[1] else -1
            self.model_b.blockSignals(True)
            self.model_b.setCurrentIndex(wanted_b if wanted_b in others else others[0])
            self.model_b.blockSignals(False)
        self._on_model_a_changed()

    def refresh_models(self) -> None:
        if self.models_provider is not None:
            preferred = self.preferred_provider() if self.preferred_provider is not None else None
            self.set_models(self.models_provider(), preferred)

    def paths(self) -> tuple[Path, Path] | None:
        a, b = self.model_a.currentData(), self.model_b.currentData()
        return (Path(a), Path(b)) if a and b else None

    def select(self, path_a: str | Path, path_b: str | Path) -> None:
        for combo, path in ((self.model_a, path_a), (self.model_b, path_b)):
            index = combo.findData(str(path))
            if index >= 0:
                combo.setCurrentIndex(index)

    # --- running --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self) -> JobWorker | None:
        """Align the chosen B to A on the runner; ``None`` when two different models are not chosen."""
        pair = self.paths()
        if self.running or pair is None or pair[0] == pair[1]:
            return None
        arch = self.arch.text().strip() or None
        if arch and self._arch_typed:
            self.sig_arch_chosen.emit(arch)
        seed = self.seed.value()
        device = self.device_provider() if self.device_provider is not None else self.device
        method, data = self.options.method(), self.options.data_source()
        worker = self.runner.start(
            lambda token: iter_align_files(pair[0], pair[1], arch=arch, seed=seed, device=device, method=method,
                                           data_source=data, cancel=token), "align"
        )
        worker.sig_progress.connect(self._on_worker_progress)
        worker.sig_result.connect(self._on_worker_result)
        worker.sig_failed.connect(self._on_worker_failed)
        worker.sig_cancelled.connect(self._on_worker_cancelled)
        worker.sig_done.connect(self._on_worker_done)
        self.worker = worker
        self.eta.start()
        self.status.setText("Aligning…")
        self._refresh_buttons()
        self.sig_job_started.emit(worker)
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Cancelling…")

    def save(self, path: str | Path) -> JobWorker | None:
        """Write aligned B (with its permutation and architecture in the metadata) off the GUI thread."""
        outcome = self.outcome
        if outcome is None:
            return None
        target = Path(path)

        def job(_token: Any):  # noqa: ANN202 - a generator returning the written path
            yield from ()
            return save_aligned(outcome, target)

        worker = self.runner.start(job, "save-aligned")
        worker.sig_result.connect(self._on_saved)
        worker.sig_failed.connect(self._on_worker_failed)
        self.sig_job_started.emit(worker)
        return worker

    # --- slots ----------------------------------------------------------------------------
    @Slot()
    def _on_run_button_clicked(self) -> None:
        if self.running:
            self.cancel()
        else:
            self.start()

    @Slot()
    def _on_save_button_clicked(self) -> None:
        if self.outcome is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save aligned B", str(suggest_aligned_path(self.outcome)),
                                              "Safetensors (*.safetensors)")
        if path:
            self.save(path if path.endswith(".safetensors") else f"{path}.safetensors")

    @Slot(str)
    def _on_arch_edited(self, text: str) -> None:
        self._arch_typed = bool(text.strip())

    @Slot()
    def _on_model_a_changed(self) -> None:
        if not self._arch_typed and self.arch_provider is not None and self.model_a.currentData():
            self.arch.setText(self.arch_provider(Path(self.model_a.currentData())) or "")
        self._refresh_buttons()

    @Slot(object)
    def _on_worker_progress(self, progress: Any) -> None:
        eta = self.eta.update(progress)
        self.status.setText((progress.message or f"{progress.stage} {progress.done}") + (f" · {eta}" if eta else ""))

    @Slot(object)
    def _on_worker_result(self, outcome: AlignOutcome) -> None:
        self.outcome = outcome
        seconds = outcome.report.get("seconds")
        took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
        how = "activation matching" if outcome.report.get("method") == "activation" else "weight matching"
        self.status.setText(f"Aligned {Path(outcome.names[1]).stem} to {Path(outcome.names[0]).stem} by {how}{took} "
                            f"({outcome.arch}, seed {outcome.report.get('seed', self.seed.value())}).")
        self.sig_aligned.emit(outcome)

    @Slot(object)
    def _on_worker_failed(self, error: Any) -> None:
        hint = getattr(error, "hint", None)
        self.status.setText(f"⚠ {error.message}" + (f" ({hint})" if hint else ""))
        self.sig_failed.emit(error)

    @Slot()
    def _on_worker_cancelled(self) -> None:
        self.status.setText("Alignment cancelled.")

    @Slot()
    def _on_worker_done(self) -> None:
        self.worker = None
        self._refresh_buttons()

    @Slot(object)
    def _on_saved(self, path: Path) -> None:
        self.status.setText(f"Saved aligned B to {path}")
        self.sig_saved.emit(str(path))

    def _refresh_buttons(self) -> None:
        pair = self.paths()
        self.run_button.setText("Cancel" if self.running else "Align B to A")
        self.run_button.setEnabled(self.running or (pair is not None and pair[0] != pair[1]))
        self.save_button.setEnabled(self.outcome is not None and not self.running)
        for widget in (self.model_a, self.model_b, self.arch, self.seed, self.options):
            widget.setEnabled(not self.running)

    def shutdown(self) -> None:
        self.cancel()


class PermutationsTab(QWidget):
    """The align strip over the permutation report view."""

    def __init__(self, parent: QWidget | None = None, *, runner: JobRunner | None = None,
                 models_provider: ModelsProvider | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("permutations_tab")
        self.strip = AlignStrip(runner, self, models_provider=models_provider)
        self.view = PermutationView(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.strip)
        layout.addWidget(self.view, 1)
        self.strip.sig_aligned.connect(self._on_strip_aligned)

    @Slot(object)
    def _on_strip_aligned(self, outcome: AlignOutcome) -> None:
        self.view.set_report(outcome.report, outcome.similarity)

    def set_report(self, report: Any, matrices_provider: Any = None) -> None:
        self.view.set_report(report, matrices_provider)

    def select_layer(self, layer: str) -> bool:
        return self.view.select_layer(layer)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        if not self.strip.running:
            self.strip.refresh_models()
