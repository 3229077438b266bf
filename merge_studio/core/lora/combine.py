"""Merge several LoRA adapters of one base into one adapter.

For a module adapted by several adapters, the combined change is
ΔW = Σ wᵢ·sᵢ·Bᵢ·Aᵢ. **Concatenation** writes it exactly, as one LoRA of rank
Σ rᵢ: B = [w₁s₁B₁ | w₂s₂B₂ | …], A = [A₁; A₂; …]. **SVD** re-factorises it to a
chosen rank k: ΔW has rank at most Σ rᵢ, so it is never formed in full — with
B = Q_B R_B and Aᵀ = Q_A R_A (thin QR), ΔW = Q_B (R_B R_Aᵀ) Q_Aᵀ and the SVD of
the small core gives the best rank-k approximation (Eckart–Young). The kept
energy Σ_{i≤k} σᵢ² / Σ σᵢ² is reported per module and overall; the relative
Frobenius error of a module is √(1 − kept).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from merge_studio.core.lora.adapter import LoraAdapter, LoraModule
from merge_studio.core.lora.writer import AdapterContent, LoraFactors, kept_config, write_adapter
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import IncompatibleCheckpointsError, MergeStudioError

Mode = Literal["concat", "svd"]


@dataclass(frozen=True)
class ModuleReport:
    rank: int
    kept_energy: float  # 1.0 for concatenation


@dataclass(frozen=True)
class AdapterMergeResult:
    path: Path
    mode: Mode
    format: str
    modules: dict[str, ModuleReport] = field(default_factory=dict)
    kept_energy: float = 1.0  # over every module: Σ kept σ² / Σ σ²
    notes: tuple[str, ...] = ()

    @property
    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.modules.values()})


def _load_adapters(paths: Sequence[str | Path]) -> list[tuple[LoraAdapter, object]]:
    from merge_studio.core.checkpoints.registry import open_checkpoint

    opened = []
    try:
        for p in paths:
            ck = open_checkpoint(p)
            adapter = getattr(ck, "adapter", None)
            if adapter is None:
                ck.close()
                raise MergeStudioError(f"{Path(p).name} is not a LoRA adapter",
                                       hint="give PEFT adapter folders or kohya LoRA files")
            opened.append((adapter, ck))
    except BaseException:
        for _, ck in opened:
            ck.close()
        raise
    return opened


def check_same_base(adapters: Sequence[LoraAdapter]) -> None:
    """One format, one base (when the adapters name it), and no DoRA (its magnitudes do not add)."""
    formats = {a.format for a in adapters}
    if len(formats) > 1:
        raise IncompatibleCheckpointsError("cannot merge PEFT and kohya adapters together",
                                           hint="merge adapters of one format")
    bases = {a.base_model for a in adapters if a.base_model}
    if len(bases) > 1 and formats == {"peft"}:
        raise IncompatibleCheckpointsError(
            f"these adapters were trained on different bases ({', '.join(sorted(bases))})",
            hint="only LoRAs of the same base model can be merged into one",
        )
    dora = [a.name for a in adapters if a.use_dora or any(m.magnitude for m in a.modules.values())]
    if dora:
        raise IncompatibleCheckpointsError(f"{', '.join(dora)} are DoRA adapters, whose magnitudes cannot be added",
                                           hint="apply them onto the base one after the other instead")
    fifo = {m.fan_in_fan_out for a in adapters for m in a.modules.values() if m.kind == "linear"}
    if len(fifo) > 1:
        raise IncompatibleCheckpointsError("the adapters disagree on fan_in_fan_out (one was made for Conv1D layers)")


def _factors(adapter: LoraAdapter, module: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
    down = adapter.checkpoint.get_tensor(module.down).to(torch.float64)
    up = adapter.checkpoint.get_tensor(module.up).to(torch.float64)
    return down, up


def _stack(parts: list[tuple[torch.Tensor, torch.Tensor, float]], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """[w·s·B …] and [A; …] for one module, checking the shapes agree."""
    downs, ups = [], []
    shape = None
    for down, up, factor in parts:
        this = (tuple(down.shape[1:]), up.shape[0])
        if shape is not None and this != shape:
            raise IncompatibleCheckpointsError(
                f"{name} has different shapes in the adapters ({shape} and {this}); they were made for different models"
            )
        shape = this
        downs.append(down)
        ups.append(up * factor)
    return torch.cat(downs, 0), torch.cat(ups, 1)


def svd_refactor(down: torch.Tensor, up: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """The best rank-``rank`` factors of up @ down, with the kept and the total energy."""
    tail = tuple(down.shape[1:])
    a = down.reshape(down.shape[0], -1)  # [R, in]
    b = up.reshape(up.shape[0], up.shape[1])  # [out, R]
    qb, rb = torch.linalg.qr(b)
    qa, ra = torch.linalg.qr(a.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    k = max(1, min(rank, int(s.shape[0])))
    root = s[:k].sqrt()
    new_up = (qb @ u[:, :k]) * root
    new_down = root[:, None] * (vh[:k] @ qa.T)
    energy = s.square()
    return (new_down.reshape(k, *tail), new_up.reshape(up.shape[0], k, *up.shape[2:]),
            float(energy[:k].sum()), float(energy.sum()))


def iter_merge_adapters(
    paths: Sequence[str | Path],
    output: str | Path,
    *,
    weights: Sequence[float] | None = None,
    mode: Mode = "concat",
    rank: int | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, AdapterMergeResult]:
    """Merge the adapters at ``paths`` (weights default to 1) into one adapter at ``output``."""
    if mode == "svd" and (rank is None or rank < 1):
        raise MergeStudioError("SVD merging needs a rank of at least 1", hint="pass --rank N")
    if len(paths) < 1:
        raise MergeStudioError("give at least one adapter to merge")
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths):
        raise MergeStudioError(f"{len(weights)} weights for {len(paths)} adapters")
    opened = _load_adapters(paths)
    try:
        adapters = [a for a, _ in opened]
        check_same_base(adapters)
        names = list(dict.fromkeys(m for a in adapters for m in a.modules))
        modules: dict[str, LoraFactors] = {}
        reports: dict[str, ModuleReport] = {}
        kept_total = energy_total = 0.0
        for i, name in enumerate(names):
            check_cancel(cancel)
            parts = []
            kind, dtype = "linear", torch.float32
            for adapter, w in zip(adapters, weights, strict=True):
                module = adapter.modules.get(name)
                if module is not None and w != 0:
                    down, up = _factors(adapter, module)
                    if not parts:
                        kind, dtype = module.kind, adapter.checkpoint.info(module.down).dtype
                    parts.append((down, up, w * module.scale))
            if not parts:
                continue
            down, up = _stack(parts, name)
            if mode == "svd":
                assert rank is not None
                down, up, kept, total = svd_refactor(down, up, rank)
                kept_total += kept
                energy_total += total
                reports[name] = ModuleReport(down.shape[0], kept / total if total > 0 else 1.0)
            else:
                reports[name] = ModuleReport(down.shape[0], 1.0)
            modules[name] = LoraFactors(down.to(dtype), up.to(dtype), float(down.shape[0]), kind)
            yield Progress("merge", i + 1, len(names), current=name, unit="modules")
        whole, notes = _replacements(adapters)
        first = adapters[0]
        content = AdapterContent(first.format, modules, whole, kept_config(first.config) if first.format == "peft" else {},
                                 {"merge_studio.lora_merge": f"{mode} of {', '.join(a.name for a in adapters)}"})
        yield Progress("write", 0, 1, message="writing the adapter")
        path = write_adapter(output, content)
    finally:
        for _, ck in opened:
            ck.close()
    kept_energy = kept_total / energy_total if energy_total > 0 else 1.0
    return AdapterMergeResult(path, mode, first.format, reports, kept_energy, tuple(notes))


def _replacements(adapters: Sequence[LoraAdapter]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors saved whole (modules_to_save): from the first adapter that has each."""
    whole: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    for adapter in adapters:
        for base_name, key in adapter.replacements.items():
            if base_name in whole:
                notes.append(f"{base_name} is saved whole by several adapters; kept the first one's")
                continue
            whole[base_name] = adapter.checkpoint.get_tensor(key)
    return whole, notes


def merge_adapters(paths: Sequence[str | Path], output: str | Path, **kwargs) -> AdapterMergeResult:
    """:func:`iter_merge_adapters` run to the end."""
    return drive(iter_merge_adapters(paths, output, **kwargs))


def relative_error(kept_energy: float) -> float:
    return math.sqrt(max(0.0, 1.0 - kept_energy))
