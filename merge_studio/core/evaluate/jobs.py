"""Evaluation jobs starting from files: what the GUI's Barrier tab and the CLI ask for.

A request is a frozen description (paths, architecture, data, options); its
``job(cancel)`` is a generator the GUI's ``JobRunner.start(request.job)`` or the
CLI's ``drive`` runs. Loading checkpoints and building the module happen inside
the job, so they run on the worker thread and report errors like any other step.

Checkpoints are opened lazily (:class:`~merge_studio.core.evaluate.streaming.LazyState`):
one module is built and weights are copied or interpolated into it tensor by tensor,
so evaluating or sweeping between two big language models holds one model, not three.
Text data is tokenised with the first model folder's tokenizer unless one is named.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from merge_studio.core.evaluate.barrier import BarrierReport, iter_barrier_comparison
from merge_studio.core.evaluate.curves import BarrierPoint
from merge_studio.core.evaluate.data import DataSpec, load_data, source_kind
from merge_studio.core.evaluate.loop import ModelScores, iter_evaluate_models
from merge_studio.core.evaluate.merged_path import MergedAnchor, merged_anchor, read_metadata
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import ArchitectureError


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A checkpoint's tensors (float tensors as float32) and the architecture it declares or matches."""
    from merge_studio.core.arch import detect_arch
    from merge_studio.core.checkpoints import open_checkpoint

    with open_checkpoint(path) as ck:
        arch = detect_arch(ck)
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in ck.state_dict().items()}
    return state, arch


def detected_arch(path: str | Path) -> str | None:
    """The architecture a checkpoint declares or matches (only its header is read)."""
    from merge_studio.core.arch import detect_arch
    from merge_studio.core.checkpoints import open_checkpoint

    with open_checkpoint(path) as ck:
        return detect_arch(ck)


def template_for(
    arch: str | None, first_path: str | Path, detected: str | None, device: str | torch.device | None = None
) -> tuple[nn.Module, str]:
    """Build the module the states are loaded into: the given arch, else the detected one.

    Built on ``device`` without random initialisation where the builder allows (the
    weights are overwritten anyway), so a big model is never initialised on the CPU first.
    """
    from merge_studio.core.arch import build_module
    from merge_studio.core.device import resolve_device

    spec = arch or detected
    if spec is None:
        raise ArchitectureError(
            f"cannot tell which architecture {Path(first_path).name} is",
            hint="give one with --arch (e.g. zoo:mlp, zoo:resnet20?width=1, my_model.py:build, hf:model_folder)",
        )
    place = resolve_device(device) if device is not None else None
    return build_module(spec, device=place, init_weights=False), spec


def with_tokenizer(data: DataSpec | Mapping[str, Any] | str, model_path: str | Path) -> DataSpec:
    """Text data without a tokenizer gets the model folder's (a folder, or the folder of a weights file)."""
    if isinstance(data, str):
        data = DataSpec(source=data)
    elif not isinstance(data, DataSpec):
        data = DataSpec.model_validate(data)
    if data.tokenizer or source_kind(data.source) != "text":
        return data
    from merge_studio.core.evaluate.text import TOKENIZER_FILES

    path = Path(model_path).expanduser()
    folder = path if path.is_dir() else path.parent
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        return data.model_copy(update={"tokenizer": str(folder)})
    return data


def _lazy(stack: contextlib.ExitStack, path: str | Path) -> Mapping[str, torch.Tensor]:
    from merge_studio.core.evaluate.streaming import LazyState

    return stack.enter_context(LazyState(path))


def aligned_with(anchor: MergedAnchor, module: nn.Module, arch: str, state_b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """B permuted as the weight-matching merge permuted it (the permutation is in the merged file)."""
    from merge_studio.core.arch import example_input
    from merge_studio.core.rebasin.align import module_for_alignment
    from merge_studio.core.rebasin.apply import apply_permutation
    from merge_studio.core.rebasin.spec import spec_from_module

    spec = spec_from_module(module_for_alignment(arch), example_input(arch))
    perms = {name: torch.as_tensor(perm) for name, perm in anchor.perms.items()}
    return apply_permutation(spec, state_b, perms)


MEMORY_MERGE_NAME = "merged (not saved)"


def merge_in_memory(recipe: Any, cancel: CancelToken | None) -> Generator[Progress, None, tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """Run ``recipe`` into memory for a test before writing: its tensors (floats as float32) and metadata."""
    from merge_studio.core.memory_merge import iter_memory_merge

    memory = yield from iter_memory_merge(recipe, cancel)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in memory.state_dict.items()}
    return state, memory.metadata


def display_name(path: str | Path) -> str:
    p = Path(path)
    return p.stem if p.suffix else p.name


@dataclass(frozen=True)
class BarrierRequest:
    """Everything a barrier comparison needs, as chosen in the Barrier tab or on the command line."""

    model_a: str
    model_b: str
    arch: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    steps: int = 25
    splits: tuple[str, ...] = ("train", "test")
    curves: tuple[str, ...] | None = None
    merged: str | None = None
    merged_recipe: Any = field(default=None, compare=False)  # merged in memory first, instead of a merged file
    aligned_b: str | None = None
    aligned_state: Mapping[str, torch.Tensor] | None = field(default=None, compare=False, repr=False)
    align: bool = False
    align_method: str = "auto"  # weight, activation, or auto (both, keeping the better merge)
    reset_bn: str = "auto"
    save_dir: str | None = None
    device: str = "auto"

    @property
    def wants_alignment(self) -> bool:
        """Align B to A inside the job: asked for, or the aligned curve chosen with no B′ given."""
        has_b_prime = self.aligned_state is not None or self.aligned_b is not None
        wanted = self.curves is not None and ("aligned" in self.curves or "repaired" in self.curves)
        return not has_b_prime and (self.align or wanted)

    def job(self, cancel: CancelToken | None = None) -> Generator[Progress | BarrierPoint, None, BarrierReport]:
        """Open the models, align B to A when asked (``align_method``), then run :func:`iter_barrier_comparison`."""
        yield Progress("load", 0, None, current=display_name(self.model_a), message="reading checkpoints")
        with contextlib.ExitStack() as stack:
            state_a, state_b = _lazy(stack, self.model_a), _lazy(stack, self.model_b)
            merged = _lazy(stack, self.merged) if self.merged else None
            anchor = merged_anchor(read_metadata(self.merged), self.model_a, self.model_b) if self.merged else None
            if self.merged_recipe is not None:
                merged, metadata = yield from merge_in_memory(self.merged_recipe, cancel)
                anchor = merged_anchor(metadata, self.model_a, self.model_b)
            aligned = dict(self.aligned_state) if self.aligned_state is not None else (
                _lazy(stack, self.aligned_b) if self.aligned_b else None)
            check_cancel(cancel)
            module, arch = template_for(self.arch, self.model_a, detected_arch(self.model_a), self.device)
            names = (display_name(self.model_a), display_name(self.model_b))
            data = load_data(with_tokenizer(self.data, self.model_a), for_module=module)
            extra = {"arch": arch}
            if self.wants_alignment:
                from merge_studio.core.arch import example_input
                from merge_studio.core.rebasin.choose import iter_chosen_alignment

                state_a, state_b = dict(state_a), dict(state_b)  # matching needs both in memory
                result = yield from iter_chosen_alignment(
                    module, state_a, state_b, example_input(arch), data, choose=self.align_method, arch=arch,
                    models=names, device=self.device, cancel=cancel, compare=self.align_method == "auto",
                )
                aligned = result.aligned
                extra["alignment"] = str(result.report.get("method"))
            merged_b = (aligned_with(anchor, module, arch, dict(state_b))
                        if anchor is not None and anchor.aligned_b else None)
            splits = self.splits if data.tokens is None else ("test",)  # text: one set of windows
            report = yield from iter_barrier_comparison(
                module, state_a, state_b, data, curves=self.curves, aligned_b=aligned, merged=merged,
                merged_anchor=anchor, merged_b=merged_b,
                steps=self.steps, splits=splits, reset_bn=self.reset_bn,
                model_names=names, save_dir=self.save_dir, device=self.device, cancel=cancel,
            )
        return BarrierReport(
            curves=report.curves, task=report.task, data=report.data, steps=report.steps, splits=report.splits,
            model_names=report.model_names, extra=extra,
        )


@dataclass(frozen=True)
class EvaluateRequest:
    """Evaluate several checkpoints (the inputs and the merged model) on the same data."""

    models: tuple[str, ...]
    names: tuple[str, ...] | None = None
    arch: str | None = None
    data: DataSpec = field(default_factory=DataSpec)
    splits: tuple[str, ...] = ("train", "test")
    reset_bn: str = "auto"
    device: str = "auto"
    merged_recipe: Any = field(default=None, compare=False)  # also evaluate this recipe merged in memory

    def job(self, cancel: CancelToken | None = None) -> Generator[Progress, None, ModelScores]:
        """Open every model lazily; each is copied into one module in turn and evaluated.

        With ``merged_recipe`` the recipe is first merged into memory and evaluated
        last, as :data:`MEMORY_MERGE_NAME`: a test of the merge before it is written.
        """
        with contextlib.ExitStack() as stack:
            states: list[Mapping[str, Any]] = []
            detected: str | None = None
            for i, path in enumerate(self.models):
                check_cancel(cancel)
                yield Progress("load", i, len(self.models), current=display_name(path), unit="checkpoints")
                states.append(_lazy(stack, path))
                detected = detected or detected_arch(path)
            names = self.names or tuple(display_name(p) for p in self.models)
            if self.merged_recipe is not None:
                state, _metadata = yield from merge_in_memory(self.merged_recipe, cancel)
                states.append(state)
                names = (*names, MEMORY_MERGE_NAME)
            module, _arch = template_for(self.arch, self.models[0], detected, self.device)
            data = load_data(with_tokenizer(self.data, self.models[0]), for_module=module)
            splits = self.splits if data.tokens is None else ("test",)  # text: one set of windows
            return (yield from iter_evaluate_models(
                states, names, data, template=module, splits=splits, reset_bn=self.reset_bn,
                device=self.device, cancel=cancel,
            ))


def evaluate_paths(paths: Sequence[str], **kwargs: Any) -> ModelScores:
    """Plain call: evaluate checkpoint files (keyword arguments as :class:`EvaluateRequest`)."""
    from merge_studio.core.progress import drive

    return drive(EvaluateRequest(models=tuple(paths), **kwargs).job())
