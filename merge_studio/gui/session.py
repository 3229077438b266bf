"""The window's state without widgets: loaded models, base, method, parameters, output.

Widgets read and change a :class:`Session`; the session turns itself into the
same :class:`~merge_studio.core.recipe.Recipe` the command line runs, and is
restored from one. Keeping it Qt-free makes "window state ⇄ recipe" testable
without a display.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from merge_studio.core.methods.registry import get_method, list_methods
from merge_studio.core.methods.weight_checks import weight_sum_problem
from merge_studio.core.recipe import Recipe
from merge_studio.gui.output_names import OUTPUTS_FOLDER, inside_app_folders, output_stem
from merge_studio.errors import MergeStudioError, RecipeError

if TYPE_CHECKING:
    from merge_studio.core.checkpoints import Checkpoint, CheckpointSummary
    from merge_studio.core.methods.spec import MethodSpec

Status = Literal["loading", "ready", "error"]
_ids = itertools.count(1)
DEFAULT_METHOD = "weighted_average"


@dataclass(eq=False)
class LoadedModel:
    """One row of the model list."""

    path: Path
    status: Status = "loading"
    checkpoint: Checkpoint | None = None
    summary: CheckpointSummary | None = None
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # raw per-model params, by recipe key
    params_by_method: dict[str, dict[str, Any]] = field(default_factory=dict)  # other methods' remembered values
    in_models: bool = True  # False: only the recipe's base, not one of its models
    arch: str | None = None  # chosen by the user (Graph view, align strip); "" = module tree on purpose
    non_finite: list[Any] | None = None  # tensors holding NaN/inf once the values were scanned; None: not yet
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def name(self) -> str:
        return self.checkpoint.name if self.checkpoint is not None else self.path.name

    @property
    def is_adapter(self) -> bool:
        """A LoRA adapter: listed and usable in LoRA actions, not merged as a model itself."""
        return getattr(self.checkpoint, "adapter", None) is not None

    def close(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint.close()


def field_key(model: type[BaseModel], name: str) -> str:
    """The key a recipe uses for a field: its alias when it has one (``lambda``)."""
    info = model.model_fields[name]
    return info.alias or name


def field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Default values by recipe key (fields without a default are left out)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            out[field_key(model, name)] = info.get_default(call_default_factory=True)
    return out


def _known_keys(model: type[BaseModel]) -> set[str]:
    return {field_key(model, n) for n in model.model_fields} | set(model.model_fields)


@dataclass
class OutputSettings:
    """Where and how the merged model is written (and what the recipe carries along)."""

    path: str = ""
    dtype: str | None = None
    shard_size: str | None = None
    device: str = "auto"
    on_mismatch: str = "error"
    compute_dtype: str = "float32"
    seed: int = 0
    hash_sources: bool = True
    arch: str | None = None
    data: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None  # the recipe's tokenizer section (Hugging Face folders)
    slices: list[dict[str, Any]] | None = None  # the recipe's slices (parameters per range of layers)
    part_sources: dict[str, str] = field(default_factory=dict)  # SD part (vae, text_encoder) -> model path

    @property
    def tokenizer_source(self) -> str | None:
        return (self.tokenizer or {}).get("source")

    @tokenizer_source.setter
    def tokenizer_source(self, value: str | None) -> None:
        rest = {k: v for k, v in (self.tokenizer or {}).items() if k != "source"}
        self.tokenizer = {**rest, "source": value} if value is not None else (rest or None)


class Session:
    """Everything a merge needs, as the window shows it."""

    def __init__(self) -> None:
        self.models: list[LoadedModel] = []
        self.base_id: int | None = None
        self.method: str = DEFAULT_METHOD if any(s.name == DEFAULT_METHOD for s in list_methods()) else list_methods()[0].name
        self._params: dict[str, dict[str, Any]] = {}  # per method, raw values by recipe key
        self.output = OutputSettings()
        self.recipe_warnings: list[str] = []  # what the last opened recipe gave that its method ignores
        self._warned_method: str | None = None

    # --- models -----------------------------------------------------------------------
    def add_pending(self, path: str | Path, *, in_models: bool = True) -> LoadedModel:
        """Add a row in the "loading" state; the caller loads it off the GUI thread."""
        model = LoadedModel(Path(path).expanduser().absolute(), in_models=in_models)
        self.models.append(model)
        return model

    def find(self, model_id: int) -> LoadedModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def find_path(self, path: str | Path) -> LoadedModel | None:
        p = Path(path).expanduser().absolute()
        return next((m for m in self.models if m.path == p), None)

    def set_loaded(self, model_id: int, checkpoint: Checkpoint, summary: CheckpointSummary) -> None:
        model = self.find(model_id)
        if model is None:  # removed while it was loading
            checkpoint.close()
            return
        model.checkpoint, model.summary, model.status, model.error = checkpoint, summary, "ready", ""

    def set_failed(self, model_id: int, message: str) -> None:
        model = self.find(model_id)
        if model is not None:
            model.status, model.error = "error", message

    def remove(self, model_id: int) -> None:
        model = self.find(model_id)
        if model is None:
            return
        self.models.remove(model)
        model.close()
        if self.base_id == model_id:
            self.base_id = None

    def move(self, model_id: int, to_index: int) -> None:
        """Put a model at ``to_index`` (order matters: SLERP's t runs from the first to the second)."""
        model = self.find(model_id)
        if model is None:
            return
        self.models.remove(model)
        self.models.insert(max(0, min(to_index, len(self.models))), model)

    def set_input(self, model_id: int, merged: bool) -> None:
        """Whether a row is one of the merged models (a merge's output is listed but left out until asked)."""
        model = self.find(model_id)
        if model is not None:
            model.in_models = merged

    def set_base(self, model_id: int | None) -> None:
        self.base_id = model_id if model_id is None or self.find(model_id) else None

    @property
    def base(self) -> LoadedModel | None:
        return self.find(self.base_id) if self.base_id is not None else None

    @property
    def ready_models(self) -> list[LoadedModel]:
        return [m for m in self.models if m.status == "ready"]

    @property
    def loading(self) -> bool:
        return any(m.status == "loading" for m in self.models)

    def close(self) -> None:
        for model in self.models:
            model.close()

    # --- architectures ----------------------------------------------------------------
    def set_arch(self, model_id: int | None, spec: str | None) -> None:
        """Remember the architecture the user chose for a model; a real one also becomes the recipe's.

        Models merged together share one architecture, so the last choice is what
        ``Recipe.arch`` records; ``""`` (the module tree on purpose) is kept per model only.
        """
        model = self.find(model_id) if model_id is not None else None
        if model is not None:
            model.arch = spec
        if spec:
            self.output.arch = spec

    def arch_for(self, model: LoadedModel) -> str | None:
        """The architecture chosen for ``model`` (or restored from its recipe); ``None``: detect it."""
        return model.arch

    # --- method and parameters --------------------------------------------------------
    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)

    def set_method(self, name: str) -> None:
        """Switch methods; each keeps its own per-model values (a new one starts from its defaults)."""
        new = get_method(name).name
        if new != self.method:
            for model in self.models:
                model.params_by_method[self.method] = model.params
                model.params = dict(model.params_by_method.pop(new, {}))
        self.method = new

    def params(self, method: str | None = None) -> dict[str, Any]:
        """The method's raw parameters: defaults overlaid with what the user set."""
        spec = get_method(method or self.method)
        return {**field_defaults(spec.params), **self._params.get(spec.name, {})}

    def set_params(self, values: dict[str, Any], method: str | None = None) -> None:
        spec = get_method(method or self.method)
        known = _known_keys(spec.params)
        self._params[spec.name] = {k: v for k, v in values.items() if k in known}

    def model_params(self, model: LoadedModel) -> dict[str, Any]:
        """A model's per-model parameters for the current method (defaults filled in)."""
        mp = self.spec.model_params
        known = _known_keys(mp)
        return {**field_defaults(mp), **{k: v for k, v in model.params.items() if k in known}}

    def set_model_param(self, model_id: int, key: str, value: Any) -> None:
        model = self.find(model_id)
        if model is not None:
            model.params[key] = value

    # --- recipes ----------------------------------------------------------------------
    def to_recipe(self) -> Recipe:
        """The recipe that merges what the window shows; :class:`RecipeError` when it cannot."""
        ready = [m for m in self.ready_models if m.in_models and not m.is_adapter]
        if not ready:
            raise RecipeError("no models loaded", hint="open or drop checkpoints into the model list first")
        spec = self.spec
        mp_keys = _known_keys(spec.model_params)
        base = self.base
        data = {
            "method": spec.name,
            "models": [
                {"path": str(m.path), "params": {k: v for k, v in m.params.items() if k in mp_keys}}
                for m in ready
            ],
            "base": str(base.path) if base is not None and base.status == "ready" else None,
            "params": self.params(),
            "output": self.output.path or None,
            "dtype": self.output.dtype or None,
            "compute_dtype": self.output.compute_dtype,
            "device": self.output.device,
            "shard_size": self.output.shard_size or None,
            "on_mismatch": self.output.on_mismatch,
            "seed": self.output.seed,
            "arch": self.output.arch or next((m.arch for m in ready if m.arch), None),
            "data": self.output.data,
            "hash_sources": self.output.hash_sources,
            "tokenizer": self.output.tokenizer,
            "slices": self.output.slices,
        }
        if self.output.part_sources:
            data["part_sources"] = dict(self.output.part_sources)
        return Recipe.from_mapping(data, source="window")

    def apply_recipe(self, recipe: Recipe) -> list[LoadedModel]:
        """Replace the state with ``recipe``'s; returns the rows the caller must load."""
        self.close()
        self.models = []
        self.base_id = None
        self.method = recipe.spec.name
        self.recipe_warnings = self._named_warnings(recipe)
        self._warned_method = recipe.spec.name
        params = dict(recipe.params)
        # Per-model parameters given for the whole merge become each model's own (the coefficient
        # table shows them); a model's own value, when it has one, still wins.
        shared = {k: params.pop(k) for k in list(params) if k in _known_keys(recipe.spec.model_params)}
        self._params = {recipe.spec.name: params}
        for entry in recipe.models:
            row = self.find_path(entry.path) or self.add_pending(entry.path)
            row.params = {**shared, **entry.params}
            row.arch = recipe.arch
        if recipe.base:
            base = self.find_path(recipe.base) or self.add_pending(recipe.base, in_models=False)
            self.base_id = base.id
        self.output = OutputSettings(
            path=recipe.output or "",
            dtype=recipe.dtype,
            shard_size=None if recipe.shard_size is None else str(recipe.shard_size),
            device=recipe.device,
            on_mismatch=recipe.on_mismatch,
            compute_dtype=recipe.compute_dtype,
            seed=recipe.seed,
            hash_sources=recipe.hash_sources,
            arch=recipe.arch,
            data=recipe.data,
            tokenizer=recipe.tokenizer.model_dump(mode="json", exclude_defaults=True) if recipe.tokenizer else None,
            slices=[sl.model_dump() for sl in recipe.slices] if recipe.slices else None,
            part_sources={k: str(v) for k, v in recipe.part_sources.items()},
        )
        return list(self.models)

    @staticmethod
    def _named_warnings(recipe: Recipe) -> list[str]:
        """The recipe's parameter warnings, short, one per parameter, naming the models by file."""
        from merge_studio.core.param_scopes import parameter_warnings

        names = {f"models.{i}.params": Path(e.path).name for i, e in enumerate(recipe.models)}
        grouped: dict[tuple[str, str], list[str]] = {}
        for w in parameter_warnings(recipe):
            grouped.setdefault((w.key, w.reason), []).append(names.get(w.where, w.where))
        out = []
        for (key, reason), places in grouped.items():
            on = "" if places == ["params"] else f" (on {', '.join(places)})"
            out.append(f"{key}{on} {reason}; ignored")
        return out

    def warnings(self) -> list[str]:
        """Messages that do not stop a merge: what the opened recipe gives that this method ignores."""
        return list(self.recipe_warnings) if self.method == self._warned_method else []

    def suggest_output(self, folder: str | Path | None = None) -> str:
        """A free name saying what the merge is (method and inputs), so Merge works without typing.

        It goes to ``folder`` (the outputs folder the user chose), else next to the first
        model, but never into an application's data or cache folder (the demo's models,
        the Hugging Face cache): there it goes to ``~/merge-studio-outputs``.
        """
        inputs = [m for m in self.models if m.status == "ready" and m.in_models and not m.is_adapter]
        first = inputs[0] if inputs else None
        where = Path(folder) if folder else (first.path.parent if first is not None else Path.cwd())
        if inside_app_folders(where):
            where = Path.home() / OUTPUTS_FOLDER
        stem = output_stem(self.method, [m.path for m in inputs])
        # Hugging Face folders in, a model folder out (config, tokenizer, card); else one file.
        suffix = "" if first is not None and (first.path / "config.json").is_file() else ".safetensors"
        candidate = where / f"{stem}{suffix}"
        n = 2
        while candidate.exists() or any(m.path == candidate for m in self.models):
            candidate = where / f"{stem}-{n}{suffix}"
            n += 1
        return str(candidate)

    def weight_problem(self, recipe: Recipe | None = None) -> str | None:
        """Per-model weights that sum to zero where the method divides by their sum (checked live)."""
        if recipe is None:
            try:
                recipe = self.to_recipe()
            except MergeStudioError:
                return None
        return weight_sum_problem(recipe.spec.name, recipe.params, [e.params for e in recipe.models])

    def problems(self) -> list[str]:
        """What stops a merge, in words, from cheap checks only (run on every edit).

        The full plan (``plan_merge``) runs at the start of the merge job, off the
        GUI thread, and reports anything these checks miss.
        """
        if any(m.status == "loading" for m in self.models):
            return ["waiting for models to load"]
        try:
            recipe = self.to_recipe()
        except MergeStudioError as exc:
            return [str(exc)]
        spec = recipe.spec
        problems: list[str] = []
        n = len(recipe.models)
        if spec.base != "unused" and recipe.base is not None:
            n = sum(1 for e in recipe.models if Path(e.path) != Path(recipe.base))
        try:
            if not recipe.slices:  # with slices, each slice's sources are counted when the merge is planned
                spec.check_model_count(n)
        except MergeStudioError as exc:
            problems.append(str(exc))
        if spec.base == "required" and recipe.base is None:
            problems.append(f"{spec.label} needs a base model: right-click a model ▸ Use as base")
        weights = self.weight_problem(recipe)
        if weights:
            problems.append(weights)
        if not recipe.output:
            problems.append("choose an output file")
        else:
            out = Path(recipe.output).expanduser().absolute()
            if any(out == m.path for m in self.models):
                problems.append("the output would overwrite an input; choose another file")
        return problems
