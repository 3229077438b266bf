"""Extract a LoRA from a fine-tuned model and its base: a truncated SVD of each layer's change.

For every adapted weight, ΔW = W_tuned − W_base is factorised as U·S·Vᵀ and the
first ``rank`` singular values are kept, split evenly between the factors
(B = U√S, A = √S·Vᵀ, as mergekit's extraction does by default), written with
scale 1. By Eckart–Young this is the best rank-``rank`` approximation, and its
relative error √(Σ_{i>r} σᵢ²) / ‖ΔW‖ is reported per layer and overall. Tensors
are read one pair at a time; only the (small) factors are kept until written.

Linear weights (and, for Stable Diffusion, convolutions, as LoCon) are
decomposed; tensors that changed but are not decomposed — biases, norms,
embeddings unless asked for — are listed so nothing is lost silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.lora.apply import CONV1D_MODEL_TYPES
from merge_studio.core.lora.kohya_names import Target, kohya_lookup
from merge_studio.core.lora.writer import AdapterContent, LoraFactors, write_adapter
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import IncompatibleCheckpointsError, MergeStudioError

EMBEDDING_NAMES = re.compile(r"(^|\.)(embed_tokens|wte|wpe|word_embeddings|position_embeddings|embed_positions|"
                             r"token_embedding|position_embedding|embeddings\.\w+)\.weight$")
MAX_LISTED = 8


@dataclass(frozen=True)
class LayerError:
    module: str
    rank: int
    relative_error: float  # ‖ΔW − BA‖ / ‖ΔW‖
    delta_norm: float  # ‖ΔW‖


@dataclass(frozen=True)
class ExtractResult:
    path: Path
    format: str
    rank: int
    layers: tuple[LayerError, ...]
    relative_error: float  # over every decomposed layer: √(Σ residual²) / √(Σ ‖ΔW‖²)
    not_captured: tuple[str, ...]  # changed tensors that are not part of the adapter
    unchanged: int

    def table(self) -> str:
        """Per-layer errors as text (the CLI prints it)."""
        width = max((len(l.module) for l in self.layers), default=6)
        lines = [f"{'module':<{width}}  rank  rel. error"]
        lines += [f"{l.module:<{width}}  {l.rank:>4}  {l.relative_error:10.4f}" for l in self.layers]
        lines.append(f"{'overall':<{width}}  {self.rank:>4}  {self.relative_error:10.4f}")
        return "\n".join(lines)


def _uses_conv1d(base: Checkpoint) -> bool:
    import json

    config = base.path / "config.json" if base.path.is_dir() else None
    try:
        return bool(config and config.is_file()
                    and json.loads(config.read_text(encoding="utf-8")).get("model_type") in CONV1D_MODEL_TYPES)
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def _targets(base: Checkpoint, fmt: str, embeddings: bool) -> list[tuple[str, Target, str]]:
    """``(module name in the adapter, base tensor and rows, kind)`` for every weight to decompose."""
    shapes = {n: i.shape for n, i in base.infos.items()}
    out: list[tuple[str, Target, str]] = []
    if fmt == "kohya":
        seen: set[tuple[str, tuple[int, int] | None]] = set()
        for kohya_name, target in kohya_lookup(shapes).items():
            if (target.name, target.rows) not in seen and len(shapes[target.name]) in (2, 4):
                seen.add((target.name, target.rows))
                out.append((kohya_name, target, "linear"))
        return out
    for name, shape in shapes.items():
        if not name.endswith(".weight") or len(shape) != 2 or not base.info(name).dtype.is_floating_point:
            continue
        is_embedding = bool(EMBEDDING_NAMES.search(name))
        if is_embedding and not embeddings:
            continue
        out.append((name.removesuffix(".weight"), Target(name), "embedding" if is_embedding else "linear"))
    return out


def decompose(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(down [k, in…], up [out, k(,1,1)], relative error, ‖Δ‖) of the best rank-``rank`` factors."""
    matrix = delta.reshape(delta.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = max(1, min(rank, int(s.shape[0])))
    energy = s.square()
    total = float(energy.sum())
    residual = float(energy[k:].sum())
    root = s[:k].sqrt()
    up = u[:, :k] * root
    down = root[:, None] * vh[:k]
    if delta.dim() > 2:
        down = down.reshape(k, *delta.shape[1:])
        up = up.reshape(delta.shape[0], k, *([1] * (delta.dim() - 2)))
    return down, up, math.sqrt(residual / total) if total > 0 else 0.0, math.sqrt(total)


def _format_for(base: Checkpoint, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    from merge_studio.core.naming.base import naming_for

    naming = naming_for({n: i.shape for n, i in base.infos.items()})
    return "kohya" if naming.blocks else "peft"


def iter_extract_lora(
    tuned: str | Path,
    base: str | Path,
    output: str | Path,
    *,
    rank: int,
    fmt: Literal["auto", "peft", "kohya"] = "auto",
    include: str | None = None,
    exclude: str | None = None,
    embeddings: bool = False,
    device: str = "cpu",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, ExtractResult]:
    """Extract a rank-``rank`` LoRA of ``tuned`` relative to ``base`` and write it to ``output``."""
    from merge_studio.core.checkpoints.registry import open_checkpoint
    from merge_studio.core.device import resolve_device

    if rank < 1:
        raise MergeStudioError(f"rank must be at least 1, got {rank}")
    dev = resolve_device(device)
    include_re = re.compile(include) if include else None
    exclude_re = re.compile(exclude) if exclude else None
    with open_checkpoint(tuned) as tuned_ck, open_checkpoint(base) as base_ck:
        fmt = _format_for(base_ck, fmt)  # type: ignore[assignment]
        fifo = fmt == "peft" and _uses_conv1d(base_ck)
        targets = [t for t in _targets(base_ck, fmt, embeddings)
                   if (include_re is None or include_re.search(t[1].name))
                   and (exclude_re is None or not exclude_re.search(t[1].name))]
        missing = [t[1].name for t in targets if t[1].name not in tuned_ck]
        wrong = [t[1].name for t in targets if t[1].name in tuned_ck and tuned_ck.info(t[1].name).shape != base_ck.info(t[1].name).shape]
        if missing or wrong:
            listed = ", ".join((missing + wrong)[:MAX_LISTED])
            raise IncompatibleCheckpointsError(
                f"{tuned_ck.name} is not a fine-tune of {base_ck.name}: {len(missing)} tensor(s) missing and "
                f"{len(wrong)} of another shape ({listed})",
                hint="give the model it was fine-tuned from as the base",
            )
        modules: dict[str, LoraFactors] = {}
        layers: list[LayerError] = []
        residual_sq = total_sq = 0.0
        unchanged = 0
        decomposed = {t[1].name for t in targets}
        for i, (module, target, kind) in enumerate(targets):
            check_cancel(cancel)
            name, rows = target.name, target.rows
            b = base_ck.get_tensor(name)
            t = tuned_ck.get_tensor(name)
            delta = t.to(dev, torch.float32) - b.to(dev, torch.float32)
            if rows is not None:
                delta = delta[rows[0]:rows[1]]
            if not torch.any(delta):
                unchanged += 1
                continue
            if fifo or kind == "embedding":
                delta = delta.T  # stored [in, out]: the adapter factors the [out, in] change
            down, up, error, norm = decompose(delta, rank)
            residual_sq += (error * norm) ** 2
            total_sq += norm**2
            layers.append(LayerError(module, int(down.shape[0]), error, norm))
            out_dtype = t.dtype if t.dtype.is_floating_point else torch.float32
            modules[module] = LoraFactors(down.to("cpu", out_dtype), up.to("cpu", out_dtype), float(down.shape[0]), kind)  # type: ignore[arg-type]
            yield Progress("extract", i + 1, len(targets), current=name, unit="layers")
        not_captured = []
        for name in base_ck.keys():
            if name in decomposed or name not in tuned_ck:
                continue
            a, b = base_ck.get_tensor(name), tuned_ck.get_tensor(name)
            if a.shape != b.shape or not torch.equal(a, b):
                not_captured.append(name)
        if not modules:
            raise MergeStudioError(f"{tuned_ck.name} and {base_ck.name} have the same weights in every layer to "
                                   "decompose; there is nothing to extract")
        config = {"base_model_name_or_path": str(base), "fan_in_fan_out": fifo}
        content = AdapterContent(fmt, modules, {}, config if fmt == "peft" else {},  # type: ignore[arg-type]
                                 {"merge_studio.extracted_from": f"{tuned_ck.name} - {base_ck.name}, rank {rank}"})
        yield Progress("write", 0, 1, message="writing the adapter")
        path = write_adapter(output, content)
    overall = math.sqrt(residual_sq / total_sq) if total_sq > 0 else 0.0
    return ExtractResult(path, fmt, rank, tuple(layers), overall, tuple(not_captured), unchanged)


def extract_lora(tuned: str | Path, base: str | Path, output: str | Path, **kwargs) -> ExtractResult:
    """:func:`iter_extract_lora` run to the end."""
    return drive(iter_extract_lora(tuned, base, output, **kwargs))
