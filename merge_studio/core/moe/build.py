"""Assemble a mixture-of-experts model folder from dense models of one family.

``iter_build_moe(config, output)`` is a job like a merge: it checks everything it can
before reading a tensor (family, shapes, output), sets the routers
(:mod:`merge_studio.core.moe.gates`), then streams the output tensor by tensor
(attention, norms and embeddings from the base, each expert's MLP from its model)
into a temporary folder that gets ``config.json``, the base's tokenizer and
generation config and a model card before it is renamed into place. A failure or a
cancel leaves nothing behind.

The output tensors are exactly those the installed transformers saves for the MoE
architecture (see :mod:`merge_studio.core.hf.moe_families`), and each must be
accounted for: a base tensor the MoE form has no place for (an attention bias a
Mixtral lacks) is an error, not a silent drop.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import merge_studio
from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.dtypes import dtype_name, parse_dtype
from merge_studio.core.hf import moe_families as families
from merge_studio.core.hf.config import model_folder, read_config
from merge_studio.core.moe.config import RANDOM_MODES, MoeConfig
from merge_studio.core.moe.gates import GateBase, iter_gate_vectors
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import (
    ArchitectureError,
    IncompatibleCheckpointsError,
    MergeStudioError,
    OutputError,
)

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


@dataclass
class _Model:
    ref: str
    checkpoint: Checkpoint
    folder: Path | None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.name if self.folder is not None else self.checkpoint.name


@dataclass(frozen=True)
class _Planned:
    name: str
    shape: tuple[int, ...]
    role: families.TensorRole


def _open(ref: str, what: str) -> _Model:
    from merge_studio.core.checkpoints import open_checkpoint

    folder = model_folder(ref.split("+", 1)[0]) if "+" in ref and not Path(ref).exists() else model_folder(ref)
    try:
        ck = open_checkpoint(ref)
    except MergeStudioError as exc:
        raise type(exc)(f"{what} ({ref}): {exc.message}", hint=exc.hint) from exc
    return _Model(ref, ck, folder, read_config(folder) if folder is not None else {})


def _pick_dtype(config: MoeConfig, base: _Model) -> torch.dtype:
    if config.dtype:
        return parse_dtype(config.dtype)  # type: ignore[return-value]
    for key in ("dtype", "torch_dtype"):
        value = base.config.get(key)
        if isinstance(value, str):
            try:
                parsed = parse_dtype(value)
            except MergeStudioError:
                continue
            if parsed is not None and parsed.is_floating_point:
                return parsed
    counts = Counter(i.dtype for i in base.checkpoint.infos.values() if i.dtype.is_floating_point)
    return counts.most_common(1)[0][0] if counts else torch.float32


class _Assembly:
    """The checked plan of one MoE: models, output config and where each output tensor comes from."""

    def __init__(self, config: MoeConfig, output: Path, allow_all_same: bool) -> None:
        config.check(allow_all_same)
        self.config = config
        self.output = output
        self.models: list[_Model] = []
        self.notes: list[str] = []
        try:
            self.base = self._add(config.base_model, "the base model")
            self.experts = [self._add(e.source_model, f"expert {i + 1}") for i, e in enumerate(config.experts)]
            self.shared = [self._add(e.source_model, "the shared expert") for e in config.shared_experts or []]
            self._plan()
        except BaseException:
            self.close()
            raise

    def _add(self, ref: str, what: str) -> _Model:
        for m in self.models:  # one model as several experts is opened once
            if m.ref == ref:
                return m
        model = _open(ref, what)
        self.models.append(model)
        return model

    def close(self) -> None:
        for m in self.models:
            m.checkpoint.close()

    # --- planning -------------------------------------------------------------------------
    def _plan(self) -> None:
        base, config = self.base, self.config
        if base.folder is None:
            raise ArchitectureError(
                f"the base model {base.ref} is not a Hugging Face model folder (no config.json beside it)",
                hint="the MoE keeps the base's config and tokenizer; give the folder save_pretrained wrote",
            )
        family = base.config.get("model_type")
        self.form = families.moe_form_for(family, shared_experts=len(self.shared), architecture=config.architecture)
        for i, m in enumerate([*self.experts, *self.shared]):
            other = m.config.get("model_type")
            if m.folder is not None and other != family:
                raise IncompatibleCheckpointsError(
                    f"{m.name} is a {other} model but the base {base.name} is {family}; "
                    "every expert must be of the base's family",
                    hint="experts are fine-tunes of the base (same family and size)",
                )
        from merge_studio.core.arch.hf import load_hf_config
        from merge_studio.core.arch.spec import ArchSpec

        base_cfg = load_hf_config(ArchSpec("hf", str(base.folder))).to_dict()
        self.out_config = families.moe_config(self.form, base_cfg, experts=len(self.experts),
                                              per_token=config.experts_per_token, shared=bool(self.shared))
        self.layers = int(base_cfg.get("num_hidden_layers") or 0)
        self.hidden = int(base_cfg.get("hidden_size") or 0)
        layout, _tied = families.saved_layout(self.out_config)
        self.dtype = _pick_dtype(config, base)
        self.planned = [_Planned(n, s, families.tensor_role(self.form, n)) for n, s in layout.items()]
        self._check_sources()

    def _check_sources(self) -> None:
        base = self.base.checkpoint
        used: set[str] = set()
        zeros: list[str] = []
        problems: list[str] = []
        n = len(self.experts)
        for p in self.planned:
            role = p.role
            if role.kind == "base":
                if p.name in base:
                    used.add(p.name)
                    if tuple(base.info(p.name).shape) != p.shape:
                        problems.append(f"{p.name} is {list(base.info(p.name).shape)} in the base, "
                                        f"{self.form.label} needs {list(p.shape)}")
                elif p.name.endswith(".bias"):
                    zeros.append(p.name)
                else:
                    problems.append(f"{p.name} is not in the base model")
            elif role.kind == "expert":
                problems += self._check_dense(self.experts[role.expert].checkpoint, role.dense_name, p.shape,
                                              self.experts[role.expert].name)
            elif role.kind == "fused_experts":
                found = 0
                for e in self.experts:
                    for proj in role.projections:
                        name = role.dense_name.format(proj)
                        missing = self._check_dense(e.checkpoint, name, None, e.name)
                        problems += missing
                        found += 0 if missing else e.checkpoint.info(name).numel
                if not problems and found != math.prod(p.shape):
                    problems.append(f"the experts' {'+'.join(role.projections)} do not fill {p.name} {list(p.shape)}")
            elif role.kind == "router" and p.shape != (n, self.hidden):
                problems.append(f"{p.name} is {list(p.shape)}, expected [{n}, {self.hidden}]")
            elif role.kind == "shared" and self.shared:
                problems += self._check_dense(self.shared[0].checkpoint, role.dense_name, p.shape, self.shared[0].name)
        left = [k for k in base.keys() if k not in used and not families.is_dense_mlp(k)
                and not k.endswith("rotary_emb.inv_freq")]
        if left:
            problems.append(f"{self.form.label} has no place for the base's {_listing(left)}")
        if zeros:
            self.notes.append(f"{len(zeros)} biases the base has not ({_listing(zeros, 2)}) are zero in "
                              f"the {self.form.label}, which changes nothing")
        if self.form.shared_expert and not self.shared:
            self.notes.append("no shared expert was given: the shared expert is one unit of zeros, which adds nothing")
        if problems:
            raise IncompatibleCheckpointsError(
                f"cannot assemble a {self.form.label} from these models: {'; '.join(problems[:6])}"
                + (f" (and {len(problems) - 6} more)" if len(problems) > 6 else ""),
                hint="the experts must be fine-tunes of the base: same family, same sizes",
            )

    @staticmethod
    def _check_dense(ck: Checkpoint, name: str, shape: tuple[int, ...] | None, who: str) -> list[str]:
        if name not in ck:
            return [f"{who} has no {name}"]
        if shape is not None and tuple(ck.info(name).shape) != shape:
            return [f"{who}'s {name} is {list(ck.info(name).shape)}, the expert needs {list(shape)}"]
        return []

    # --- tensors --------------------------------------------------------------------------
    def gate_entries(self) -> list[Any]:
        entries = list(self.config.experts)
        if self.config.shared_experts:
            entries.append(self.config.shared_experts[0])
        return entries

    def pieces(self, p: _Planned, routers: torch.Tensor, seed: int) -> list[torch.Tensor]:
        """The output tensor's data, as pieces to write one after another."""
        role = p.role
        if role.kind == "base":
            if p.name not in self.base.checkpoint:
                return [torch.zeros(p.shape)]
            return [self.base.checkpoint.get_tensor(p.name)]
        if role.kind == "expert":
            return [self._expert_tensor(role.expert, role.dense_name, p.name, seed)]
        if role.kind == "fused_experts":
            return [self._expert_tensor(e, role.dense_name.format(proj), p.name, seed)
                    for e in range(len(self.experts)) for proj in role.projections]
        if role.kind == "router":
            return [routers[role.layer, : len(self.experts)]]
        if role.kind == "shared":
            if not self.shared:
                return [torch.zeros(p.shape)]
            entry = self.config.shared_experts[0]
            return [_scaled(self.shared[0].checkpoint.get_tensor(role.dense_name), entry, role.dense_name, p.name, seed)]
        if role.kind == "shared_gate":
            if not self.shared:
                return [torch.zeros(p.shape)]
            return [routers[role.layer, len(self.experts)].reshape(p.shape)]
        raise AssertionError(role.kind)

    def _expert_tensor(self, index: int, dense: str, out_name: str, seed: int) -> torch.Tensor:
        tensor = self.experts[index].checkpoint.get_tensor(dense)
        return _scaled(tensor, self.config.experts[index], dense, out_name, seed)


def _scaled(tensor: torch.Tensor, entry: Any, dense: str, out_name: str, seed: int) -> torch.Tensor:
    """mergekit's per-expert knobs: seeded noise, and a scale on the down projection (the residual)."""
    if entry.noise_scale:
        gen = torch.Generator().manual_seed(seed + sum(out_name.encode()) * 7919 + len(out_name))
        tensor = tensor.float() + torch.randn(tensor.shape, generator=gen) * entry.noise_scale
    if entry.residual_scale is not None and ".down_proj." in dense:
        tensor = tensor.float() * entry.residual_scale
    return tensor


def _listing(names: list[str], shown: int = 4) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _hash_sources(models: list[_Model]) -> tuple[ThreadPoolExecutor, dict[int, Future[str]]]:
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
    plan = _Assembly(config, output, allow_all_same)
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


def _embedding_name(plan: _Assembly) -> str:
    if plan.config.gate_mode != "cheap_embed":
        return ""
    from merge_studio.core.hf.config import config_vocab_size, is_vocab_tensor

    size = config_vocab_size(plan.base.config)
    ck = plan.base.checkpoint
    names = [n for n in ck.keys() if is_vocab_tensor(n, ck.info(n).shape, size) and "embed" in n]
    if not names:
        raise ArchitectureError(f"{plan.base.name} has no token embedding the cheap_embed gate mode can read")
    return names[0]


def _output_folder(plan: _Assembly) -> Any:
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


def gate_mode_needs_model(mode: str) -> bool:
    """Whether the gate mode runs the base model (the slow, memory-hungry part)."""
    return mode not in RANDOM_MODES and mode != "cheap_embed"
