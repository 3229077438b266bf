"""How the window's Graph, Barrier, Permutations and Inspector views talk to each other.

Each view works alone; this module connects them inside :class:`MainWindow`:

* a click on a layer in the graph filters the Inspector to its tensors and opens
  its permutation group;
* an architecture chosen in the graph or typed in the align strip is remembered
  per checkpoint in the session (and so in saved recipes);
* an alignment shows its report, colours the graph by units permuted (layers that
  could not be permuted marked apart) and hands aligned B to the Barrier tab;
* a finished merge offers the graph overlays (relative change, cosine between the
  first two inputs, task-vector mass kept) and shows a re-basin method's report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Slot

from merge_studio.core.progress import CancelToken

if TYPE_CHECKING:
    from merge_studio.gui.align_job import AlignOutcome
    from merge_studio.gui.main_window import MainWindow

COSINE_OVERLAY = "cosine similarity"
KEPT_OVERLAY = "task-vector mass kept"
CHANGE_OVERLAY = "relative change"
DIFFERENCE_OVERLAY = "difference ‖A − B‖/‖B‖"
LEARNED_OVERLAY = "learned λ (mean over models)"


def overlay_scale(name: str):  # noqa: ANN201 - an OverlayScale
    """Each overlay's colours mean the same whatever the values: similarity and shares on 0–1, change from 0."""
    from merge_studio.graph.overlay import OverlayScale

    if name in (COSINE_OVERLAY, KEPT_OVERLAY, LEARNED_OVERLAY):
        return OverlayScale.share()  # the difference overlay, like relative change, counts from 0
    return OverlayScale("from_zero")


def _cosine_job(path_a: Path, path_b: Path) -> Callable[[CancelToken], Generator[Any, None, dict[str, float]]]:
    def job(cancel: CancelToken) -> Generator[Any, None, dict[str, float]]:
        from merge_studio.core.analysis import iter_layer_cosine
        from merge_studio.core.checkpoints import open_checkpoint

        with open_checkpoint(path_a) as a, open_checkpoint(path_b) as b:
            return (yield from iter_layer_cosine(a, b, cancel))

    return job


def _change_job(reference: Path, merged: Path) -> Callable[[CancelToken], Generator[Any, None, dict[str, float]]]:
    def job(cancel: CancelToken) -> Generator[Any, None, dict[str, float]]:
        from merge_studio.core.analysis import iter_layer_relative_change
        from merge_studio.core.checkpoints import open_checkpoint

        with open_checkpoint(reference) as a, open_checkpoint(merged) as m:
            return (yield from iter_layer_relative_change(a, m, cancel))

    return job


def _kept_job(merged: Path) -> Callable[[CancelToken], Generator[Any, None, dict[str, float]]]:
    def job(_cancel: CancelToken) -> Generator[Any, None, dict[str, float]]:
        from merge_studio.core.analysis import layer_kept_fraction
        from merge_studio.core.checkpoints import open_checkpoint

        yield from ()
        with open_checkpoint(merged) as checkpoint:
            return layer_kept_fraction(checkpoint)

    return job


MERGE_MANY_FORMAT = "merge_studio.merge_many_report"


def is_permutation_report(report: Any) -> bool:
    """A report the Permutations tab can show: weight matching's, or MergeMany's (see :func:`view_report`)."""
    if not isinstance(report, Mapping) or not isinstance(report.get("groups"), list):
        return False
    if report.get("format") == MERGE_MANY_FORMAT:
        return bool(report.get("perms"))
    return all("perm" in g for g in report["groups"])


def view_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report in the shape the Permutations tab draws.

    MergeMany permutes every model towards the others' average; the tab shows the
    model whose units moved most (its name leads the group list), with the rounds'
    count of changes as its convergence.
    """
    if report.get("format") != MERGE_MANY_FORMAT:
        return dict(report)
    moved = report.get("moved_fraction", {})
    perms = report["perms"]

    def share(name: str) -> float:
        sizes = {g["name"]: g["size"] for g in report["groups"]}
        total = sum(sizes.values()) or 1
        return sum(moved.get(name, {}).get(g, 0.0) * n for g, n in sizes.items()) / total

    model = max(perms, key=share)
    groups = [
        {**g, "perm": perms[model].get(g["name"], list(range(g["size"]))), "moved_fraction": moved.get(model, {}).get(g["name"], 0.0)}
        for g in report["groups"]
    ]
    return {
        **{k: v for k, v in report.items() if k not in ("perms", "moved_fraction", "groups")},
        "groups": groups,
        "shown_model": model,
        "objective_per_sweep": [float(c) for c in report.get("changes_per_round", [])],
    }


class ViewWiring(QObject):
    """Connects the window's views; a child of the window, so its slots die with it."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.graph: Any = None
        self.barrier: Any = None
        self.permutations: Any = None
        self.strip: Any = None
        self._overlay_jobs: dict[QObject, str] = {}
        self._connect()

    def _connect(self) -> None:
        window = self.window
        window.sig_merge_finished.connect(self._on_window_merge_finished)
        window.model_list.sig_compare_requested.connect(self._on_model_list_compare_requested)
        window.model_list.sig_align_requested.connect(self._on_model_list_align_requested)
        window.sig_models_loaded.connect(self.refresh_models)

    def attach_views(self, views: Mapping[str, Any]) -> None:
        """Connect the Graph, Barrier and Permutations views by tab title.

        Separate from construction because the window may build these views
        after its first paint (they import torch, matplotlib and scipy).
        """
        self.graph = views.get("Graph")
        self.barrier = views.get("Barrier")
        self.permutations = views.get("Permutations")
        self.strip = getattr(self.permutations, "strip", None)
        if self.graph is not None:
            self.graph.sig_layer_selected.connect(self._on_graph_layer_selected)
            self.graph.sig_arch_chosen.connect(self._on_graph_arch_chosen)
        if self.barrier is not None and hasattr(self.barrier, "sig_finished"):
            self.barrier.sig_finished.connect(lambda shown: self.window.merge_history.on_scores(shown))
        if self.strip is not None:
            self.strip.arch_provider = self._arch_for_path
            self.strip.preferred_provider = self._preferred_pair
            self.strip.device_provider = self._device
            self.strip.sig_aligned.connect(self._on_strip_aligned)
            self.strip.sig_arch_chosen.connect(self._on_strip_arch_chosen)
            self.strip.sig_job_started.connect(self._on_strip_job_started)
            self.strip.sig_failed.connect(self._on_strip_failed)
            self.strip.sig_saved.connect(self._on_strip_saved)

    # --- models ---------------------------------------------------------------------------
    @Slot()
    def refresh_models(self) -> None:
        """Offer the ready models to the align strip (A/B default: base + other, else the first two)."""
        if self.strip is not None and not self.strip.running:
            self.strip.refresh_models()

    def _device(self) -> str:
        return self.window.session.output.device

    def _preferred_pair(self) -> tuple[Path, Path] | None:
        session = self.window.session
        ready = session.ready_models
        base = session.base
        if base is not None and base.status == "ready":
            other = next((m for m in ready if m is not base), None)
            return (base.path, other.path) if other is not None else None
        return (ready[0].path, ready[1].path) if len(ready) >= 2 else None

    def _arch_for_path(self, path: Path) -> str | None:
        """The architecture remembered for a model, else the one detected from its file."""
        model = self.window.session.find_path(path)
        if model is None:
            return None
        if model.arch:
            return model.arch
        if model.checkpoint is None:
            return None
        from merge_studio.core.arch import detect_arch

        try:
            return detect_arch(model.checkpoint)
        except Exception:  # noqa: BLE001 - detection is a convenience; the user can type one
            return None

    # --- graph ----------------------------------------------------------------------------
    @Slot(str)
    def _on_graph_layer_selected(self, layer: str) -> None:
        # the Graph tab describes the node itself (its properties panel); the Permutations tab follows
        if self.permutations is not None and hasattr(self.permutations, "select_layer"):
            self.permutations.select_layer(layer)

    @Slot(str)
    def _on_graph_arch_chosen(self, spec: str) -> None:
        model = self.window.graph_model()
        if model is None:
            return
        self.window.session.set_arch(model.id, spec)
        self.window.log_panel.log(f"Architecture of {model.name}: {spec or 'module tree (none)'}")

    # --- alignment ------------------------------------------------------------------------
    @Slot(str)
    def _on_strip_arch_chosen(self, spec: str) -> None:
        pair = self.strip.paths() if self.strip is not None else None
        for path in pair or ():
            model = self.window.session.find_path(path)
            if model is not None:
                self.window.session.set_arch(model.id, spec)

    @Slot(object)
    def _on_strip_job_started(self, worker: Any) -> None:
        status = self.window.job_status
        status.start("Aligning" if worker.name == "align" else "Saving aligned B")
        worker.sig_progress.connect(status.update_progress)
        worker.sig_done.connect(self._on_strip_job_done)

    @Slot()
    def _on_strip_job_done(self) -> None:
        self.window.job_status.finish("Ready")

    @Slot(object)
    def _on_strip_failed(self, error: Any) -> None:
        self.window.log_panel.log(f"Alignment failed: {error.message}", "error")
        self.window.show_error(error, "The alignment failed")

    @Slot(str)
    def _on_strip_saved(self, path: str) -> None:
        self.window.log_panel.log(f"Saved aligned B to {path}", "ok", folder=Path(path).parent)

    @Slot(object)
    def _on_strip_aligned(self, outcome: AlignOutcome) -> None:
        report = outcome.report
        self.window.log_panel.log(f"Aligned {outcome.names[1]} to {outcome.names[0]} ({outcome.arch})", "ok")
        self.show_report_in_graph(report)
        if self.barrier is not None and hasattr(self.barrier, "set_aligned"):
            if hasattr(self.barrier, "select_pair"):
                self.barrier.select_pair(outcome.path_a, outcome.path_b)
            self.barrier.set_aligned(outcome.aligned)

    def show_report_in_graph(self, report: Mapping[str, Any], *, show: bool = True) -> None:
        """Colour the graph by the share of units permuted, unpermutable layers marked."""
        # Imported here: permutation_view pulls in matplotlib and scipy, too slow for start-up.
        from merge_studio.gui.views.permutation_view import OVERLAY_NAME, layer_marks, layer_overlay

        if self.graph is not None and hasattr(self.graph, "set_overlay"):
            self.graph.set_overlay(OVERLAY_NAME, layer_overlay(report), cmap="plasma", marks=layer_marks(report),
                                   show=show, vmin=0.0, vmax=1.0)

    # --- from the model list --------------------------------------------------------------
    def _pair_paths(self, model_ids: list[int]) -> tuple[Path, Path] | None:
        models = [self.window.session.find(i) for i in model_ids[:2]]
        if len(models) != 2 or any(m is None or m.status != "ready" for m in models):
            return None
        return models[0].path, models[1].path

    @Slot(list)
    def _on_model_list_compare_requested(self, model_ids: list[int]) -> None:
        self.window.build_deferred_views()
        pair = self._pair_paths(model_ids)
        if pair is not None and self.graph is not None:
            self.window.show_tab("Graph")
            self.compare_in_graph(*pair)

    @Slot(list)
    def _on_model_list_align_requested(self, model_ids: list[int]) -> None:
        self.window.build_deferred_views()
        pair = self._pair_paths(model_ids)
        if pair is not None and self.strip is not None and not self.strip.running:
            self.window.show_tab("Permutations")
            self.strip.refresh_models()
            self.strip.select(*pair)
            self.strip.start()

    # --- after a merge --------------------------------------------------------------------
    @Slot(object)
    def _on_window_merge_finished(self, result: Any) -> None:
        if result is None:
            return
        self.window.build_deferred_views()
        report = getattr(result, "report", None)
        if is_permutation_report(report) and self.permutations is not None:
            shown = view_report(report)
            self.permutations.set_report(shown)
            self.show_report_in_graph(shown, show=False)
            whose = f" (showing {shown['shown_model']}, the model that moved most)" if "shown_model" in shown else ""
            self.window.log_panel.log(f"The re-basin report is in the Permutations tab{whose}.")
        self._show_learned_coefficients(report)
        outputs = tuple(Path(p) for p in result.outputs)
        recipe_models = [m.path for m in self.window.session.ready_models if m.in_models and m.path not in outputs]
        if self.graph is None:
            return
        if len(recipe_models) >= 2:
            self._start_overlay_job(COSINE_OVERLAY, _cosine_job(recipe_models[0], recipe_models[1]))
        if outputs:
            self._start_overlay_job(KEPT_OVERLAY, _kept_job(outputs[0]))
        stats = getattr(result, "layer_stats", None) or {}
        if outputs and recipe_models and not any("relative_change" in v for v in stats.values()):
            # whole-model methods (re-basin, Fisher) record no per-layer statistics: measure them
            base = self.window.session.base
            reference = base.path if base is not None and base.status == "ready" else recipe_models[0]
            self._start_overlay_job(CHANGE_OVERLAY, _change_job(reference, outputs[0]), show=True)

    def _show_learned_coefficients(self, report: Any) -> None:
        """AdaMerging's learned λ: a window with the per-layer plot, and their mean as a graph overlay."""
        from merge_studio.gui.dialogs.coefficients_dialog import CoefficientsDialog, layer_means, learned_coefficients

        learned = learned_coefficients(report)
        if learned is None:
            return
        coefficients, names = learned
        self.coefficients_dialog = CoefficientsDialog(coefficients, names, self.window)
        self.coefficients_dialog.sig_keep.connect(self._on_coefficients_keep)
        self.coefficients_dialog.show()
        means = layer_means(coefficients)
        if self.graph is not None and means and hasattr(self.graph, "set_overlay"):
            self.graph.set_overlay(LEARNED_OVERLAY, means, show=False, scale=overlay_scale(LEARNED_OVERLAY))
        self.window.log_panel.log("The learned coefficients are shown per layer (and as a graph overlay); "
                                  "save the recipe to re-run this merge without data.")

    def _on_coefficients_keep(self, table: dict[str, list[float]]) -> None:
        """Put learned coefficients into the current method's parameters (when it takes them)."""
        session, panel = self.window.session, self.window.method_panel
        if "coefficients" not in session.spec.params.model_fields:
            self.window.log_panel.log(f"{session.spec.label} takes no coefficients; choose AdaMerging to use them.",
                                      "warning")
            return
        session.set_params({**session.params(), "coefficients": table})
        panel.form.set_values(session.params())
        self.window.log_panel.log("The learned coefficients are now the method's 'coefficients': the next merge "
                                  "and saved recipes use them without data.")

    def compare_in_graph(self, path_a: str | Path, path_b: str | Path) -> Any:
        """Two models side by side (two merges, or a merge and a parent): their per-layer difference shown on
        the graph (cosine offered too), and both evaluated together in the Barrier tab."""
        self._start_overlay_job(COSINE_OVERLAY, _cosine_job(Path(path_a), Path(path_b)))
        worker = self._start_overlay_job(DIFFERENCE_OVERLAY, _change_job(Path(path_b), Path(path_a)), show=True)
        if self.barrier is not None and hasattr(self.barrier, "evaluate_pair"):
            self.barrier.evaluate_pair(path_a, path_b)
        self.window.log_panel.log(f"Comparing A = {Path(path_a).name} and B = {Path(path_b).name}: the difference per "
                                  "layer is on the Graph tab, their scores side by side under Barrier ▸ Evaluate "
                                  "models.")
        return worker

    def _start_overlay_job(self, name: str, job: Callable[[CancelToken], Any], *, show: bool = False) -> Any:
        worker = self.window.runner.start(job, "graph-overlay")
        self._overlay_jobs[worker] = name
        worker.setProperty("show_overlay", show)
        worker.sig_result.connect(self._on_overlay_result)
        worker.sig_failed.connect(self._on_overlay_failed)
        worker.sig_done.connect(self._on_overlay_done)
        return worker

    @Slot(object)
    def _on_overlay_result(self, values: Mapping[str, float]) -> None:
        worker = self.sender()
        name = self._overlay_jobs.get(worker)
        if name and values and self.graph is not None:
            self.graph.set_overlay(name, values, show=bool(worker.property("show_overlay")), scale=overlay_scale(name))

    @Slot(object)
    def _on_overlay_failed(self, error: Any) -> None:
        name = self._overlay_jobs.get(self.sender(), "overlay")
        self.window.log_panel.log(f"Could not compute the {name} overlay: {error.message}", "warning")

    @Slot()
    def _on_overlay_done(self) -> None:
        self._overlay_jobs.pop(self.sender(), None)
