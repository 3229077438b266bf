"""LoRA adapters in the window: apply one onto a base, merge several, extract one from a fine-tune.

Adds its actions to the model list's right-click menu (on adapter rows: apply
onto the base, merge adapters; on a model: extract a LoRA against another
model), asks what it needs in a dialog, and runs the core job on the window's
job runner with progress in the status bar. The result is logged (kept energy,
per-layer errors) and opened in the list.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QDialog, QInputDialog, QMenu

from merge_studio.gui.dialogs.lora_dialogs import (
    ExtractLoraDialog,
    ExtractRequest,
    MergeAdaptersDialog,
    MergeAdaptersRequest,
)
from merge_studio.gui.session import LoadedModel
from merge_studio.gui.status_bar_job import StatusBarJob
from merge_studio.gui.workers import JobWorker

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow

MAX_LOGGED_LAYERS = 8


def free_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``… when it exists."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


class LoraActions(QObject):
    """The window's LoRA commands (kept out of the window module)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.jobs = StatusBarJob(window, "lora", busy="A LoRA job is already running", failure="The LoRA job failed")
        self.last_result: Any = None
        window.model_list.menu_extensions.append(self._extend_menu)

    # --- menu -------------------------------------------------------------------------
    def _models(self, ids: list[int]) -> list[LoadedModel]:
        found = [self.window.session.find(i) for i in ids]
        return [m for m in found if m is not None and m.status == "ready"]

    def _plain_models(self) -> list[LoadedModel]:
        return [m for m in self.window.session.ready_models if not m.is_adapter]

    def _extend_menu(self, menu: QMenu, ids: list[int]) -> None:
        selected = self._models(ids)
        adapters = [m for m in selected if m.is_adapter]
        plain = [m for m in selected if not m.is_adapter]
        added = False
        if len(adapters) == 1 and self._plain_models():
            act = menu.addAction("Apply onto a base model (as a new input)")
            act.triggered.connect(lambda: self.ask_apply(adapters[0]))
            added = True
        if adapters and not plain:
            act = menu.addAction(f"Merge {'these adapters' if len(adapters) > 1 else 'this adapter'} into one…")
            act.triggered.connect(lambda: self.ask_merge(adapters))
            added = True
        if len(plain) == 1 and not adapters and len(self._plain_models()) > 1:
            act = menu.addAction("Extract a LoRA against a base…")
            act.triggered.connect(lambda: self.ask_extract(plain[0]))
            added = True
        if added:
            menu.addSeparator()

    # --- apply ------------------------------------------------------------------------
    def ask_apply(self, adapter: LoadedModel) -> None:
        bases = self._plain_models()
        base = self.window.session.base
        if base is None or base.is_adapter:
            base = bases[0] if len(bases) == 1 else None
        if base is None:
            names = [m.name for m in bases]
            name, ok = QInputDialog.getItem(self.window, "Apply the adapter onto", "Base model:", names, 0, False)
            if not ok:
                return
            base = bases[names.index(name)]
        self.apply(adapter, base)

    def apply(self, adapter: LoadedModel, base: LoadedModel) -> list[int]:
        """Add ``base+adapter`` to the list: the adapter applied onto the base, read lazily."""
        return self.window.open_paths([f"{base.path}+{adapter.path}"])

    # --- merge ------------------------------------------------------------------------
    def ask_merge(self, adapters: list[LoadedModel]) -> None:
        first = adapters[0]
        kohya = first.checkpoint is not None and first.checkpoint.adapter.format == "kohya"
        output = free_path(first.path.parent / (f"{Path(first.name).stem}-merged" + (".safetensors" if kohya else "")))
        rows = [(m.path, m.name, max(m.checkpoint.adapter.ranks or [1])) for m in adapters]  # type: ignore[union-attr]
        dialog = MergeAdaptersDialog(rows, output, self.window)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.merge(dialog.request())

    def merge(self, request: MergeAdaptersRequest) -> JobWorker | None:
        from merge_studio.core.lora.combine import iter_merge_adapters

        def job(token):  # noqa: ANN001, ANN202 - a CancelToken, a generator
            return iter_merge_adapters(request.paths, request.output, weights=request.weights, mode=request.mode,
                                       rank=request.rank, cancel=token)

        return self._start(job, "Merging adapters", self._on_merge_result)

    def _on_merge_result(self, result: Any) -> None:
        self.last_result = result
        text = f"Merged {len(result.modules)} modules into {result.path} (rank {', '.join(map(str, result.ranks))})"
        if result.mode == "svd":
            text += f"; kept {result.kept_energy:.2%} of the energy"
        self.window.log_panel.log(text, "ok", folder=result.path.parent)
        for note in result.notes:
            self.window.log_panel.log(note, "warning")
        self.window.open_paths([result.path])

    # --- extract ----------------------------------------------------------------------
    def ask_extract(self, tuned: LoadedModel) -> None:
        bases = [m for m in self._plain_models() if m.id != tuned.id]
        base = self.window.session.base
        output = free_path(tuned.path.parent / f"{Path(tuned.name).stem}-lora")
        dialog = ExtractLoraDialog((tuned.path, tuned.name), [(m.path, m.name) for m in bases], output, self.window,
                                   default_base=base.path if base is not None and base.id != tuned.id else None)
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.extract(dialog.request())

    def extract(self, request: ExtractRequest) -> JobWorker | None:
        from merge_studio.core.lora.extract import iter_extract_lora

        output = request.output
        if request.format == "kohya" and output.suffix != ".safetensors":
            output = output.with_suffix(".safetensors")

        def job(token):  # noqa: ANN001, ANN202
            return iter_extract_lora(request.tuned, request.base, output, rank=request.rank, fmt=request.format,  # type: ignore[arg-type]
                                     device=self.window.session.output.device, cancel=token)

        return self._start(job, "Extracting a LoRA", self._on_extract_result)

    def _on_extract_result(self, result: Any) -> None:
        self.last_result = result
        log = self.window.log_panel
        log.log(f"Extracted a rank-{result.rank} LoRA of {len(result.layers)} layers into {result.path}: relative "
                f"error {result.relative_error:.4f} overall", "ok", folder=result.path.parent)
        worst = sorted(result.layers, key=lambda layer: -layer.relative_error)[:MAX_LOGGED_LAYERS]
        if worst:
            log.log("Largest errors: " + ", ".join(f"{l.module} {l.relative_error:.3f}" for l in worst))
        if result.not_captured:
            log.log(f"{len(result.not_captured)} changed tensors are not in the adapter (biases, norms, embeddings)",
                    "warning")
        self.window.open_paths([result.path])

    # --- jobs -------------------------------------------------------------------------
    @property
    def worker(self) -> JobWorker | None:
        """The running LoRA job, if any."""
        return self.jobs.worker

    def _start(self, job: Any, title: str, on_result: Any) -> JobWorker | None:
        return self.jobs.start(job, title, on_result)
