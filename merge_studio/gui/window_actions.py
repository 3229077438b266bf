"""What the main window does with models, recipes and merges (split from ``main_window``).

A mixin, so the window module stays an assembler: these methods use the
window's session, panels, runner and log, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from merge_studio.core.progress import Progress
from merge_studio.core.recipe import load_recipe
from merge_studio.errors import MergeStudioError
from merge_studio.gui.loading import AUTO_SCAN_BYTES, Loaded, LoadFailed, Scanned, load_checkpoints, scan_values
from merge_studio.gui.workers import JobError, JobWorker

if TYPE_CHECKING:
    from merge_studio.core.engine import MergeResult
    from merge_studio.core.recipe import Recipe

RECIPE_FILTER = "Recipes (*.yaml *.yml);;All files (*)"
MODEL_FILTER = "Checkpoints (*.safetensors *.pt *.pth *.bin *.ckpt *.pt2 *.index.json);;All files (*)"


class WindowActions:
    """Models, recipes and merges for :class:`~merge_studio.gui.main_window.MainWindow`."""

    # --- models -----------------------------------------------------------------------
    def open_paths(self, paths: Iterable[str | Path], *, as_inputs: bool = True) -> list[int]:
        """Add rows for ``paths`` at once and read their headers on a worker thread.

        ``as_inputs=False`` lists them without merging them (a merge's own output), so
        the recipe on screen stays the one that was just run.
        """
        items: list[tuple[int, Path]] = []
        for path in paths:
            p = Path(path).expanduser()
            if self.session.find_path(p) is not None:
                self.log_panel.log(f"{p.name} is already in the list", "warning")
                continue
            row = self.session.add_pending(p, in_models=as_inputs)
            items.append((row.id, row.path))
            self.settings.add_recent_model(p)
            self.settings.set_last_folder("models", p)
        if items:
            self._start_loading(items)
            self._on_session_changed()
            self.menus_refresh_recent()
        return [model_id for model_id, _ in items]

    def _start_loading(self, items: list[tuple[int, Path]]) -> None:
        worker = self.runner.start(lambda token, items=items: load_checkpoints(items, token), "load")
        worker.sig_partial.connect(self._on_loader_partial)
        worker.sig_failed.connect(self._on_loader_failed)
        worker.sig_done.connect(self._on_loader_done)
        self._loaders.add(worker)

    def _on_loader_partial(self, item: object) -> None:
        if isinstance(item, Loaded):
            self.session.set_loaded(item.model_id, item.checkpoint, item.summary)
            model = self.session.find(item.model_id)
            if model is not None:
                s = item.summary
                self.log_panel.log(f"Opened {model.name}: {s.format}, {s.tensor_count} tensors, {s.parameter_count:,} parameters")
                self.resuggest_output()
        elif isinstance(item, LoadFailed):
            self.session.set_failed(item.model_id, item.message)
            self.log_panel.log(f"Could not open {item.path.name}: {item.message}", "error")
        self._on_session_changed()

    def _on_loader_failed(self, error: JobError) -> None:
        self.log_panel.log(f"Loading stopped: {error.message}", "error")

    def _on_loader_done(self) -> None:
        self._loaders = {w for w in self._loaders if not w.finished}
        for model in self.session.models:  # a crashed loader leaves no row "loading" forever
            if model.status == "loading" and not self._loaders:
                self.session.set_failed(model.id, "loading stopped before this file was read")
        self._on_session_changed()
        if not self.session.loading:
            self._start_value_scan()
            self.sig_models_loaded.emit()

    def _start_value_scan(self) -> None:
        """Check the values of small models for NaN/infinity in the background (flags, report)."""
        scanning = getattr(self, "_scanning", set())
        items = [
            (m.id, m.checkpoint) for m in self.session.ready_models
            if m.non_finite is None and m.id not in scanning and m.checkpoint is not None
            and m.summary is not None and m.summary.total_bytes <= AUTO_SCAN_BYTES
        ]
        if not items:
            return
        self._scanning = scanning | {model_id for model_id, _ in items}
        worker = self.runner.start(lambda token, items=items: scan_values(items, token), "scan values")
        worker.sig_partial.connect(self._on_scan_partial)

    def _on_scan_partial(self, item: object) -> None:
        if not isinstance(item, Scanned):
            return
        self._scanning = getattr(self, "_scanning", set()) - {item.model_id}
        model = self.session.find(item.model_id)
        if model is None:
            return
        model.non_finite = list(item.non_finite)
        if model.non_finite:
            shown = ", ".join(b.describe() for b in model.non_finite[:3])
            self.log_panel.log(f"{model.name} holds NaN or infinite values: {shown}", "error")
        self._on_session_changed()

    def open_any(self, path: str | Path) -> None:
        """A recipe (``.yaml``) restores the window; anything else is loaded as a model."""
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            self.open_recipe(path)
        else:
            self.open_paths([path])

    def load_demo(self) -> JobWorker | None:
        """Train (once) and load the demo models on a worker thread."""
        try:
            from merge_studio.core.demo import iter_demo_models
        except ImportError:
            self.log_panel.log("The demo is not available in this version.", "warning")
            return None
        if self.runner.is_running("demo"):
            return None
        self.log_panel.log("Preparing the demo models (trained once, then cached)…")
        worker = self.runner.start(lambda token: iter_demo_models(cancel=token), "demo")
        worker.sig_progress.connect(self.job_status.update_progress)
        if hasattr(self.welcome, "set_demo_progress"):  # the first start trains: say so where the user clicked
            worker.sig_progress.connect(lambda _p: self.welcome.set_demo_progress(
                "Training the demo models (first start only): " + self.job_status.label.text().partition(" — ")[2]))
            worker.sig_done.connect(lambda: self.welcome.set_demo_progress(None))
        worker.sig_result.connect(self._on_demo_ready)
        worker.sig_failed.connect(lambda error: self.show_error(error, "The demo could not be prepared"))
        worker.sig_done.connect(lambda: self.job_status.finish("Ready"))
        self.job_status.start("Preparing the demo")
        return worker

    def _on_demo_ready(self, demo: object) -> None:
        """Open two demo MLPs with weight matching chosen: merge them, compare them, or align them.

        Two, not all: weight matching merges exactly two models, and the story the demo
        tells (a naive average of two independent nets is poor; aligned first, it is not)
        needs no more.
        """
        paths = (demo.paths("zoo:mlp") or demo.paths())[:2]
        arch = next((m.arch for m in getattr(demo, "models", ()) if m.path in paths), None)
        ids = self.open_paths(paths)
        if arch:
            for model_id in ids:
                self.session.set_arch(model_id, arch)
        if len(paths) == 2:
            self.method_panel.select_method("weight_matching" if arch else "simple_average")
        self.log_panel.log("Demo ready: Merge, compare A and B in the Barrier tab, or align them in Permutations.")

    def is_loading(self) -> bool:
        return self.session.loading

    def remove_models(self, model_ids: Iterable[int] | None = None) -> None:
        ids = list(model_ids) if model_ids is not None else self.model_list.selected_ids()
        for model_id in ids:
            model = self.session.find(model_id)
            if model is not None:
                self.session.remove(model_id)
                self.log_panel.log(f"Removed {model.name}")
        if ids:
            self._on_session_changed()

    def set_inputs(self, model_ids: list[int], merged: bool) -> None:
        """Put rows into the merge, or leave them out of it (they stay listed)."""
        for model_id in model_ids:
            self.session.set_input(model_id, merged)
        names = ", ".join(m.name for i in model_ids if (m := self.session.find(i)) is not None)
        self.log_panel.log(f"{'Merging' if merged else 'Leaving out of the merge'}: {names}")
        self._on_session_changed()

    def set_base(self, model_id: int | None) -> None:
        self.session.set_base(model_id)
        model = self.session.base
        self.log_panel.log(f"Base model: {model.name}" if model else "No base model")
        self._on_session_changed()

    def _on_model_list_current_changed(self, model_id: object) -> None:
        self.inspector.set_model(self.session.find(model_id) if isinstance(model_id, int) else None)
        self._update_extra_views()

    def _on_model_list_reveal_requested(self, model_id: object) -> None:
        model = self.session.find(model_id) if isinstance(model_id, int) else None
        if model is not None:
            folder = model.path if model.path.is_dir() else model.path.parent
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def resuggest_output(self) -> None:
        """Name the output after the method and inputs, unless the user typed or chose one."""
        current = self.session.output.path
        if current and current != getattr(self, "_suggested_output", None):
            return
        if not self.session.ready_models:
            return
        self._suggested_output = self.session.suggest_output(self.settings.outputs_folder)
        self.method_panel.set_output_path(self._suggested_output)

    def _on_method_panel_method_changed(self, name: str) -> None:
        self.resuggest_output()
        self.log_panel.log(f"Method: {self.session.spec.label}")
        self._schedule_problems()

    # --- file dialogs (menus call these) ----------------------------------------------
    def ask_open_models(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open checkpoints", self.settings.last_folder("models"), MODEL_FILTER)
        if paths:
            self.open_paths(paths)

    def ask_open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder", self.settings.last_folder("models"))
        if folder:
            self.open_paths([folder])

    def ask_open_recipe(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", self.settings.last_folder("recipes"), RECIPE_FILTER)
        if path:
            self.open_recipe(path)

    # --- recipes ----------------------------------------------------------------------
    def open_recipe(self, path: str | Path) -> bool:
        """Restore the window from a recipe (or a mergekit config); ``False`` on errors (shown)."""
        path = Path(path)
        try:
            recipe = load_recipe(path)
        except MergeStudioError as exc:
            self.show_error(JobError.from_exception(exc), "Cannot open the recipe")
            self.log_panel.log(f"Cannot open recipe {path.name}: {exc}", "error")
            return False
        self.settings.add_recent_recipe(path)
        self.settings.set_last_folder("recipes", path)
        self.apply_recipe(recipe, path, f"recipe {path}")
        self._show_saved_results(path)
        self.edit_history.mark_clean(forget=True)
        self.menus_refresh_recent()
        return True

    def apply_recipe(self, recipe: Recipe, path: Path | None, label: str) -> None:
        """Fill the list and the form from ``recipe`` (``path``: where it is saved, if anywhere)."""
        rows = self.session.apply_recipe(recipe)
        self.recipe_path = path
        self.method_panel.load_from_session()
        self.table_model.refresh()
        if rows:
            self._start_loading([(r.id, r.path) for r in rows])
        self.log_panel.log(f"Opened {label} ({recipe.spec.label}, {len(recipe.models)} models)")
        self._refresh_device()
        self._on_session_changed()

    def save_recipe(self, path: str | Path | None = None) -> Path | None:
        """Write the window's state as a recipe; asks for a file when none is known yet."""
        if self.method_panel.form is not None:
            self.session.set_params(self.method_panel.form.values())
        if path is None:
            path = self.recipe_path
        if path is None:
            start = str(Path(self.settings.last_folder("recipes")) / "recipe.yaml")
            chosen, _ = QFileDialog.getSaveFileName(self, "Save recipe", start, RECIPE_FILTER)
            if not chosen:
                return None
            path = chosen
        try:
            recipe = self.session.to_recipe()
            written = recipe.save(path)
        except (MergeStudioError, OSError) as exc:
            self.show_error(JobError.from_exception(exc), "Cannot save the recipe")
            return None
        self.recipe_path = written
        self.edit_history.mark_clean()
        self.settings.add_recent_recipe(written)
        self.settings.set_last_folder("recipes", written)
        self.log_panel.log(f"Saved recipe to {written}", "ok", folder=written.parent)
        self._keep_results(written)
        self._refresh_all()
        self.menus_refresh_recent()
        return written

    def _keep_results(self, recipe_path: Path) -> None:
        """Save the Barrier tab's curves and scores beside the recipe (``NAME.results.json``)."""
        panel = self.extra_views.get("Barrier") if self._extra_views else None
        if panel is None or not hasattr(panel, "kept_results"):
            return
        from merge_studio.core.evaluate.saved_results import save_results

        barrier, scores, inputs = panel.kept_results()
        permutations = self.extra_views.get("Permutations")
        alignment = getattr(getattr(permutations, "view", None), "report", None)
        try:
            kept = save_results(recipe_path, inputs, barrier=barrier, scores=scores, alignment=alignment)
        except MergeStudioError as exc:
            self.log_panel.log(f"Could not keep the results with the recipe: {exc}", "warning")
            return
        if kept is not None:
            self.log_panel.log(f"Kept the barrier curves, scores and alignment in {kept.name}", folder=kept.parent)

    def _show_saved_results(self, recipe_path: Path) -> None:
        """Show the curves and scores kept beside a recipe, without recomputing them."""
        from merge_studio.core.evaluate.saved_results import load_results, results_path

        saved = load_results(recipe_path)
        if saved.empty:
            return
        self.build_deferred_views()
        panel = self.extra_views.get("Barrier")
        if panel is None or not hasattr(panel, "show_saved"):
            return
        panel.show_saved(saved, results_path(recipe_path).name)
        permutations = self.extra_views.get("Permutations")
        if saved.alignment is not None and permutations is not None and hasattr(permutations, "set_report"):
            permutations.set_report(saved.alignment)  # the permutations; similarity needs the models again
        note = f" (computed before {', '.join(saved.stale)} changed: run again to update)" if saved.stale else ""
        self.log_panel.log(f"Showing the results kept in {results_path(recipe_path).name}{note}",
                           "warning" if saved.stale else "info")

    # --- merging ----------------------------------------------------------------------
    def start_merge(self) -> JobWorker | None:
        """Start the merge the window describes; ``None`` when it cannot start (reason shown)."""
        if self.merge_worker is not None:
            return None
        if self.method_panel.form is not None:
            if not self.method_panel.form.is_valid():
                self.log_panel.log("Fix the highlighted parameters first", "warning")
                return None
            self.session.set_params(self.method_panel.form.values())
        if not self.session.output.path and self.session.ready_models:
            self.resuggest_output()
        try:
            recipe = self.session.to_recipe()
        except MergeStudioError as exc:
            self.show_error(JobError.from_exception(exc), "Cannot merge yet")
            return None
        from merge_studio.core.overwrite import merge_targets
        from merge_studio.gui.output_guard import confirm_overwrite

        refused = self.merge_estimate.refusal(recipe)
        if refused is not None:  # the estimate under the button already says it cannot fit
            self.show_error(JobError.from_exception(refused), "Cannot merge")
            return None
        if self.interactive and not confirm_overwrite(self, merge_targets(recipe)):
            self.log_panel.log(f"Kept {recipe.output}; choose another output to merge", "warning")
            return None
        if recipe.output:  # the folder merged into is where the next suggestion goes
            self.settings.outputs_folder = Path(recipe.output).expanduser().absolute().parent
        self.log_panel.log(f"Merging {len(recipe.models)} models with {recipe.spec.label} into {recipe.output}")
        from merge_studio.core import merge_process

        threads = self.settings.merge_threads or None  # 0: every core
        if merge_process.enabled():  # its threads never share the window's interpreter lock
            job = merge_process.iter_merge_in_process
        else:
            from merge_studio.core.estimate import iter_checked_merge as job  # imports torch: not at start-up
        worker = self.runner.start(lambda token: job(recipe, token, threads=threads), "merge")
        worker.sig_progress.connect(self._on_merge_progress)
        worker.sig_result.connect(self._on_merge_result)
        worker.sig_failed.connect(self._on_merge_failed)
        worker.sig_cancelled.connect(self._on_merge_cancelled)
        worker.sig_done.connect(self._on_merge_done)
        self.merge_worker = worker
        self.merge_history.started(recipe)
        self.job_status.start("Merging")
        self.method_panel.set_running(True)
        self.actions_by_name["cancel"].setEnabled(True)
        self._refresh_problems()
        return worker

    def cancel_jobs(self) -> None:
        """Cancel the merge (and any loading); returns at once, the job stops at its next check."""
        if self.merge_worker is not None:
            self.merge_worker.cancel()
            self.job_status.cancelling()
        for worker in list(self._loaders):
            worker.cancel()

    def _on_merge_progress(self, progress: Progress) -> None:
        self.job_status.update_progress(progress)

    def _on_merge_result(self, result: MergeResult) -> None:
        self.merge_history.finished("ok", result=result)
        out = result.output
        folder = out if out.is_dir() else out.parent
        self.log_panel.log(
            f"Merged {result.tensor_count} tensors in {result.seconds:.1f} s; wrote {out}", "ok", folder=folder
        )
        for path in result.outputs:
            self.open_paths([path], as_inputs=False)
        graph = self.extra_views.get("Graph")
        changes = {layer: stats["relative_change"] for layer, stats in result.layer_stats.items() if "relative_change" in stats}
        if graph is not None and changes and hasattr(graph, "set_overlay"):
            graph.set_overlay("relative change", changes)
        self.sig_merge_finished.emit(result)

    def _on_merge_failed(self, error: JobError) -> None:
        self.merge_history.finished("failed", error=error.message)
        self.log_panel.log(f"Merge failed: {error.message}", "error")
        self.show_error(error, "The merge failed")
        self.sig_merge_finished.emit(None)

    def _on_merge_cancelled(self) -> None:
        self.merge_history.finished("cancelled")
        self.log_panel.log("Merge cancelled; nothing was written.", "warning")
        self.sig_merge_finished.emit(None)

    def _on_merge_done(self) -> None:
        worker = self.merge_worker
        self.merge_worker = None
        if worker is not None and not worker.cancelled:
            self.job_status.finish("Ready")
        else:
            self.job_status.finish("Cancelled")
        self.method_panel.set_running(False)
        self.actions_by_name["cancel"].setEnabled(False)
        self._refresh_problems()
