"""Assemble a mixture-of-experts model folder from dense models of one family.

``iter_build_moe(config, output)`` is a job like a merge: it checks everything it can
before reading a tensor (family, shapes, output), sets the routers
(:mod:`merge_studio.core.moe.gates`), then streams the output tensor by tensor
(attention, norms and embeddings from the base, each expert's MLP from its model)
into a temporary folder that gets ``config.json``, the base's tokenizer and
generation config and a model card before it is renamed into place. A failure or a
cancel leaves nothing behind.

What goes where, and the checks made before a tensor is read, are in
:mod:`merge_studio.core.moe.plan`.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import merge_studio
from merge_studio.core.checkpoints.base import TensorInfo
from merge_studio.core.dtypes import dtype_name
from merge_studio.core.moe.config import MoeConfig
from merge_studio.core.moe.gates import GateBase, iter_gate_vectors
from merge_studio.core.moe.plan import MoePlan, SourceModel
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import ArchitectureError, OutputError

STAGE = "writing"


@dataclass(frozen=True)
class MoeResult:
    """What was written: the folder, its architecture and the router vectors (layers × experts × hidden)."""

    path: Path
    architecture: str  # "Mixtral", "Qwen2-MoE", ...
    model_type: str
    experts: int
    experts_per_token: int
    layers: int
    tensors: int
    gate_mode: str
    routers: torch.Tensor
    notes: tuple[str, ...] = ()


def _hash_sources(models: list[SourceModel]) -> tuple[ThreadPoolExecutor, dict[int, Future[str]]]:
    """Hash the inputs on a background thread while the tensors are written (by ``id`` of the model)."""
    from merge_studio.core.hashing import files_sha256

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash")
    return pool, {id(m): pool.submit(files_sha256, m.checkpoint.source_files()) for m in models}


def iter_build_moe(
    config: MoeConfig,
    output: str | Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    shard_size: int | None = None,
    allow_all_same: bool = False,
    hash_sources: bool = True,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, MoeResult]:
    """Assemble the MoE ``config`` describes into the folder ``output`` (see the module docstring)."""
    from merge_studio.core.writer import OutputSet

    output = Path(output).expanduser()
    if output.suffix == ".safetensors":
        raise OutputError(f"{output.name} is a file name; a mixture of experts is written as a model folder",
                          hint="give a folder, e.g. -o my-moe/")
    yield Progress(STAGE, 0, None, "", "tensors", "checking the models")
    plan = MoePlan(config, output, allow_all_same)
    pool = None
    out = None
    try:
        for m in plan.models:
            if output.resolve() in {m.checkpoint.path.resolve(), *(f.resolve() for f in [m.folder] if f)}:
                raise OutputError(f"the output {output} is one of the input models", hint="choose a new folder")
        check_cancel(cancel)
        routers = yield from iter_gate_vectors(
            config.gate_mode,
            GateBase(plan.base.folder, plan.base.checkpoint, plan.layers, plan.hidden, _embedding_name(plan)),
            plan.gate_entries(), seed=seed, device=device, batch_size=batch_size, cancel=cancel,
        )
        check_cancel(cancel)
        if hash_sources:
            pool, futures = _hash_sources(plan.models)
        infos = [TensorInfo(p.name, p.shape, plan.dtype) for p in plan.planned]
        metadata = {
            "merge_studio.version": merge_studio.__version__,
            "merge_studio.method": "moe",
            "merge_studio.recipe": config.to_yaml(),
        }
        reserve = 4096 + sum(len(str(m.checkpoint.path)) + 200 for m in plan.models)
        out = OutputSet(output, infos, shard_bytes=shard_size, metadata=metadata, reserve=reserve)
        total = len(plan.planned)
        for i, p in enumerate(plan.planned):
            check_cancel(cancel)
            for piece in plan.pieces(p, routers, seed):
                out.write(p.name, piece.reshape(-1).to(plan.dtype))
            yield Progress(STAGE, i + 1, total, p.name, "tensors")
        sources = []
        for m in plan.models:
            entry: dict[str, Any] = {"name": m.name, "path": str(m.checkpoint.path), "size": m.checkpoint.file_bytes()}
            if pool is not None:
                entry["sha256"] = futures[id(m)].result()
            sources.append(entry)
        folder = _output_folder(plan)
        final = {**metadata, "merge_studio.sources": json.dumps(sources, separators=(",", ":"))}
        path = out.commit(final, lambda tmp: folder.write_into(tmp, sources))
        out = None
    except BaseException:
        if out is not None:
            out.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        plan.close()
    notes = tuple(plan.notes)
    return MoeResult(path, plan.form.label, plan.form.model_type, len(plan.experts), config.experts_per_token,
                     plan.layers, len(plan.planned), config.gate_mode, routers, notes)


def build_moe(config: MoeConfig, output: str | Path, on_progress: Any = None, **kwargs: Any) -> MoeResult:
    """:func:`iter_build_moe`, run to the end."""
    return drive(iter_build_moe(config, output, **kwargs), on_progress)


def _embedding_name(plan: MoePlan) -> str:
    if plan.config.gate_mode != "cheap_embed":
        return ""
    from merge_studio.core.hf.config import config_vocab_size, is_vocab_tensor

    size = config_vocab_size(plan.base.config)
    ck = plan.base.checkpoint
    names = [n for n in ck.keys() if is_vocab_tensor(n, ck.info(n).shape, size) and "embed" in n]
    if not names:
        raise ArchitectureError(f"{plan.base.name} has no token embedding the cheap_embed gate mode can read")
    return names[0]


def _output_folder(plan: MoePlan) -> Any:
    from merge_studio.core.hf.model_card import ModelCard
    from merge_studio.core.hf.output_folder import CONFIG_SIDE_FILES, OutputFolder
    from merge_studio.core.hf.tokenizer_files import has_tokenizer, read_tokenizer_files

    folder = plan.base.folder
    assert folder is not None
    tokenizer = read_tokenizer_files(folder)
    card = ModelCard(
        title=plan.output.name,
        method_label=f"mixture of experts ({plan.form.label}, {len(plan.experts)} experts, "
        f"{plan.config.experts_per_token} per token, routers: {plan.config.gate_mode})",
        method_name="moe",
        base=plan.base.name,
        tokenizer=f"the tokenizer of {plan.base.name}" if has_tokenizer(tokenizer) else "no tokenizer (the base has none)",
        recipe_yaml=plan.config.to_yaml(),
        rerun=f"merge-studio moe moe.yaml -o {plan.output.name}",
    )
    copied = {name: folder / name for name in CONFIG_SIDE_FILES if (folder / name).is_file()}
    return OutputFolder(config=plan.out_config, card=card, dtype=dtype_name(plan.dtype), tokenizer=tokenizer,
                        copied=copied)

