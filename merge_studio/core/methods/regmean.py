"""RegMean: merge each linear layer in closed form so it maps every model's inputs as that model did.

For a linear layer y = W x seen by model i on inputs X_i (rows are examples), RegMean
(Jin et al. 2023) picks the W that minimises Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², whose solution is

    Wᵀ = (Σ_i G_i)⁻¹ Σ_i G_i W_iᵀ,   G_i = X_iᵀ X_i  (the input Gram matrix).

The paper shrinks each Gram matrix's off-diagonal part towards zero with α
(G̃ = α G + (1 − α) diag(G), α = 0.9 by default) — α = 0 gives back a per-input
weighted average, α = 1 the plain least-squares solution. Gram matrices are
accumulated batch by batch with forward hooks while each model runs on its own data,
divided by the number of rows so a model shown more examples does not count for more.
Biases, embeddings, convolutions, normalisation layers and buffers are averaged.
Where the summed Gram matrix is singular (an input that is always zero, such as the
border pixels of the digits), the merge keeps the plain average along the directions no
model's data reaches: Wᵀ = W̄ᵀ + G⁺ (Σ G̃_i W_iᵀ − G W̄ᵀ).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Mapping, Sequence

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


class RegMeanParams(MethodParams):
    alpha: float = Field(
        0.9, ge=0.0, le=1.0, title="α (off-diagonal scale)",
        description="Scales the off-diagonal entries of each Gram matrix: 1 is the exact least-squares "
        "merge, 0 a per-input weighted average; the paper's 0.9 regularises between them.",
        json_schema_extra=ui("slider", step=0.05, per_layer=False),
    )
    num_examples: int = Field(
        256, ge=1, le=1_000_000, title="Examples",
        description="Training examples per model whose layer inputs make the Gram matrices.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    batch_size: int = Field(
        64, ge=1, le=65536, title="Batch size",
        description="Examples run through a model at once while the Gram matrices are accumulated.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    exclude_regex: RegexText = Field(
        "", title="Exclude (regex)",
        description="Linear layers whose weight names match are averaged instead, e.g. 'head|classifier'.",
        json_schema_extra=ui("regex", per_layer=False),
    )


class RegMeanModelParams(ModelParams):
    data: str = Field(
        "", title="Data",
        description=data_source_field_description("its task's inputs; labels are not used"),
        json_schema_extra=ui("text", per_layer=False),
    )


# --- Gram matrices --------------------------------------------------------------------------------
def linear_weight_names(module: nn.Module) -> dict[str, nn.Linear]:
    """``{"<module>.weight": layer}`` for every ``nn.Linear`` in ``module``."""
    return {f"{name}.weight" if name else "weight": sub for name, sub in module.named_modules() if isinstance(sub, nn.Linear)}


def iter_gram_matrices(
    module: nn.Module,
    inputs: torch.Tensor,
    *,
    batch_size: int = 64,
    name: str = "model",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, dict[str, torch.Tensor]]:
    """Mean input Gram matrix XᵀX / rows of every linear layer, keyed by its weight's name.

    Inputs with more than two dimensions (tokens) contribute one row per position.
    """
    layers = linear_weight_names(module)
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def hook_for(key: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, args: tuple, _out: object) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).float()
            gram = x.T @ x
            if key in sums:
                sums[key].add_(gram)
            else:
                sums[key] = gram
            rows[key] = rows.get(key, 0) + x.shape[0]

        return hook

    handles = [layer.register_forward_hook(hook_for(key)) for key, layer in layers.items()]
    module.eval()
    n = len(inputs)
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                check_cancel(cancel)
                module(inputs[start : start + batch_size])
                yield Progress("gram", min(n, start + batch_size), n, current=name, unit="examples")
    finally:
        for h in handles:
            h.remove()
    return {k: v.div_(max(rows[k], 1)) for k, v in sums.items()}


# --- the closed form ------------------------------------------------------------------------------
def scale_off_diagonal(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    """G̃ = α G + (1 − α) diag(G)."""
    if alpha == 1.0:
        return gram
    return alpha * gram + (1.0 - alpha) * torch.diag_embed(torch.diagonal(gram))


def _solve_psd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A⁻¹ B for a symmetric positive semi-definite A: Cholesky when it is definite, else the
    pseudo-inverse from an eigendecomposition (min-norm solution)."""
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        x = torch.cholesky_solve(b, chol)
        if bool(torch.isfinite(x).all()):
            return x
    evals, evecs = torch.linalg.eigh(a)
    cutoff = evals.abs().max().clamp_min(1e-30) * a.shape[0] * torch.finfo(a.dtype).eps
    inv = torch.where(evals > cutoff, 1.0 / evals.clamp_min(cutoff), torch.zeros_like(evals))
    return evecs @ (inv.unsqueeze(1) * (evecs.T @ b))


def regmean_weight(weights: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float = 0.9) -> torch.Tensor:
    """The RegMean merge of one linear weight (out, in) from each model's weight and Gram matrix."""
    if len(weights) != len(grams) or not weights:
        raise MethodError("RegMean needs one Gram matrix per model")
    ws = [w.double() for w in weights]
    gs = [scale_off_diagonal(g.double().to(ws[0].device), alpha) for g in grams]
    total = sum(gs)
    rhs = sum(g @ w.T for g, w in zip(gs, ws, strict=True))
    mean_t = (sum(ws) / len(ws)).T
    merged_t = mean_t + _solve_psd(total, rhs - total @ mean_t)
    return merged_t.T.to(weights[0].dtype)


def regmean_merge_state_dicts(
    states: Sequence[Mapping[str, torch.Tensor]],
    grams: Sequence[Mapping[str, torch.Tensor]],
    *,
    alpha: float = 0.9,
    exclude_regex: str = "",
    on_layer: Callable[[str], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Linear weights with a Gram matrix in every model by :func:`regmean_weight`; every other
    floating tensor averaged; integer tensors from the first model."""
    excluded = re.compile(exclude_regex) if exclude_regex else None
    merged: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not first.is_floating_point():
            merged[key] = first.clone()
            continue
        if all(key in g for g in grams) and first.ndim == 2 and not (excluded and excluded.search(key)):
            merged[key] = regmean_weight([s[key] for s in states], [g[key] for g in grams], alpha).to(first.dtype)
            if on_layer is not None:
                on_layer(key)
        else:
            merged[key] = (sum(s[key].float() for s in states) / len(states)).to(first.dtype)
    return merged


# --- the method -----------------------------------------------------------------------------------
def regmean_merge(
    checkpoints: Sequence,
    base: object | None,
    params: RegMeanParams,
    model_params: Sequence[RegMeanModelParams],
    ctx: ModelJobContext,
) -> Generator[Progress, None, ModelMergeOutput]:
    """The whole-model job the engine runs: each model's Gram matrices on its data, then the solve."""
    arch = resolve_arch(checkpoints, ctx, "RegMean")
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    states: list[dict[str, torch.Tensor]] = []
    grams: list[dict[str, torch.Tensor]] = []
    used: list[int] = []
    for i, ck in enumerate(checkpoints):
        check_cancel(ctx.cancel)
        state = ck.state_dict()
        module = module_for(arch, state, ctx.device)
        data = data_for(ctx, model_params[i].data if model_params else "", module)
        inputs = data.train.head(params.num_examples).inputs.to(ctx.device)
        used.append(len(inputs))
        job = iter_gram_matrices(module, inputs, batch_size=params.batch_size, name=names[i], cancel=ctx.cancel)
        try:
            while True:
                p = next(job)
                yield Progress("gram", p.done, p.total, current=names[i], unit="examples",
                               message=f"model {i + 1} of {len(checkpoints)}")
        except StopIteration as stop:
            gram = stop.value
        finally:
            job.close()
        states.append(state)
        grams.append({k: v.cpu() for k, v in gram.items()})
        del module
    solved: list[str] = []
    n_layers = len(grams[0])
    yield Progress("solve", 0, n_layers, current="least squares")

    def count(key: str) -> None:
        solved.append(key)

    merged = regmean_merge_state_dicts(states, grams, alpha=params.alpha, exclude_regex=params.exclude_regex,
                                       on_layer=count)
    yield Progress("solve", n_layers, n_layers, current="least squares")
    report = {"examples_per_model": dict(zip(names, used, strict=True)), "alpha": params.alpha,
              "regmean_layers": solved}
    return ModelMergeOutput(state_dicts=[merged], metadata={"merge_studio.arch": arch}, report=report)


register_method(
    MethodSpec(
        name="regmean",
        label="RegMean",
        family="Data-aware",
        description="Closed-form least-squares merge of every linear layer from each model's input Gram "
        "matrices on its own data.",
        params=RegMeanParams,
        model_params=RegMeanModelParams,
        merge_model=regmean_merge,
        needs_arch=True,
        needs_data=True,
        reference="Jin et al. 2023, Dataless Knowledge Fusion by Merging Weights of Language Models "
        "(arXiv:2212.09849)",
        details="Per nn.Linear: Wᵀ = (Σ G̃ᵢ)⁻¹ Σ G̃ᵢ Wᵢᵀ with Gᵢ = XᵢᵀXᵢ / rows the mean input Gram matrix of "
        "model i on its data and G̃ = αG + (1 − α)·diag(G). Biases and every other tensor are averaged. "
        "Only inputs (no labels) are used; give each model its own data as a per-model 'data' source.",
    )
)
