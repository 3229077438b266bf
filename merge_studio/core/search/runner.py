"""The search driver: Optuna's ask/tell in this process, trials on a pool, the study in SQLite.

``iter_search`` is a job generator like the others: it yields :class:`Progress` and a
:class:`TrialResult` as each trial ends, and returns a :class:`SearchResult`. The study
is the single source of truth; it lives in a SQLite file (by default
``<output>.search.db``), so running the same search again with more trials continues
where it stopped: ``trials`` counts the finished trials the study should hold.
Cancelling stops the workers, records the trials that were running as failed and
keeps every finished one.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from merge_studio.core.progress import CancelToken, Progress
from merge_studio.core.search.objectives import Objective
from merge_studio.core.search.pools import make_pool
from merge_studio.core.search.space import Dimension, SearchError, SearchSpace, apply_values
from merge_studio.errors import Cancelled

Sampler = Literal["tpe", "cmaes", "random"]
STUDY_NAME = "merge-studio"


@dataclass(frozen=True)
class TrialResult:
    """A finished trial: its number, the values it drew, its objective values or its error."""

    number: int
    params: dict[str, float]
    values: tuple[float, ...] | None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.values is not None


@dataclass(frozen=True)
class SearchResult:
    """The study after a search: every finished trial, the best (Pareto front for several objectives)."""

    storage: Path
    study_name: str
    objectives: tuple[Objective, ...]
    dims: tuple[Dimension, ...]
    recipe: dict[str, Any]
    trials: tuple[TrialResult, ...]
    best: tuple[TrialResult, ...]
    failed: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def recipe_for(self, trial: TrialResult) -> Any:
        from merge_studio.core.recipe import Recipe

        return Recipe.model_validate(apply_values(self.recipe, self.dims, trial.params))

    def best_recipe(self, index: int = 0) -> Any:
        """The recipe of the best trial (the ``index``-th of the Pareto front)."""
        if not self.best:
            raise SearchError("the search has no finished trial yet", hint="run more trials")
        return self.recipe_for(self.best[index])


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SearchError("coefficient search needs Optuna", hint="pip install 'merge-studio[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(recipe: Any) -> Path:
    if not recipe.output:
        raise SearchError("the recipe names no output, so there is nowhere to keep the search",
                          hint="give -o OUT (the study goes to OUT.search.db) or --storage PATH")
    return Path(str(recipe.output).rstrip("/") + ".search.db")


def _sampler(optuna: Any, name: Sampler, seed: int, n_objectives: int) -> Any:
    if name == "cmaes":
        if n_objectives > 1:
            raise SearchError("CMA-ES optimises one objective", hint="use the TPE sampler for several objectives")
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise SearchError("the CMA-ES sampler needs the cmaes package", hint="pip install 'merge-studio[search]'") from None
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


def _distributions(optuna: Any, dims: Sequence[Dimension]) -> dict[str, Any]:
    d = optuna.distributions
    return {x.key: (d.IntDistribution(int(x.low), int(x.high), log=x.log) if x.kind == "int"
                    else d.FloatDistribution(x.low, x.high, log=x.log)) for x in dims}


def open_study(storage: Path, objectives: Sequence[Objective], sampler: Sampler = "tpe", seed: int = 0,
               study_name: str = STUDY_NAME) -> Any:
    optuna = require_optuna()
    storage.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.create_study(study_name=study_name, storage=f"sqlite:///{storage}", load_if_exists=True,
                                   directions=[o.direction for o in objectives],
                                   sampler=_sampler(optuna, sampler, seed, len(objectives)))
    except ValueError as exc:
        raise SearchError(f"the search stored in {storage.name} does not match this one: {exc}",
                          hint="use the same objectives, or another --storage file") from None


def _trial_result(t: Any) -> TrialResult:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else 0.0
    values = tuple(float(v) for v in t.values) if t.values is not None else None
    return TrialResult(t.number, dict(t.params), values, seconds, t.user_attrs.get("error"))


def study_result(study: Any, storage: Path, objectives: Sequence[Objective], dims: Sequence[Dimension],
                 recipe: Mapping[str, Any], seconds: float = 0.0) -> SearchResult:
    optuna = require_optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    failed = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL)
    best: list[Any] = []
    if complete:
        best = list(study.best_trials) if len(objectives) > 1 else [study.best_trial]
    return SearchResult(storage, study.study_name, tuple(objectives), tuple(dims), dict(recipe),
                        tuple(_trial_result(t) for t in complete), tuple(_trial_result(t) for t in best),
                        failed, seconds)


def _fail_stale(optuna: Any, study: Any) -> None:
    """Trials left running by a search that was killed will never report: mark them failed."""
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def iter_search(
    recipe: Any,
    space: SearchSpace,
    objectives: Sequence[Objective],
    *,
    trials: int,
    workers: int | None = 2,
    ray: str | None = None,
    storage: str | Path | None = None,
    sampler: Sampler = "tpe",
    seed: int = 0,
    device: str = "cpu",
    gpus_per_trial: float = 0.0,
    cancel: CancelToken | None = None,
) -> Generator[Progress | TrialResult, None, SearchResult]:
    """Run trials until the study holds ``trials`` finished ones (see the module docstring)."""
    import yaml

    optuna = require_optuna()
    if not objectives:
        raise SearchError("no objective", hint="give --objective accuracy (or loss, perplexity)")
    start = time.perf_counter()
    recipe_data = yaml.safe_load(recipe.to_yaml())
    dims = space.dimensions(recipe.method, len(recipe.models))
    path = Path(storage) if storage else default_storage(recipe)
    study = open_study(path, objectives, sampler, seed)
    study.set_user_attr("space", space.to_strings())
    study.set_user_attr("objectives", [o.to_dict() for o in objectives])
    study.set_user_attr("recipe", recipe_data)
    _fail_stale(optuna, study)
    dists = _distributions(optuna, dims)
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
    yield Progress("search", done, trials, current=path.name, unit="trials", message="starting workers")
    if done >= trials:
        return study_result(study, path, objectives, dims, recipe_data, time.perf_counter() - start)
    pool = make_pool(workers, ray, gpus_per_trial=gpus_per_trial)
    pending: dict[Future, Any] = {}
    errors: list[str] = []
    objective_dicts = [o.to_dict() for o in objectives]
    try:
        while done + len(pending) < trials or pending:
            if cancel is not None and cancel.cancelled:
                raise Cancelled("search cancelled")
            while len(pending) < pool.parallel and done + len(pending) < trials:
                trial = study.ask(dists)
                values = {d.key: trial.params[d.key] for d in dims}
                pending[pool.submit(apply_values(recipe_data, dims, values), objective_dicts, device)] = trial
            finished, _ = wait(list(pending), timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in finished:
                trial = pending.pop(fut)
                outcome = fut.result()
                if "error" in outcome:
                    trial.set_user_attr("error", outcome["error"])
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    errors.append(outcome["error"])
                    result = TrialResult(trial.number, dict(trial.params), None, outcome["seconds"], outcome["error"])
                    if done == 0 and len(errors) >= min(3, trials):
                        raise SearchError(f"the first trials all failed: {errors[0]}",
                                          hint="check the ranges and the objective's data")
                else:
                    study.tell(trial, outcome["values"])
                    done += 1
                    result = TrialResult(trial.number, dict(trial.params), tuple(outcome["values"]), outcome["seconds"])
                yield result
                yield Progress("search", done, trials, current=f"trial {trial.number}", unit="trials")
    except BaseException:
        pool.cancel()
        for trial in pending.values():
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        pool.close()
    return study_result(study, path, objectives, dims, recipe_data, time.perf_counter() - start)


def run_search(recipe: Any, space: SearchSpace, objectives: Sequence[Objective], **kwargs: Any) -> SearchResult:
    """Plain call over :func:`iter_search` (for scripts and tests)."""
    from merge_studio.core.progress import drive

    return drive(iter_search(recipe, space, objectives, **kwargs))


def load_search(storage: str | Path, study_name: str = STUDY_NAME) -> SearchResult:
    """A stored search, read back (for the window, or to merge with a trial found earlier)."""
    optuna = require_optuna()
    path = Path(storage)
    if not path.is_file():
        raise SearchError(f"no search stored at {path}")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{path}")
    objectives = [Objective(**o) for o in study.user_attrs.get("objectives", [])]
    recipe = study.user_attrs.get("recipe") or {}
    space = SearchSpace.parse(study.user_attrs.get("space", []))
    dims = space.dimensions(recipe["method"], len(recipe["models"]))
    return study_result(study, path, objectives, dims, recipe)


def parameter_importance(result: SearchResult, objective: int = 0) -> dict[str, float]:
    """How much each searched number mattered to one objective (fANOVA); empty with too few trials."""
    optuna = require_optuna()
    if len(result.trials) < 4:
        return {}
    study = optuna.load_study(study_name=result.study_name, storage=f"sqlite:///{result.storage}")
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                            target=lambda t: t.values[objective]))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
