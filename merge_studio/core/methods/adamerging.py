"""AdaMerging: learn the task-arithmetic coefficients from unlabeled data.

The merge is θ = θ_base + Σ_k λ_k τ_k (task-wise: one λ per model) or
θ_l = θ_base,l + Σ_k λ_k,l τ_k,l (layer-wise: one λ per model and tensor), with
τ_k = θ_k − θ_base. Yang et al. 2024 learn the λ by minimising the Shannon entropy
of the merged model's predictions on unlabeled test-time batches of every task, as a
stand-in for the loss that needs labels. Here the merged model is a function of λ
(``torch.func.functional_call`` on one module built from the base), so Adam gets
exact gradients; λ starts at 0.3 (the paper's choice) and is clamped to [0, 1]
after every step.

The learned coefficients are the method's ``coefficients`` parameter (``{tensor: [λ
per model]}``, ``"*"`` for task-wise), reported with the result and written back into a
saved recipe, so the same merge re-runs without data and without learning.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import Literal

from pydantic import Field, field_validator

from merge_studio.core.lazy_torch import nn, torch
from merge_studio.core.methods.data_aware import data_for, data_source_field_description, module_for, resolve_arch
from merge_studio.core.methods.registry import register_method
from merge_studio.core.methods.spec import (
    MethodParams,
    MethodSpec,
    ModelJobContext,
    ModelMergeOutput,
    ModelParams,
    ui,
)
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import MethodError

Mode = Literal["layer_wise", "task_wise"]
ALL = "*"


class AdaMergingParams(MethodParams):
    mode: Mode = Field(
        "layer_wise", title="Coefficients",
        description="One coefficient per model and tensor (layer_wise), or one per model (task_wise).",
        json_schema_extra=ui("combo", per_layer=False),
    )
    init: float = Field(
        0.3, ge=0.0, le=1.0, title="Initial λ",
        description="Where every coefficient starts (the paper's 0.3).",
        json_schema_extra=ui("slider", step=0.05, per_layer=False),
    )
    steps: int = Field(
        100, ge=0, le=100_000, title="Steps",
        description="Adam steps on the prediction entropy.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    lr: float = Field(
        1e-3, gt=0.0, le=1.0, title="Learning rate",
        description="Adam's step size for the coefficients (the paper's 1e-3; larger steps can find "
        "confidently wrong merges, since low entropy is only a stand-in for accuracy).",
        json_schema_extra=ui("spin", step=1e-3, decimals=5, per_layer=False),
    )
    batch_size: int = Field(
        32, ge=1, le=65536, title="Batch size",
        description="Unlabeled examples per model's data in every step.",
        json_schema_extra=ui("spin", per_layer=False),
    )
    num_examples: int = Field(
        512, ge=1, le=1_000_000, title="Examples",
        description="Unlabeled examples kept per model's data (batches are drawn from them).",
        json_schema_extra=ui("spin", per_layer=False),
    )
    coefficients: dict[str, list[float]] | None = Field(
        None, title="Learned coefficients",
        description="{tensor name: [λ per model]} ('*' for every tensor not named). When given, "
        "nothing is learned and no data is read: the merge is re-run with these.",
        json_schema_extra={"per_layer": False},
    )

    @field_validator("coefficients")
    @classmethod
    def _finite(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if value is not None:
            for name, lams in value.items():
                if not lams or any(v != v or abs(v) == float("inf") for v in lams):
                    raise ValueError(f"coefficients for {name!r} must be a non-empty list of finite numbers")
        return value


class AdaMergingModelParams(ModelParams):
    data: str = Field(
        "", title="Data",
        description=data_source_field_description("unlabeled examples of its task"),
        json_schema_extra=ui("text", per_layer=False),
    )


# --- the functional merge --------------------------------------------------------------------------
def merge_keys(base: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    """Floating tensors of the base that every model has with the same shape: the ones λ acts on."""
    return [k for k, v in base.items()
            if v.is_floating_point() and all(k in s and s[k].shape == v.shape for s in states)]


def stack_task_vectors(base: Mapping[str, torch.Tensor], states: Sequence[Mapping[str, torch.Tensor]],
                       keys: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``{key: (K, *shape)}``: every model's task vector of each tensor, stacked, in float32."""
    return {k: torch.stack([s[k].float() - base[k].float() for s in states]).to(device) for k in keys}


def apply_coefficients(base: Mapping[str, torch.Tensor], task_vectors: Mapping[str, torch.Tensor],
                       lambdas: torch.Tensor, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """θ = base + Σ_k λ_k τ_k per tensor; ``lambdas`` is (1, K) task-wise or (len(keys), K) layer-wise."""
    out = {}
    for j, k in enumerate(keys):
        lam = lambdas[j if lambdas.shape[0] > 1 else 0]
        tv = task_vectors[k]
        out[k] = base[k].float().to(tv.device) + torch.tensordot(lam, tv, dims=1)
    return out


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def coefficients_table(lambdas: torch.Tensor, keys: Sequence[str]) -> dict[str, list[float]]:
    """The learned λ as the ``coefficients`` parameter (rounded to 6 digits)."""
    rows = lambdas.detach().cpu().tolist()
    if len(rows) == 1:
        return {ALL: [round(v, 6) for v in rows[0]]}
    return {k: [round(v, 6) for v in row] for k, row in zip(keys, rows, strict=True)}


def lambdas_from_table(table: Mapping[str, Sequence[float]], keys: Sequence[str], n_models: int) -> torch.Tensor:
    """The (len(keys), K) matrix a ``coefficients`` table gives; a tensor it does not cover is an error."""
    rows = []
    for k in keys:
        row = table.get(k, table.get(ALL))
        if row is None:
            raise MethodError(f"the AdaMerging coefficients name no value for {k}",
                              hint="give a list for every tensor, or '*' for the rest")
        if len(row) != n_models:
            raise MethodError(f"the AdaMerging coefficients for {k} have {len(row)} values for {n_models} models",
                              hint="give one λ per model (the base not counted)")
        rows.append([float(v) for v in row])
    return torch.tensor(rows, dtype=torch.float32)


def iter_learn_coefficients(
    module: nn.Module,
    base: Mapping[str, torch.Tensor],
    task_vectors: Mapping[str, torch.Tensor],
    keys: Sequence[str],
    unlabeled: Sequence[torch.Tensor],
    *,
    mode: Mode = "layer_wise",
    init: float = 0.3,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 32,
    seed: int = 0,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, tuple[torch.Tensor, list[float]]]:
    """Adam on λ to minimise Σ_data mean prediction entropy; returns (λ, entropy per step).

    ``module`` is any module of the architecture (its own weights are not used: every
    floating tensor in ``keys`` is replaced by the merged one, the rest are its own).
    """
    from torch.func import functional_call

    from merge_studio.core.evaluate.loop import model_output

    n_models = next(iter(task_vectors.values())).shape[0] if task_vectors else 0
    rows = len(keys) if mode == "layer_wise" else 1
    device = next(iter(task_vectors.values())).device if task_vectors else torch.device("cpu")
    lambdas = torch.full((rows, n_models), float(init), device=device, requires_grad=True)
    opt = torch.optim.Adam([lambdas], lr=lr)
    fixed = {k: v.to(device) for k, v in {**dict(module.named_parameters()), **dict(module.named_buffers())}.items()
             if k not in set(keys)}
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    module.eval()
    for step in range(steps):
        check_cancel(cancel)
        merged = apply_coefficients(base, task_vectors, lambdas, keys)
        loss = torch.zeros((), device=device)
        for x in unlabeled:
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen).to(x.device)
            out = functional_call(module, {**fixed, **merged}, (x[idx],))
            loss = loss + prediction_entropy(model_output(out))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            lambdas.clamp_(0.0, 1.0)
        history.append(float(loss.detach()) / max(len(unlabeled), 1))
        yield Progress("adamerging", step + 1, steps, current=f"entropy {history[-1]:.4f}", unit="steps")
    return lambdas.detach(), history


# --- the method -----------------------------------------------------------------------------------
def adamerging_merge(
    checkpoints: Sequence,
    base: object | None,
    params: AdaMergingParams,
    model_params: Sequence[AdaMergingModelParams],
    ctx: ModelJobContext,
) -> Generator[Progress, None, ModelMergeOutput]:
    """The whole-model job: learn λ on each model's unlabeled data (unless given), then merge."""
    if base is None:
        raise MethodError("AdaMerging needs a base model", hint="mark one model as the base")
    names = ctx.model_names or tuple(ck.name for ck in checkpoints)
    base_state = base.state_dict()
    states = [ck.state_dict() for ck in checkpoints]
    keys = merge_keys(base_state, states)
    report: dict[str, object] = {"mode": params.mode}
    metadata: dict[str, str] = {}
    if params.coefficients is not None:
        lambdas = lambdas_from_table(params.coefficients, keys, len(states))
        tvs = stack_task_vectors(base_state, states, keys)
        table = dict(params.coefficients)
        report["learned"] = False
    else:
        arch = resolve_arch([base, *checkpoints], ctx, "AdaMerging")
        metadata["merge_studio.arch"] = arch
        module = module_for(arch, base_state, ctx.device)
        order = {k: i for i, k in enumerate(module.state_dict())}  # layers in network order, not the file's
        keys.sort(key=lambda k: order.get(k, len(order)))
        unlabeled = []
        sources = [mp.data for mp in model_params] if model_params else [""] * len(states)
        for source in dict.fromkeys(sources):  # models sharing one source share its batches
            data = data_for(ctx, source, module)
            unlabeled.append(data.train.head(params.num_examples).inputs.to(ctx.device))
        tvs = stack_task_vectors(base_state, states, keys, ctx.device)
        job = iter_learn_coefficients(
            module, base_state, tvs, keys, unlabeled, mode=params.mode, init=params.init, steps=params.steps,
            lr=params.lr, batch_size=params.batch_size, seed=ctx.seed, cancel=ctx.cancel,
        )
        try:
            while True:
                yield next(job)
        except StopIteration as stop:
            lambdas, history = stop.value
        finally:
            job.close()
        table = coefficients_table(lambdas, keys)
        report.update(learned=True, entropy_first=history[0] if history else None,
                      entropy_last=history[-1] if history else None, steps=len(history))
        report["learned_params"] = {"coefficients": table}
        del module
    with torch.no_grad():
        merged_floats = apply_coefficients(base_state, {k: v.cpu() for k, v in tvs.items()}, lambdas.cpu(), keys)
    merged = {k: (merged_floats[k].to(v.dtype) if k in merged_floats else v.clone()) for k, v in base_state.items()}
    report["coefficients"] = table
    report["models"] = list(names)
    return ModelMergeOutput(state_dicts=[merged], metadata=metadata, report=report)


register_method(
    MethodSpec(
        name="adamerging",
        label="AdaMerging",
        family="Data-aware",
        description="Task arithmetic whose per-model (or per-model, per-layer) coefficients are learned by "
        "minimising prediction entropy on unlabeled data.",
        params=AdaMergingParams,
        model_params=AdaMergingModelParams,
        merge_model=adamerging_merge,
        n_models=(1, None),
        base="required",
        needs_arch=True,
        needs_data=True,
        reference="Yang et al. 2024, AdaMerging: Adaptive Model Merging for Multi-Task Learning (arXiv:2310.02575)",
        details="θ = θ_base + Σₖ λₖ τₖ (task-wise) or θₗ = θ_base,ₗ + Σₖ λₖ,ₗ τₖ,ₗ (layer-wise, one λ per tensor), "
        "τₖ = θₖ − θ_base. λ starts at 0.3 and follows Adam on the mean Shannon entropy of the merged model's "
        "predictions on unlabeled batches of every model's data (torch.func.functional_call), clamped to [0, 1]. "
        "The learned λ are reported, drawn per layer, and saved as the 'coefficients' parameter so the merge "
        "re-runs without data.",
    )
)
