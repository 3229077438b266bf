"""LoRA adapters on disk: PEFT folders and kohya-style files, read into one description.

A PEFT adapter is a folder with ``adapter_config.json`` (rank ``r``, ``lora_alpha``,
target modules, rank/alpha patterns, rsLoRA, DoRA, fan-in-fan-out) and
``adapter_model.safetensors`` (``base_model.model.<module>.lora_A.weight`` [r, in]
and ``lora_B.weight`` [out, r]). A kohya-style file (Stable Diffusion) holds
``<lora_name>.lora_down.weight``, ``.lora_up.weight`` and ``.alpha`` for names like
``lora_unet_input_blocks_4_1_proj_in`` or ``lora_te_text_model_encoder_layers_0_mlp_fc1``.

:func:`read_adapter` turns either into a :class:`LoraAdapter`: one
:class:`LoraModule` per adapted module (its down/up tensor names, rank, alpha and
scale) plus the tensors that replace base tensors outright (``modules_to_save``,
trained biases). Only headers are read; the tensors stay on disk until applied.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.errors import CheckpointError

CONFIG_NAME = "adapter_config.json"
WEIGHT_NAMES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 10_000_000
_PEFT_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.[A-Za-z0-9_]+)??(?P<param>\.weight|\.bias)?$"
)
_KOHYA_KEY = re.compile(r"^(?P<module>lora_[A-Za-z0-9_]+?)\.(?P<kind>lora_down|lora_up|alpha)(?:\.weight)?$")
_UNSUPPORTED_KOHYA = ("hada_w1_a", "lokr_w1", "lora_mid", "dora_scale", "oft_blocks", "diff")
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: ΔW = scale · up @ down (PEFT: B @ A), reshaped to the base weight."""

    name: str  # the module as the adapter names it (PEFT: ``model.layers.0.self_attn.q_proj``)
    down: str  # tensor names in the adapter file
    up: str
    rank: int
    alpha: float
    scale: float
    kind: Literal["linear", "embedding"] = "linear"
    magnitude: str | None = None  # DoRA magnitude vector
    up_bias: str | None = None  # PEFT lora_bias: added to the base bias, scaled
    fan_in_fan_out: bool = False  # the base weight is stored [in, out] (GPT-2 Conv1D)


@dataclass
class LoraAdapter:
    """What an adapter file or folder holds, without its tensor data."""

    path: Path
    format: Literal["peft", "kohya"]
    checkpoint: Checkpoint  # the adapter's own tensors
    modules: dict[str, LoraModule]
    replacements: dict[str, str] = field(default_factory=dict)  # base tensor -> adapter tensor (modules_to_save)
    base_model: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    use_rslora: bool = False
    use_dora: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind_label(self) -> str:
        return ("PEFT " if self.format == "peft" else "kohya ") + ("DoRA" if self.use_dora else "LoRA") + " adapter"

    @property
    def ranks(self) -> list[int]:
        return sorted({m.rank for m in self.modules.values()})

    @property
    def alphas(self) -> list[float]:
        return sorted({m.alpha for m in self.modules.values()})

    def target_names(self) -> list[str]:
        """The kinds of module adapted (``q_proj``, ``v_proj``; kohya: ``unet``, ``text encoder``)."""
        if self.format == "peft":
            listed = self.config.get("target_modules")
            if isinstance(listed, list) and listed:
                return sorted(str(t) for t in listed)
            if isinstance(listed, str):
                return [listed]
            return sorted({m.rsplit(".", 1)[-1] for m in self.modules})
        kinds = {"lora_unet_": "UNet", "lora_te_": "text encoder", "lora_te1_": "text encoder 1",
                 "lora_te2_": "text encoder 2", "lora_te3_": "text encoder 3"}
        return sorted({label for m in self.modules for prefix, label in kinds.items() if m.startswith(prefix)})

    def describe(self) -> str:
        """One line for listings: base, rank, alpha and targets."""
        ranks = ", ".join(map(str, self.ranks)) or "–"
        alphas = ", ".join(f"{a:g}" for a in self.alphas) or "–"
        parts = [f"base {self.base_model or 'not named'}", f"rank {ranks}", f"alpha {alphas}",
                 f"{len(self.modules)} modules ({', '.join(self.target_names())})"]
        if self.use_rslora:
            parts.append("rsLoRA scaling α/√r")
        if self.replacements:
            parts.append(f"{len(self.replacements)} tensors replaced whole")
        return "; ".join(parts)

    def summary_metadata(self) -> dict[str, str]:
        """What the inspector lists as metadata."""
        return {
            "adapter.format": self.format,
            "adapter.base_model": self.base_model or "",
            "adapter.rank": ", ".join(map(str, self.ranks)),
            "adapter.alpha": ", ".join(f"{a:g}" for a in self.alphas),
            "adapter.targets": ", ".join(self.target_names()),
            "adapter.modules": str(len(self.modules)),
        }


# --- PEFT -------------------------------------------------------------------------------------
def read_peft_config(folder: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict (checked to be a PEFT LoRA config)."""
    path = folder / CONFIG_NAME
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path} is {size} bytes, too large for an adapter config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise CheckpointError(
            f"{folder.name} is a PEFT {peft_type} adapter; only LoRA (and DoRA) adapters can be applied",
        )
    return config


def _pattern_value(patterns: Any, module: str, default: float, where: str, key_name: str) -> float:
    """PEFT's rank_pattern / alpha_pattern: a key matches a module name ending in it (a regex)."""
    if not isinstance(patterns, Mapping):
        return default
    for key, value in patterns.items():
        try:
            hit = re.fullmatch(rf"(.*\.)?({key})", module) is not None
        except re.error:
            hit = module == key or module.endswith("." + str(key))
        if hit:
            return _number({key_name: value}, key_name, default, f"{where} ({key!r})")
    return default


def _number(config: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = config.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise CheckpointError(f"{where}: {key} is {value!r}, not a number")
    return float(value)


def _checked_rank(checkpoint: Checkpoint, module: str, down: str, up: str, where: str) -> int:
    """The rank both matrices agree on: A is (rank, in, ...) and B is (out, rank, ...)."""
    down_shape, up_shape = tuple(checkpoint.info(down).shape), tuple(checkpoint.info(up).shape)
    if len(down_shape) < 2 or len(up_shape) < 2 or up_shape[1] != down_shape[0]:
        raise CheckpointError(
            f"{where}: module {module} has LoRA matrices of shapes {down} {down_shape} and {up} {up_shape}, "
            "which do not multiply (A is rank × inputs, B is outputs × rank)",
            hint="the adapter file is damaged",
        )
    return down_shape[0]


def peft_adapter(path: Path, checkpoint: Checkpoint, config: Mapping[str, Any]) -> LoraAdapter:
    """Describe a PEFT adapter from its config and tensor names."""
    where = f"{path.name}/{CONFIG_NAME}"
    r_default = _number(config, "r", 8, where)
    alpha_default = _number(config, "lora_alpha", 8, where)
    rslora = bool(config.get("use_rslora", False))
    dora = bool(config.get("use_dora", False))
    fifo = bool(config.get("fan_in_fan_out", False))
    if config.get("trainable_token_indices"):
        raise CheckpointError(f"{path.name}: adapters with trainable_token_indices cannot be applied yet")
    parts: dict[str, dict[str, str]] = {}
    replacements: dict[str, str] = {}
    for key in checkpoint.keys():
        inner = key.removeprefix(PEFT_PREFIX)
        m = _PEFT_KEY.match(inner)
        if m is None:
            # modules_to_save, trained biases, embedding layers saved whole: replace the base tensor
            base_name = inner.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
            base_name = base_name.replace(".original_module.", ".")
            replacements[base_name] = key
            continue
        slot = m.group("kind") + (".bias" if m.group("param") == ".bias" else "")
        parts.setdefault(m.group("module"), {})[slot] = key
    modules: dict[str, LoraModule] = {}
    for module, slots in parts.items():
        embedding = "lora_embedding_A" in slots
        down = slots.get("lora_embedding_A" if embedding else "lora_A")
        up = slots.get("lora_embedding_B" if embedding else "lora_B")
        if down is None or up is None:
            raise CheckpointError(f"{path.name}: module {module} has only one of its two LoRA matrices")
        rank = _checked_rank(checkpoint, module, down, up, path.name)
        if not config:  # a weights file without its config: the scale is unknown, take 1 (α = r)
            r_default = alpha_default = float(rank)
        configured = int(_pattern_value(config.get("rank_pattern"), module, r_default, where, "rank_pattern"))
        if configured != rank:
            raise CheckpointError(
                f"{path.name}: module {module} has rank {rank} in the weights but {configured} in the config",
                hint="the config does not belong to these weights",
            )
        alpha = _pattern_value(config.get("alpha_pattern"), module, alpha_default, where, "alpha_pattern")
        scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        modules[module] = LoraModule(
            name=module, down=down, up=up, rank=rank, alpha=alpha, scale=scale,
            kind="embedding" if embedding else "linear",
            magnitude=slots.get("lora_magnitude_vector"), up_bias=slots.get("lora_B.bias"),
            fan_in_fan_out=fifo and not embedding,
        )
    if not modules:
        raise CheckpointError(f"{path.name} holds no LoRA matrices (no lora_A / lora_B tensors)")
    if dora and not any(m.magnitude for m in modules.values()):
        raise CheckpointError(f"{where} says use_dora, but the weights hold no lora_magnitude_vector",
                              hint="the config does not belong to these weights")
    base = config.get("base_model_name_or_path")
    return LoraAdapter(path, "peft", checkpoint, modules, replacements, str(base) if base else None, dict(config),
                       use_rslora=rslora, use_dora=dora)


# --- kohya ------------------------------------------------------------------------------------
def looks_like_kohya(names: list[str]) -> bool:
    return any(n.startswith(KOHYA_PREFIXES) and (".lora_down." in n or ".hada_w1_a" in n or ".lokr_w1" in n)
               for n in names)


def looks_like_peft(names: list[str]) -> bool:
    return any(n.startswith(PEFT_PREFIX) and (".lora_A." in n or ".lora_embedding_A" in n) for n in names)


def _kohya_alpha(checkpoint: Checkpoint, name: str, where: str) -> float:
    """A module's alpha: one finite number (stored as a 0-d or 1-element tensor)."""
    if checkpoint.info(name).numel != 1:
        raise CheckpointError(f"{where}: {name} has shape {tuple(checkpoint.info(name).shape)}; alpha is one number",
                              hint="the adapter file is damaged")
    value = float(checkpoint.get_tensor(name).float().reshape(-1)[0])
    if not math.isfinite(value):
        raise CheckpointError(f"{where}: {name} is {value}, not a finite number", hint="the adapter file is damaged")
    return value


def kohya_adapter(path: Path, checkpoint: Checkpoint) -> LoraAdapter:
    """Describe a kohya-style LoRA (``lora_down`` / ``lora_up`` / ``alpha``)."""
    unsupported = sorted({k.split(".")[1] for k in checkpoint.keys() if any(f".{u}" in k for u in _UNSUPPORTED_KOHYA)})
    if unsupported:
        raise CheckpointError(
            f"{path.name} is a LyCORIS / kohya variant ({', '.join(unsupported)}), not a plain LoRA",
            hint="only lora_down / lora_up / alpha adapters can be applied or merged",
        )
    parts: dict[str, dict[str, str]] = {}
    for key in checkpoint.keys():
        m = _KOHYA_KEY.match(key)
        if m is not None:
            parts.setdefault(m.group("module"), {})[m.group("kind")] = key
    alphas: dict[str, float] = {}
    modules: dict[str, LoraModule] = {}
    for module, slots in parts.items():
        if "lora_down" not in slots or "lora_up" not in slots:
            raise CheckpointError(f"{path.name}: {module} has only one of lora_down / lora_up")
        rank = _checked_rank(checkpoint, module, slots["lora_down"], slots["lora_up"], path.name)
        alpha = _kohya_alpha(checkpoint, slots["alpha"], path.name) if "alpha" in slots else float(rank)
        alphas[module] = alpha
        modules[module] = LoraModule(module, slots["lora_down"], slots["lora_up"], rank, alpha, alpha / rank)
    if not modules:
        raise CheckpointError(f"{path.name} holds no lora_down / lora_up tensors")
    meta = checkpoint.metadata
    base = meta.get("ss_sd_model_name") or meta.get("modelspec.architecture") or None
    return LoraAdapter(path, "kohya", checkpoint, modules, {}, base, {k: v for k, v in meta.items() if k.startswith("ss_")})
