"""The Search tab: search the current method's coefficients on data, watch the trials, merge the best.

The tab computes nothing itself. Start takes the window's recipe (the models and
method of the method panel), the ranges and objectives typed here (the same syntax
as ``merge-studio search``), and runs :func:`~merge_studio.core.search.iter_search`
on the window's ``JobRunner``. Each finished trial arrives as a partial result and is
added to the plot and the best-trials table; when the search ends (or is cancelled,
which stops the workers and keeps the finished trials in the study), a short job
reads the study back and computes the parameters' importance.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from merge_studio.core.progress import CancelToken, Progress
from merge_studio.errors import MergeStudioError
from merge_studio.gui.views.search.best_table import BestTrialsTable
from merge_studio.gui.views.search.plot import SearchPlot
from merge_studio.gui.workers import JobError, JobRunner, JobWorker

BEST_ROWS = 20
DEFAULT_RANGES = {"weight": "0:1", "lambda": "0.2:1.5", "t": "0:1", "density": "0.1:1", "alpha": "0:1"}


def suggested_ranges(method: str) -> str:
    """Ranges to start from for a method: its usual coefficients that it has."""
    from merge_studio.core.methods.registry import get_method

    spec = get_method(method)
    keys = [f.alias or n for model in (spec.params, spec.model_params) for n, f in model.model_fields.items()]
    return " ".join(f"{k}={DEFAULT_RANGES[k]}" for k in keys if k in DEFAULT_RANGES)


class SearchTab(QWidget):
    """Controls, live plot, best trials, importance, and "Merge with these"."""

    sig_trial = Signal(object)
    """A finished trial (:class:`~merge_studio.core.search.TrialResult`) reached the plot."""
    sig_finished = Signal(object)
    """The study read back after a search ended or was cancelled (a ``SearchResult``)."""
    sig_merged = Signal(object)
    """The path a chosen trial's model was written to."""

    def __init__(self, parent: QWidget | None = None, *, runner: JobRunner | None = None,
                 recipe_provider: Callable[[], Any] | None = None) -> None:
        super().__init__(parent)
        self.runner = runner or JobRunner(self)
        self.recipe_provider = recipe_provider
        self.worker: JobWorker | None = None
        self.result: Any = None
        self.importance: dict[str, float] = {}
        self._trials: dict[int, Any] = {}
        self._setup: tuple[Any, Any, list[Any], Path] | None = None  # recipe, space, objectives, storage
        self._build()

    # --- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.params_edit = QLineEdit(self)
        self.params_edit.setPlaceholderText("lambda=0.2:1.5 weight=0:1   (NAME=LO:HI[:log|:int][@anchors])")
        self.objectives_edit = QLineEdit("accuracy", self)
        self.objectives_edit.setPlaceholderText("accuracy | loss | perplexity [:DATA,…][@train|@test]; two give a Pareto front")
        self.trials_spin = QSpinBox(self)
        self.trials_spin.setRange(1, 100_000)
        self.trials_spin.setValue(50)
        self.workers_spin = QSpinBox(self)
        self.workers_spin.setRange(0, 512)
        self.workers_spin.setValue(2)
        self.workers_spin.setToolTip("Trials at once (worker processes; 0 runs them on the job's thread)")
        self.sampler_combo = QComboBox(self)
        self.sampler_combo.addItems(["tpe", "cmaes", "random"])
        self.ray_edit = QLineEdit(self)
        self.ray_edit.setPlaceholderText("Ray address (empty: this computer)")
        self.ray_edit.setToolTip("'auto' joins the cluster 'ray start' made here; 'ray://HOST:10001' a remote one")
        self.start_button = QPushButton("Start search", self)
        self.start_button.setObjectName("primary_button")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.status = QLabel("Choose ranges and an objective, then Start.", self)
        self.status.setWordWrap(True)
        self.status.setObjectName("search_status")

        grid = QGridLayout()
        grid.addWidget(QLabel("Ranges", self), 0, 0)
        grid.addWidget(self.params_edit, 0, 1, 1, 6)
        grid.addWidget(QLabel("Objectives", self), 1, 0)
        grid.addWidget(self.objectives_edit, 1, 1, 1, 6)
        grid.addWidget(QLabel("Trials", self), 2, 0)
        grid.addWidget(self.trials_spin, 2, 1)
        grid.addWidget(QLabel("Workers", self), 2, 2)
        grid.addWidget(self.workers_spin, 2, 3)
        grid.addWidget(QLabel("Sampler", self), 2, 4)
        grid.addWidget(self.sampler_combo, 2, 5)
        grid.addWidget(QLabel("Ray", self), 3, 0)
        grid.addWidget(self.ray_edit, 3, 1, 1, 6)
        grid.setColumnStretch(6, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.status, 1)

        self.plot = SearchPlot(self)
        self.best_table = BestTrialsTable(self)
        self.best_table.sig_chosen.connect(self.plot.select)
        self.importance_table = QTableWidget(0, 2, self)
        self.importance_table.setHorizontalHeaderLabels(["parameter", "importance"])
        self.importance_table.verticalHeader().hide()
        self.importance_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.importance_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.importance_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.merge_button = QPushButton("Merge with these…", self)
        self.merge_button.setEnabled(False)
        self.merge_button.setToolTip("Write the selected trial's merged model and its recipe")

        best_box = QWidget(self)
        best_layout = QVBoxLayout(best_box)
        best_layout.setContentsMargins(0, 0, 0, 0)
        best_layout.addWidget(QLabel("Best trials", best_box))
        best_layout.addWidget(self.best_table, 1)
        best_layout.addWidget(self.merge_button, 0, Qt.AlignmentFlag.AlignLeft)
        imp_box = QWidget(self)
        imp_box.setMinimumWidth(190)
        imp_layout = QVBoxLayout(imp_box)
        imp_layout.setContentsMargins(0, 0, 0, 0)
        self.importance_label = QLabel("Parameter importance", imp_box)
        imp_layout.addWidget(self.importance_label)
        imp_layout.addWidget(self.importance_table, 1)
        lower = QSplitter(Qt.Orientation.Horizontal, self)
        lower.addWidget(best_box)
        lower.addWidget(imp_box)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 1)
        body = QSplitter(Qt.Orientation.Vertical, self)
        body.addWidget(self.plot)
        body.addWidget(lower)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 2)

        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addLayout(buttons)
        layout.addWidget(body, 1)
        self.start_button.clicked.connect(lambda: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.merge_button.clicked.connect(lambda: self.merge_selected())

    # --- running ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.worker is not None

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#c0392b;" if error else "")

    def start(self) -> JobWorker | None:
        """Start the search the fields describe; ``None`` (and the reason shown) when they do not."""
        from merge_studio.core.search import Objective, SearchSpace
        from merge_studio.core.search.runner import default_storage

        if self.running:
            return None
        try:
            if self.recipe_provider is None:
                raise MergeStudioError("no models to search over", hint="load models and choose a method first")
            recipe = self.recipe_provider()
            if not self.params_edit.text().strip():
                self.params_edit.setText(suggested_ranges(recipe.method))
            space = SearchSpace.parse(self.params_edit.text().split())
            objectives = [Objective.parse(t) for t in (self.objectives_edit.text().split() or ["accuracy"])]
            space.dimensions(recipe.method, len(recipe.models))  # bad names fail here, not in a worker
            if not recipe.output:
                raise MergeStudioError("choose the output file in the method panel first",
                                       hint="the study is kept next to it, as OUTPUT.search.db")
            storage = default_storage(recipe)
        except MergeStudioError as exc:
            self._say(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""), error=True)
            return None
        self._setup = (recipe, space, objectives, storage)
        self._trials.clear()
        self.best_table.reset()
        self.plot.start([o.name for o in objectives], [o.direction for o in objectives])
        self._set_running(True)
        trials, workers = self.trials_spin.value(), self.workers_spin.value()
        sampler, ray = self.sampler_combo.currentText(), self.ray_edit.text().strip() or None
        self._say(f"searching; the study is kept in {storage.name}")

        def job(cancel: CancelToken) -> Generator[Any, None, Any]:
            from merge_studio.core.search import iter_search, load_search

            if storage.is_file():
                try:
                    yield load_search(storage)  # earlier trials of a resumed search
                except MergeStudioError:
                    pass
            return (yield from iter_search(recipe, space, objectives, trials=trials, workers=workers, ray=ray,
                                           storage=storage, sampler=sampler, cancel=cancel))

        worker = self.worker = self.runner.start(job, "search")
        worker.sig_partial.connect(self._on_worker_partial)
        worker.sig_progress.connect(self._on_worker_progress)
        worker.sig_failed.connect(self._on_worker_failed)
        worker.sig_cancelled.connect(lambda: self._say(f"cancelled; {len(self._trials)} finished trials kept"))
        worker.sig_done.connect(self._on_worker_done)
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self._say("stopping the workers…")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.params_edit, self.objectives_edit, self.trials_spin, self.workers_spin, self.sampler_combo,
                  self.ray_edit):
            w.setEnabled(not running)

    def _on_worker_partial(self, item: Any) -> None:
        from merge_studio.core.search import SearchResult, TrialResult

        if isinstance(item, SearchResult):
            for t in item.trials:
                self._trials[t.number] = t
            self.plot.set_trials([t.number for t in item.trials], [t.values for t in item.trials])
            self._refresh_best()
        elif isinstance(item, TrialResult) and item.ok:
            self._trials[item.number] = item
            self.plot.add_trial(item.number, item.values)
            self._refresh_best()
            self.sig_trial.emit(item)

    def _on_worker_progress(self, progress: Progress) -> None:
        if progress.total:
            self._say(f"{progress.done} of {progress.total} trials finished")

    def _on_worker_failed(self, error: JobError) -> None:
        self._say(f"the search stopped: {error.message}" + (f" ({error.hint})" if error.hint else ""), error=True)

    def _on_worker_done(self) -> None:
        self.worker = None
        self._set_running(False)
        if self._setup is not None and self._setup[3].is_file():
            self._summarise(self._setup[3])

    def _summarise(self, storage: Path) -> None:
        """Read the study back and compute the importance on a worker (fANOVA takes a moment)."""

        def job(_cancel: CancelToken) -> Generator[Any, None, tuple[Any, dict[str, float]]]:
            from merge_studio.core.search import load_search, parameter_importance

            yield from ()
            result = load_search(storage)
            return result, parameter_importance(result)

        worker = self.runner.start(job, "search-summary")
        worker.sig_result.connect(self._on_summary)

    def _on_summary(self, value: tuple[Any, dict[str, float]]) -> None:
        self.result, self.importance = value
        for t in self.result.trials:
            self._trials[t.number] = t
        self._refresh_best()
        self.importance_table.setRowCount(len(self.importance))
        for row, (name, share) in enumerate(sorted(self.importance.items(), key=lambda kv: -kv[1])):
            self.importance_table.setItem(row, 0, QTableWidgetItem(name))
            self.importance_table.setItem(row, 1, QTableWidgetItem(f"{share:.2f}"))
        if not self.importance:
            self.importance_label.setText("Parameter importance (after a few trials)")
        elif len(self._setup[2]) > 1:
            self.importance_label.setText(f"Parameter importance for {self._setup[2][0].name}")
        else:
            self.importance_label.setText("Parameter importance")
        if not self.status.styleSheet():
            self._say(f"{len(self.result.trials)} trials in {self.result.storage.name}; "
                      "select one and Merge with these")
        self.sig_finished.emit(self.result)

    # --- the best trials ----------------------------------------------------------------------
    def best_trials(self) -> list[Any]:
        """The best trials seen: sorted by the objective, or the Pareto front for several."""
        from merge_studio.plots.search import pareto_mask

        if self._setup is None or not self._trials:
            return []
        directions = [o.direction for o in self._setup[2]]
        trials = list(self._trials.values())
        if len(directions) > 1:
            mask = pareto_mask([t.values for t in trials], directions)
            front = [t for t, keep in zip(trials, mask, strict=True) if keep]
            return sorted(front, key=lambda t: t.values[0], reverse=directions[0] == "maximize")[:BEST_ROWS]
        return sorted(trials, key=lambda t: t.values[0], reverse=directions[0] == "maximize")[:BEST_ROWS]

    def _refresh_best(self) -> None:
        if self._setup is None:
            return
        objectives = self._setup[2]
        best = self.best_trials()
        self.best_table.show_trials(best, [o.name if len(objectives) > 1 else o.kind for o in objectives])
        self.merge_button.setEnabled(bool(best))

    def selected_trial(self) -> Any:
        return self._trials.get(self.best_table.selected_number())

    # --- merging ------------------------------------------------------------------------------
    def recipe_for(self, trial: Any) -> Any:
        """The recipe the search ran, with this trial's values."""
        import yaml

        from merge_studio.core.recipe import Recipe
        from merge_studio.core.search.space import apply_values

        recipe, space, _objectives, _storage = self._setup
        data = yaml.safe_load(recipe.to_yaml())
        dims = space.dimensions(recipe.method, len(recipe.models))
        return Recipe.model_validate(apply_values(data, dims, trial.params))

    def merge_selected(self, output: str | Path | None = None) -> JobWorker | None:
        """Merge the selected trial to ``output`` (asked for when not given) and save its recipe beside it."""
        trial = self.selected_trial()
        if trial is None or self._setup is None:
            return None
        if output is None:
            start = str(self._setup[0].output or "")
            chosen, _ = QFileDialog.getSaveFileName(self, "Write the merged model", start,
                                                    "safetensors (*.safetensors);;All files (*)")
            if not chosen:
                return None
            output = chosen
        recipe = self.recipe_for(trial).model_copy(update={"output": str(output)})
        recipe_path = Path(str(output).rstrip("/") + ".recipe.yaml")

        def job(cancel: CancelToken) -> Generator[Any, None, Any]:
            from merge_studio.core.engine import iter_merge

            result = yield from iter_merge(recipe, cancel)
            recipe.save(recipe_path)
            return result

        worker = self.runner.start(job, "search-merge")
        worker.sig_result.connect(lambda result: self._on_merged(result.output, recipe_path))
        worker.sig_failed.connect(lambda error: self._say(f"the merge failed: {error.message}", error=True))
        self._say(f"merging trial {trial.number}…")
        return worker

    def _on_merged(self, path: Path, recipe_path: Path) -> None:
        self._say(f"wrote {path} and {recipe_path.name}")
        self.sig_merged.emit(path)
