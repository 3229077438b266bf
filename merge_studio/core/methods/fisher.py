"""Fisher merging: a per-parameter weighted average, weighted by how much each model cares.

Each model's diagonal Fisher information F_i (the mean squared gradient of the
log-likelihood, per parameter) is estimated on a sample of data; then
θ = Σ w_i F_i θ_i / Σ w_i F_i for every parameter (Matena & Raffel 2022). A
parameter one model relies on (large F) keeps that model's value; where no model
cares, the result tends to the plain average.

Gradients are per example, computed with ``torch.func.vmap(grad(...))`` (a plain
loop over examples when a model cannot be vmapped). The label the log-likelihood
is taken at is chosen by ``label_source``:

* ``sampled`` (default): drawn from the model's own predictive distribution, so
  the estimate is of the true Fisher (what the paper uses);
* ``argmax``: the model's most likely label (cheaper to reason about, biased);
* ``empirical``: the dataset's labels (the "empirical Fisher").

For regression the likelihood is a unit Gaussian; ``sampled`` adds N(0, 1) noise to
the prediction and ``argmax`` falls back to the dataset's targets (the prediction
itself would give a zero gradient).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Literal

from pydantic import Field

from merge_studio.core.lazy_torch import nn, torch
from merge_studio.core.methods.data_aware import data_for, data_source_field_description, module_for, resolve_arch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import (
    MethodParams,
    MethodSpec,
    ModelJobContext,
    ModelMergeOutput,
    ModelParams,
    RegexText,
    ui,
)
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import MethodError

LabelSource = Literal["sampled", "argmax", "empirical"]


class FisherParams(MethodParams):
    num_examples: int = Field(
        256, ge=1, le=1_000_000, title="Examples",
        description="Training examples per model used to estimate its Fisher information.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    batch_size: int = Field(
        32, ge=1, le=4096, title="Batch size",
        description="Examples whose per-example gradients are computed together (memory grows with it).",
        json_schema_extra=ui("spin", per_layer=False),
    )
    exclude_regex: RegexText = Field(
        "", title="Exclude (regex)",
        description="Parameters whose names match get a plain weighted average instead of Fisher weights, "
        "e.g. 'head|classifier'.",
        json_schema_extra=ui("regex", per_layer=False),
    )
    normalize_fisher: bool = Field(
        True, title="Normalise Fisher",
        description="Scale each model's Fisher to sum to 1 over its parameters, so no model wins "
        "just by having larger gradients overall.",
        json_schema_extra=ui("check", per_layer=False),
    )
    min_fisher: float = Field(
        1e-6, ge=0.0, le=1.0, title="Minimal Fisher",
        description="Floor for every Fisher value, so parameters no model cares about are averaged.",
        json_schema_extra=ui("spin", step=1e-6, decimals=8, per_layer=False),
    )
    label_source: LabelSource = Field(
        "sampled", title="Labels",
        description="Log-likelihood taken at labels sampled from the model (true Fisher), "
        "at its argmax, or at the data's labels (empirical Fisher).",
        json_schema_extra=ui("combo", per_layer=False),
    )



class FisherModelParams(ModelParams):
    weight: float = Field(
        1.0, ge=0.0, le=1000.0, title="Weight",
        description="Multiplies this model's Fisher: larger means its parameters count for more.",
        json_schema_extra=ui("slider", step=0.05, per_layer=False),
    )
    data: str = Field(
        "", title="Data",
        description=data_source_field_description("its task's examples"),
        json_schema_extra=ui("text", per_layer=False),
    )


# --- Fisher estimation ------------------------------------------------------------------------
def _output(out: object) -> torch.Tensor:
    from merge_studio.core.evaluate.loop import model_output

    return model_output(out)


def _choose_labels(
    logits: torch.Tensor, targets: torch.Tensor, task: str, source: LabelSource, gen: torch.Generator
) -> torch.Tensor:
    """The labels each example's log-likelihood is evaluated at (see the module docstring)."""
    if task == "regression":
        if source == "sampled":
            noise = torch.randn(logits.shape, generator=gen, device="cpu").to(logits.device)
            return logits + noise
        return targets.reshape(logits.shape) if targets.numel() == logits.numel() else targets
    if source == "empirical":
        return targets
    if source == "argmax":
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float(), dim=-1).reshape(-1, logits.shape[-1]).cpu()
    return torch.multinomial(probs, 1, generator=gen).reshape(logits.shape[:-1]).to(logits.device)


def _neg_log_likelihood(pred: torch.Tensor, label: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        return 0.5 * (pred - label).pow(2).sum()
    return nn.functional.cross_entropy(pred.reshape(-1, pred.shape[-1]), label.reshape(-1), reduction="sum")


def _per_example_sq_grads_vmap(
    module: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
    x: torch.Tensor, labels: torch.Tensor, task: str,
) -> dict[str, torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    def nll(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        pred = _output(functional_call(module, (p, buffers), (xi.unsqueeze(0),)))
        return _neg_log_likelihood(pred, yi.unsqueeze(0), task)

    grads = vmap(grad(nll), in_dims=(None, 0, 0))(params, x, labels)
    return {k: g.pow(2).sum(0) for k, g in grads.items()}


def _per_example_sq_grads_loop(
    module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, labels: torch.Tensor, task: str,
) -> dict[str, torch.Tensor]:
    names = list(params)
    tensors = [dict(module.named_parameters())[n] for n in names]
    sums = {n: torch.zeros_like(t) for n, t in zip(names, tensors, strict=True)}
    for i in range(len(x)):
        loss = _neg_log_likelihood(_output(module(x[i : i + 1])), labels[i : i + 1], task)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                sums[n].add_(g.pow(2))
    return sums


def iter_diagonal_fisher(
    module: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    task: str = "classification",
    batch_size: int = 32,
    label_source: LabelSource = "sampled",
    seed: int = 0,
    name: str = "model",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """Mean squared per-example gradient of the log-likelihood for every parameter.

    ``inputs``/``targets`` are already on the module's device. The module runs in
    eval mode (BatchNorm uses its running statistics, dropout is off).
    """
    module.eval()
    params = {k: v.detach() for k, v in module.named_parameters()}
    buffers = {k: v.detach() for k, v in module.named_buffers()}
    sums = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
    gen = torch.Generator().manual_seed(seed)
    n = len(inputs)
    use_vmap = True
    for start in range(0, n, batch_size):
        check_cancel(cancel)
        x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
        with torch.no_grad():
            labels = _choose_labels(_output(module(x)), y, task, label_source, gen)
        batch_sums: dict[str, torch.Tensor] | None = None
        if use_vmap:
            try:
                batch_sums = _per_example_sq_grads_vmap(module, params, buffers, x, labels, task)
            except (RuntimeError, NotImplementedError, TypeError):
                use_vmap = False  # some modules (in-place ops, data-dependent control flow) cannot be vmapped
        if batch_sums is None:
            batch_sums = _per_example_sq_grads_loop(module, params, x, labels, task)
        for k, v in batch_sums.items():
            sums[k].add_(v.float())
        yield Progress("fisher", min(n, start + batch_size), n, current=name, unit="examples")
    return {k: v.div_(max(n, 1)) for k, v in sums.items()}


# --- combining ----------------------------------------------------------------------------------
def fisher_merge_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    fishers: Sequence[Mapping[str, torch.Tensor]],
    *,
    weights: Sequence[float] | None = None,
    exclude_regex: str = "",
    normalize: bool = True,
    min_fisher: float = 1e-6,
) -> dict[str, torch.Tensor]:
    """θ = Σ w_i F_i θ_i / Σ w_i F_i for tensors with a Fisher; a weighted average for the rest.

    Tensors without a Fisher entry (buffers such as BN statistics) and names matching
    ``exclude_regex`` get Σ w_i θ_i / Σ w_i; integer tensors come from the first model.
    """
    if len(states) != len(fishers) or not states:
        raise MethodError("Fisher merging needs one Fisher per model")
    w = [1.0] * len(states) if weights is None else [float(v) for v in weights]
    if sum(w) <= 0:
        raise MethodError("the model weights of a Fisher merge sum to zero", hint="give at least one model a positive weight")
    excluded = re.compile(exclude_regex) if exclude_regex else None
    scales = [1.0] * len(states)
    if normalize:
        for i, f in enumerate(fishers):
            total = sum(float(v.sum()) for k, v in f.items() if not (excluded and excluded.search(k)))
            scales[i] = 1.0 / total if total > 0 else 1.0
    merged: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            merged[key] = first.clone()
            continue
        values = [s[key].float() for s in states]
        if key in fishers[0] and not (excluded and excluded.search(key)):
            num = torch.zeros_like(values[0])
            den = torch.zeros_like(values[0])
            for value, f, wi, scale in zip(values, fishers, w, scales, strict=True):
                fi = (f[key].float().to(value.device) * scale).clamp_min(min_fisher) * wi
                num.add_(fi * value)
                den.add_(fi)
            out = torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), sum(values) / len(values))
        else:
            out = sum(v * wi for v, wi in zip(values, w, strict=True)) / sum(w)
        merged[key] = out.to(first.dtype)
    return merged


# --- the method ---------------------------------------------------------------------------------
def fisher_merge(
    checkpoints: Sequence,
    base: object | None,
    params: FisherParams,
    model_params: Sequence[FisherModelParams],
    ctx: ModelJobContext,
    *,
    module_factory: Callable[[str, Mapping[str, torch.Tensor], torch.device], nn.Module] = module_for,
) -> Generator[Progress, None, ModelMergeOutput]:
    """The whole-model job the engine runs: estimate each model's Fisher, then combine."""
    arch = resolve_arch(checkpoints, ctx, "Fisher merging")
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    states: list[dict[str, torch.Tensor]] = []
    fishers: list[dict[str, torch.Tensor]] = []
    used = 0
    for i, ck in enumerate(checkpoints):
        check_cancel(ctx.cancel)
        state = ck.state_dict()
        module = module_factory(arch, state, ctx.device)
        data = data_for(ctx, model_params[i].data if model_params else "", module)
        train = data.train.head(params.num_examples).to(ctx.device)
        used = len(train)
        job = iter_diagonal_fisher(
            module, train.inputs, train.targets, task=data.task, batch_size=params.batch_size,
            label_source=params.label_source, seed=ctx.seed + i, name=names[i], cancel=ctx.cancel,
        )
        try:
            while True:
                p = next(job)
                yield Progress("fisher", i * used + p.done, len(checkpoints) * used, current=names[i], unit="examples")
        except StopIteration as stop:
            fisher = stop.value
        finally:
            job.close()
        states.append(state)
        fishers.append({k: v.cpu() for k, v in fisher.items()})
        del module
    yield Progress("combine", 0, 1, current="weighted average")
    merged = fisher_merge_state_dicts(
        states, fishers, weights=[mp.weight for mp in model_params], exclude_regex=params.exclude_regex,
        normalize=params.normalize_fisher, min_fisher=params.min_fisher,
    )
    yield Progress("combine", 1, 1, current="weighted average")
    report = {
        "examples_per_model": used,
        "label_source": params.label_source,
        "fisher_sum": {n: float(sum(float(v.sum()) for v in f.values())) for n, f in zip(names, fishers, strict=True)},
    }
    return ModelMergeOutput(state_dicts=[merged], metadata={"merge_studio.arch": arch}, report=report)


register_method(
    MethodSpec(
        name="fisher",
        label="Fisher merging",
        family="Data-aware",
        description="Per-parameter average weighted by each model's diagonal Fisher information, estimated on data.",
        params=FisherParams,
        model_params=FisherModelParams,
        merge_model=fisher_merge,
        needs_arch=True,
        needs_data=True,
        reference="Matena & Raffel 2022, Merging Models with Fisher-Weighted Averaging (arXiv:2111.09832)",
        details="θ = Σ wᵢFᵢθᵢ / Σ wᵢFᵢ per parameter, Fᵢ the mean squared per-example gradient of the "
        "log-likelihood (labels sampled from the model by default). Buffers such as BatchNorm statistics "
        "and excluded parameters get the plain weighted average.",
    )
)
