"""Align checkpoint B to A from their files, for the Permutations tab (Qt-free).

The tab only chooses files, an architecture and a seed; this job opens the
files, builds the architecture, runs :func:`iter_align` and prepares the
similarity matrices on the worker thread, so the GUI thread only draws.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.core.rebasin.align import AlignResult
from merge_studio.errors import ArchitectureError

ALIGNED_TO_KEY = "merge_studio.aligned_to"


@dataclass(frozen=True)
class AlignOutcome:
    """B aligned to A, where both came from, and the matrices the view draws on demand."""

    path_a: Path
    path_b: Path
    names: tuple[str, str]
    arch: str
    result: AlignResult
    similarity: Any = field(repr=False)  # a SimilarityProvider: group name -> matrix
    metadata_b: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def report(self) -> dict[str, Any]:
        return self.result.report

    @property
    def aligned(self) -> dict[str, torch.Tensor]:
        return self.result.aligned


def choose_arch(arch: str | None, *checkpoints: Any) -> str:
    """The architecture to align with: the given one, else the one detected in either file."""
    from merge_studio.core.arch import detect_arch, parse_arch

    if arch:
        return str(parse_arch(arch))
    for checkpoint in checkpoints:
        found = detect_arch(checkpoint)
        if found:
            return found
    name = getattr(checkpoints[0], "name", "the model") if checkpoints else "the model"
    raise ArchitectureError(
        f"cannot tell the architecture of {name}",
        hint="type one in the Architecture box, e.g. zoo:mlp, zoo:resnet20?width=1 or my_model.py:build",
    )


def _load_data(source: str | None, module: Any, method: str) -> tuple[Any, str | None]:
    """The data to align on, or ``None`` with a note when Auto cannot use it (activation matching needs it)."""
    if not source:
        return None, "no data chosen: weight matching only" if method == "auto" else None
    from merge_studio.core.evaluate.data import DataSpec, load_data
    from merge_studio.errors import MergeStudioError

    try:
        return load_data(DataSpec(source=source), for_module=module), None
    except MergeStudioError as exc:
        if method != "auto":
            raise
        return None, f"the data could not be loaded for this model ({exc.message}): weight matching only"


def iter_align_files(
    path_a: str | Path,
    path_b: str | Path,
    *,
    arch: str | None = None,
    seed: int = 0,
    device: str = "auto",
    method: str = "weight",
    data_source: str | None = None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, AlignOutcome]:
    """Open both files, align B to A, and return everything the tab shows.

    ``method`` is ``weight``, ``activation`` or ``auto``; with data both methods run,
    so the tab can show how much they agree, and ``auto`` keeps the better merge.
    """
    from merge_studio.core.arch import example_input
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.rebasin.align import module_for_alignment
    from merge_studio.core.rebasin.choose import iter_chosen_alignment
    from merge_studio.core.rebasin.similarity import SimilarityProvider

    path_a, path_b = Path(path_a), Path(path_b)
    yield Progress("load", 0, 2, current=path_a.name, unit="checkpoints", message="reading checkpoints")
    with open_checkpoint(path_a) as ck_a, open_checkpoint(path_b) as ck_b:
        spec = choose_arch(arch, ck_a, ck_b)
        state_a, state_b = ck_a.state_dict(), ck_b.state_dict()
        names = (ck_a.name, ck_b.name)
        metadata_b = dict(ck_b.metadata)
    check_cancel(cancel)
    yield Progress("load", 2, 2, unit="checkpoints", message=f"building {spec}")
    module = module_for_alignment(spec)
    data, note = _load_data(data_source, module, method)
    result = yield from iter_chosen_alignment(
        module, state_a, state_b, example_input(spec), data, choose=method, arch=spec, seed=seed, device=device,
        models=names, cancel=cancel,
    )
    if note:
        result = replace(result, report={**result.report, "note": note})
    check_cancel(cancel)
    similarity = SimilarityProvider(result.spec, state_a, state_b, result.matching.perms, device="cpu")
    return AlignOutcome(path_a, path_b, names, spec, result, similarity, metadata_b)


def aligned_metadata(outcome: AlignOutcome) -> dict[str, str]:
    """B's own metadata, with the permutation, the architecture and whom it was aligned to."""
    from merge_studio.core.arch import arch_metadata
    from merge_studio.core.rebasin.report import permutation_metadata

    meta = {k: v for k, v in outcome.metadata_b.items() if not k.startswith("merge_studio.permutation")}
    meta.update(arch_metadata(outcome.arch))
    meta.update(permutation_metadata(outcome.report))
    meta[ALIGNED_TO_KEY] = outcome.names[0]
    return meta


def save_aligned(outcome: AlignOutcome, target: str | Path) -> Path:
    """Write aligned B as safetensors (atomically); refuses to overwrite either input."""
    from merge_studio.core.writer import write_state_dict
    from merge_studio.errors import OutputError

    target = Path(target).expanduser().absolute()
    if target in (outcome.path_a.absolute(), outcome.path_b.absolute()):
        raise OutputError(f"{target.name} is one of the aligned models", hint="choose another file name")
    tensors = {k: v.detach().contiguous() for k, v in outcome.aligned.items()}
    return write_state_dict(target, tensors, aligned_metadata(outcome))


def suggest_aligned_path(outcome: AlignOutcome) -> Path:
    """``<B>-aligned-to-<A>.safetensors`` beside B, numbered when taken."""
    folder = outcome.path_b.parent if outcome.path_b.is_file() else outcome.path_b
    stem = f"{Path(outcome.names[1]).stem}-aligned-to-{Path(outcome.names[0]).stem}"
    candidate = folder / f"{stem}.safetensors"
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}.safetensors"
        n += 1
    return candidate
