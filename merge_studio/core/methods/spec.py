"""How a merge method declares itself once, for recipes, the CLI, the GUI and the docs.

A method is a :class:`MethodSpec`: a stable snake_case name, a pydantic ``Params``
model (types, defaults, bounds, descriptions, widget hints), an optional per-model
``ModelParams`` model, and either a tensor function (streamed tensor by tensor by
the engine) or a whole-model job (for methods that need a module or data).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

from merge_studio.core.lazy_torch import torch

if TYPE_CHECKING:
    from merge_studio.core.checkpoints.base import Checkpoint
    from merge_studio.core.progress import CancelToken, Progress


class MethodParams(BaseModel):
    """Base for a method's global parameters. Unknown names are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelParams(BaseModel):
    """Base for parameters given once per input model (mergekit's tensor parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NoModelParams(ModelParams):
    """For methods that take no per-model parameters."""


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


RegexText = Annotated[str, AfterValidator(_compiles)]
"""A text parameter that must be a valid regular expression (checked when the recipe is read, not mid-merge)."""


def ui(
    widget: Literal["slider", "spin", "check", "combo", "seed", "text", "regex"] | None = None,
    *,
    step: float | None = None,
    decimals: int | None = None,
    per_layer: bool = True,
) -> dict[str, Any]:
    """Widget hints stored in a field's ``json_schema_extra``.

    ``per_layer=False`` marks a parameter that cannot vary by layer (a seed, a mode).
    """
    hints: dict[str, Any] = {"per_layer": per_layer}
    if widget is not None:
        hints["widget"] = widget
    if step is not None:
        hints["step"] = step
    if decimals is not None:
        hints["decimals"] = decimals
    return hints


@dataclass(frozen=True)
class TensorContext:
    """What a tensor function may want to know besides the tensors themselves.

    ``depth`` is the tensor's position through the network in [0, 1] (used to
    interpolate per-layer lists). ``stats`` holds, per input model, what the
    method's ``statistics`` function computed on the whole tensor (present even
    when the engine passes the tensor in chunks). ``chunk`` is the flat element
    range being merged, or ``None`` for the whole tensor. ``metrics`` is a
    scratch dict a method may add numbers to (summed per layer by the engine and
    stored with the result), e.g. ``task_mass_total`` and ``task_mass_kept`` for
    TIES/DARE so users can see how much of each layer's task vectors survived.
    ``wants_metrics`` is false on the chunks whose numbers the engine does not
    sample (one chunk in a few of a large tensor): a method may skip computing them.
    """

    name: str
    shape: tuple[int, ...]
    depth: float = 0.0
    model_names: tuple[str, ...] = ()
    seed: int = 0
    chunk: tuple[int, int] | None = None
    stats: tuple[Any, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    metrics: dict[str, float] = field(default_factory=dict)
    wants_metrics: bool = True

    def add_metric(self, key: str, value: float) -> None:
        """Accumulate a per-tensor number (see ``metrics``)."""
        self.metrics[key] = self.metrics.get(key, 0.0) + float(value)

    def generator(self) -> torch.Generator:
        """A random generator seeded from the recipe seed, the tensor name and the chunk,
        so randomised methods are reproducible and independent of merge order."""
        import zlib

        key = f"{self.seed}:{self.name}:{self.chunk}".encode()
        gen = torch.Generator(device=self.device)
        gen.manual_seed(zlib.crc32(key) ^ (self.seed & 0xFFFFFFFF))
        return gen


# merge(tensors, base, params, model_params, ctx) -> one tensor, or one per output model
TensorMergeFn = Callable[
    [Sequence["torch.Tensor"], "torch.Tensor | None", Any, Sequence[Any], TensorContext],
    "torch.Tensor | list[torch.Tensor]",
]
# statistics(tensor, base, params, model_params, ctx) -> any small per-model value
StatisticsFn = Callable[["torch.Tensor", "torch.Tensor | None", Any, Any, TensorContext], Any]
# fused(stored, base_stored, params, model_params, ctx, out_dtype) -> the output chunks, or None
FusedMergeFn = Callable[
    [Sequence["torch.Tensor"], "torch.Tensor | None", Any, Sequence[Any], TensorContext, "torch.dtype"],
    "list[torch.Tensor] | None",
]


@dataclass(frozen=True)
class ModelJobContext:
    """Inputs of a whole-model method besides the checkpoints and parameters."""

    device: torch.device
    cancel: CancelToken | None = None
    arch: str | None = None
    data: dict[str, Any] | None = None
    seed: int = 0
    model_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelMergeOutput:
    """What a whole-model method returns: the merged state dict(s) and its report."""

    state_dicts: list[dict[str, torch.Tensor]]
    metadata: dict[str, str] = field(default_factory=dict)
    report: dict[str, Any] | None = None


# merge_model(checkpoints, base, params, model_params, ctx) -> generator of Progress
ModelMergeFn = Callable[
    [Sequence["Checkpoint"], "Checkpoint | None", Any, Sequence[Any], ModelJobContext],
    Generator["Progress | Any", None, ModelMergeOutput],
]


def fused_outputs(found: "tuple[torch.Tensor, dict[str, float]] | None", ctx: TensorContext) -> "list[torch.Tensor] | None":
    """A compiled kernel's chunk as a ``fused`` function returns it, its numbers added to ``ctx.metrics``."""
    if found is None:
        return None
    merged, metrics = found
    for key, value in metrics.items():
        ctx.add_metric(key, value)
    return [merged]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of the program needs to know about a merge method.

    ``n_models`` counts the models being merged, not the base. ``base`` says
    whether a base model is required, optional (used when given) or unused (only
    a source to copy non-float and unmatched tensors from). ``elementwise``
    methods may be given a tensor in chunks; ``outputs="per_model"`` methods
    return one tensor per input model (model recombination).
    """

    name: str
    label: str
    family: str
    description: str
    params: type[MethodParams]
    model_params: type[ModelParams] = NoModelParams
    merge: TensorMergeFn | None = None
    merge_model: ModelMergeFn | None = None
    statistics: StatisticsFn | None = None
    statistics_on_stored: bool = False
    """``statistics`` accepts tensors as stored (e.g. bfloat16) and computes in float32 itself,
    a block at a time, so the engine need not convert whole tensors for it (CPU only)."""
    fused: FusedMergeFn | None = None
    """The same merge of one chunk, from the inputs as stored straight to the output dtype
    in one compiled pass (see ``core.kernels``); it must give the same bytes as ``merge``,
    may return ``None`` to let ``merge`` do the chunk, and adds ``diff_sq``/``ref_sq`` to
    ``ctx.metrics`` itself when they are wanted (there is no float32 result to measure)."""
    n_models: tuple[int, int | None] = (2, None)
    base: Literal["required", "optional", "unused"] = "unused"
    elementwise: bool = False
    outputs: Literal["one", "per_model"] = "one"
    needs_arch: bool = False
    needs_data: bool = False
    reference: str = ""
    details: str = ""
    mergekit_name: str | None = None

    def __post_init__(self) -> None:
        if (self.merge is None) == (self.merge_model is None):
            raise ValueError(f"method {self.name!r} needs exactly one of merge / merge_model")

    @property
    def streaming(self) -> bool:
        """Whether the engine can stream it tensor by tensor."""
        return self.merge is not None

    def check_model_count(self, n: int) -> None:
        """Raise :class:`MethodError` when ``n`` models cannot be merged by this method."""
        from merge_studio.errors import MethodError

        lo, hi = self.n_models
        if n < lo or (hi is not None and n > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise MethodError(
                f"{self.label} merges {want} model{'s' if (hi or lo) != 1 else ''}"
                f"{' besides the base' if self.base != 'unused' else ''}, got {n}"
            )
