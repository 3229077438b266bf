"""Write an adapter in PEFT's or kohya's layout, all at once or not at all.

A PEFT adapter is a folder (``adapter_config.json`` + ``adapter_model.safetensors``)
built under a temporary name next to the target and renamed into place; a kohya
LoRA is one ``.safetensors`` file written the same way. Every module is written
with scale 1 where the format allows it (alpha = rank), so what was computed is
exactly what a loader applies.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from merge_studio.core.lora.adapter import CONFIG_NAME, PEFT_PREFIX, WEIGHT_NAMES
from merge_studio.core.writer import write_state_dict
from merge_studio.errors import OutputError

ADAPTER_FILES = {CONFIG_NAME, *WEIGHT_NAMES, "README.md"}


@dataclass
class LoraFactors:
    """One module's factors, ready to write: ΔW = scale · up @ down."""

    down: torch.Tensor  # [r, in] (or [r, in, kh, kw])
    up: torch.Tensor  # [out, r] (or [out, r, 1, 1])
    alpha: float  # with rank r: scale alpha / r
    kind: Literal["linear", "embedding"] = "linear"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class AdapterContent:
    """Everything an output adapter holds."""

    format: Literal["peft", "kohya"]
    modules: dict[str, LoraFactors]
    whole: dict[str, torch.Tensor] = field(default_factory=dict)  # base tensor name -> replacement (PEFT)
    config: dict[str, Any] = field(default_factory=dict)  # PEFT: fields kept from the inputs
    metadata: dict[str, str] = field(default_factory=dict)


def peft_config(content: AdapterContent) -> dict[str, Any]:
    """``adapter_config.json`` for the modules: r and lora_alpha of the commonest rank, patterns for the rest."""
    ranks = [f.rank for f in content.modules.values()]
    r = max(set(ranks), key=ranks.count) if ranks else 0
    rank_pattern = {m: f.rank for m, f in content.modules.items() if f.rank != r}
    alpha_default = next((f.alpha for f in content.modules.values() if f.rank == r), float(r))
    alpha_pattern = {m: f.alpha for m, f in content.modules.items() if f.alpha != alpha_default}
    # leaf names (q_proj), as PEFT and mergekit write them; full paths where a leaf is only a number
    targets = sorted({m if m.rsplit(".", 1)[-1].isdigit() else m.rsplit(".", 1)[-1] for m in content.modules})
    return {
        **content.config,
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha_default,
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "target_modules": targets,
        "use_rslora": False,
        "use_dora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "inference_mode": True,
        "modules_to_save": sorted({n.rsplit(".", 1)[0] for n in content.whole}) or None,
    }


def _peft_tensors(content: AdapterContent) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for module, f in content.modules.items():
        if f.kind == "embedding":
            tensors[f"{PEFT_PREFIX}{module}.lora_embedding_A"] = f.down.contiguous()
            tensors[f"{PEFT_PREFIX}{module}.lora_embedding_B"] = f.up.contiguous()
        else:
            tensors[f"{PEFT_PREFIX}{module}.lora_A.weight"] = f.down.contiguous()
            tensors[f"{PEFT_PREFIX}{module}.lora_B.weight"] = f.up.contiguous()
    for name, t in content.whole.items():
        tensors[f"{PEFT_PREFIX}{name}"] = t.contiguous()
    return tensors


def _kohya_tensors(content: AdapterContent) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for module, f in content.modules.items():
        tensors[f"{module}.lora_down.weight"] = f.down.contiguous()
        tensors[f"{module}.lora_up.weight"] = f.up.contiguous()
        tensors[f"{module}.alpha"] = torch.tensor(float(f.alpha), dtype=torch.float32)
    return tensors


def _check_folder(target: Path) -> None:
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder", hint="a PEFT adapter is written as a folder")
        foreign = sorted(p.name for p in target.iterdir() if p.name not in ADAPTER_FILES)
        if foreign:
            raise OutputError(
                f"output folder {target} already holds other files ({', '.join(foreign[:3])})",
                hint="choose an empty or new folder for the adapter",
            )


def write_adapter(target: str | Path, content: AdapterContent) -> Path:
    """Write ``content`` to ``target`` (a folder for PEFT, a ``.safetensors`` file for kohya)."""
    target = Path(target).expanduser()
    metadata = {"format": "pt", **content.metadata}
    if content.format == "kohya":
        if target.suffix != ".safetensors":
            raise OutputError(f"{target.name}: a kohya LoRA is one .safetensors file", hint="end the name in .safetensors")
        ranks = sorted({f.rank for f in content.modules.values()})
        kohya_meta = {"ss_network_module": "networks.lora", "ss_network_dim": str(ranks[-1] if ranks else 0),
                      "ss_network_alpha": str(ranks[-1] if ranks else 0)}
        return write_state_dict(target, _kohya_tensors(content), {**kohya_meta, **metadata})
    _check_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_state_dict(tmp / WEIGHT_NAMES[0], _peft_tensors(content), metadata)
        (tmp / CONFIG_NAME).write_text(json.dumps(peft_config(content), indent=2, sort_keys=True), encoding="utf-8")
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def kept_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an input's PEFT config that still describe a combined adapter."""
    keep = ("base_model_name_or_path", "task_type", "fan_in_fan_out", "revision")
    return {k: config[k] for k in keep if k in config}
