"""The checked plan of a mixture-of-experts assembly: its models, output config and tensor sources.

:class:`MoePlan` opens the base and expert models, picks the MoE form of the base's
family (:mod:`merge_studio.core.hf.moe_families`), builds the output config and asks
the installed transformers which tensors that model saves. Each output tensor gets a
source (the base, an expert's dense MLP, a router row, zeros), and every one is
checked against the models before a byte is read: missing tensors, wrong shapes, and
base tensors the MoE form has no place for are one error naming them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.dtypes import parse_dtype
from merge_studio.core.hf import moe_families as families
from merge_studio.core.hf.config import model_folder, read_config
from merge_studio.core.moe.config import MoeConfig
from merge_studio.errors import ArchitectureError, IncompatibleCheckpointsError, MergeStudioError


@dataclass
class SourceModel:
    ref: str
    checkpoint: Checkpoint
    folder: Path | None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.folder.name if self.folder is not None else self.checkpoint.name


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    role: families.TensorRole


def open_source(ref: str, what: str) -> SourceModel:
    from merge_studio.core.checkpoints import open_checkpoint

    folder = model_folder(ref.split("+", 1)[0]) if "+" in ref and not Path(ref).exists() else model_folder(ref)
    try:
        ck = open_checkpoint(ref)
    except MergeStudioError as exc:
        raise type(exc)(f"{what} ({ref}): {exc.message}", hint=exc.hint) from exc
    return SourceModel(ref, ck, folder, read_config(folder) if folder is not None else {})


def output_dtype(config: MoeConfig, base: SourceModel) -> torch.dtype:
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


class MoePlan:
    """The checked plan of one MoE: models, output config and where each output tensor comes from."""

    def __init__(self, config: MoeConfig, output: Path, allow_all_same: bool) -> None:
        config.check(allow_all_same)
        self.config = config
        self.output = output
        self.models: list[SourceModel] = []
        self.notes: list[str] = []
        try:
            self.base = self._add(config.base_model, "the base model")
            self.experts = [self._add(e.source_model, f"expert {i + 1}") for i, e in enumerate(config.experts)]
            self.shared = [self._add(e.source_model, "the shared expert") for e in config.shared_experts or []]
            self._plan()
        except BaseException:
            self.close()
            raise

    def _add(self, ref: str, what: str) -> SourceModel:
        for m in self.models:  # one model as several experts is opened once
            if m.ref == ref:
                return m
        model = open_source(ref, what)
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
        self.dtype = output_dtype(config, base)
        self.planned = [PlannedTensor(n, s, families.tensor_role(self.form, n)) for n, s in layout.items()]
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
            problems.append(f"{self.form.label} has no place for the base's {listing(left)}")
        if zeros:
            self.notes.append(f"{len(zeros)} biases the base has not ({listing(zeros, 2)}) are zero in "
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

    def pieces(self, p: PlannedTensor, routers: torch.Tensor, seed: int) -> list[torch.Tensor]:
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
            return [scaled(self.shared[0].checkpoint.get_tensor(role.dense_name), entry, role.dense_name, p.name, seed)]
        if role.kind == "shared_gate":
            if not self.shared:
                return [torch.zeros(p.shape)]
            return [routers[role.layer, len(self.experts)].reshape(p.shape)]
        raise AssertionError(role.kind)

    def _expert_tensor(self, index: int, dense: str, out_name: str, seed: int) -> torch.Tensor:
        tensor = self.experts[index].checkpoint.get_tensor(dense)
        return scaled(tensor, self.config.experts[index], dense, out_name, seed)


def scaled(tensor: torch.Tensor, entry: Any, dense: str, out_name: str, seed: int) -> torch.Tensor:
    """mergekit's per-expert knobs: seeded noise, and a scale on the down projection (the residual)."""
    if entry.noise_scale:
        gen = torch.Generator().manual_seed(seed + sum(out_name.encode()) * 7919 + len(out_name))
        tensor = tensor.float() + torch.randn(tensor.shape, generator=gen) * entry.noise_scale
    if entry.residual_scale is not None and ".down_proj." in dense:
        tensor = tensor.float() * entry.residual_scale
    return tensor


def listing(names: list[str], shown: int = 4) -> str:
    text = ", ".join(names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
