"""mergekit-moe's YAML: a base model, expert models with prompts, and how to set the routers.

The same file ``mergekit-moe`` reads::

    base_model: path/to/base
    gate_mode: hidden          # hidden | cheap_embed | random (also hidden_avg, uniform_random)
    dtype: bfloat16
    experts_per_token: 2
    experts:
      - source_model: path/to/expert_1
        positive_prompts: ["..."]
        negative_prompts: ["..."]   # optional
    shared_experts:              # Qwen2-MoE only; at most one
      - source_model: path/to/model
        positive_prompts: ["..."]

Paths are read relative to the YAML's folder; a Hugging Face hub id is looked up in
the local cache (never downloaded). Checks that need no model (enough experts, prompts
present and not all identical) are made here, so a bad file is refused before any
tensor is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from merge_studio.core.safe_yaml import load_yaml
from merge_studio.errors import RecipeError

GateMode = Literal["hidden", "hidden_avg", "hidden_last", "cheap_embed", "random", "uniform_random"]
GATE_MODES: dict[str, str] = {
    "hidden": "the base model's hidden state at each prompt's last token, per layer (mergekit's default)",
    "hidden_avg": "the base model's hidden states averaged over each prompt's tokens, per layer",
    "cheap_embed": "the base model's token embeddings of the prompts, the same for every layer",
    "random": "seeded normal noise (for an MoE you will train)",
    "uniform_random": "seeded uniform noise, as nn.Linear initialises (for an MoE you will train)",
}
RANDOM_MODES = ("random", "uniform_random")
MAX_CONFIG_BYTES = 4_000_000


class ExpertEntry(BaseModel):
    """One expert: the model its MLPs come from and the prompts that should be routed to it."""

    model_config = ConfigDict(extra="ignore")  # as mergekit: unknown keys are not errors

    source_model: str
    positive_prompts: list[str] | None = None
    negative_prompts: list[str] | None = None
    noise_scale: float | None = Field(None, description="Add seeded normal noise of this scale to the expert's MLP.")
    residual_scale: float | None = Field(None, description="Multiply the expert's down projection by this.")

    def prompt_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.positive_prompts or ()), tuple(self.negative_prompts or ())


class MoeConfig(BaseModel):
    """A mixture-of-experts assembly, as mergekit-moe's YAML describes it."""

    model_config = ConfigDict(extra="ignore")

    base_model: str
    experts: list[ExpertEntry] = Field(min_length=1)
    gate_mode: GateMode = "hidden"
    dtype: str | None = None
    experts_per_token: int = 2
    shared_experts: list[ExpertEntry] | None = None
    architecture: str | None = None

    def check(self, allow_all_same: bool = False) -> None:
        """Refuse what cannot make a working MoE (mergekit refuses the same)."""
        if self.experts_per_token < 1:
            raise RecipeError("experts_per_token must be at least 1")
        if len(self.experts) < self.experts_per_token:
            raise RecipeError(f"{len(self.experts)} experts cannot serve experts_per_token: {self.experts_per_token}",
                              hint="give at least as many experts as experts_per_token")
        if len(self.shared_experts or []) > 1:
            raise RecipeError("at most one shared expert is supported")
        if self.gate_mode in RANDOM_MODES:
            return
        for i, expert in enumerate(self.experts):
            if not expert.positive_prompts:
                raise RecipeError(f"expert {i + 1} ({expert.source_model}) has no positive_prompts",
                                  hint=f"gate_mode {self.gate_mode} sets each router from its expert's prompts; "
                                  "add some, or use gate_mode: random for a model you will train")
        if len(self.experts) > 1 and len({e.prompt_key() for e in self.experts}) == 1:
            raise RecipeError("every expert has the same prompts, so the router could not tell them apart",
                              hint="give each expert prompts typical of what it is good at")
        if (not allow_all_same and len(self.experts) > 1
                and len({e.source_model for e in self.experts}) == 1):
            raise RecipeError(
                "every expert is the same model: the MoE would cost more and answer exactly as that model",
                hint="use gate_mode: random to make one for training (sparse upcycling), or allow it explicitly",
            )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False, allow_unicode=True)


def parse_moe_config(data: Any, where: str = "the MoE config") -> MoeConfig:
    """Validate a loaded YAML document; errors name the field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where} is not a YAML mapping", hint="see docs/moe.md for the format")
    if "merge_method" in data or "method" in data:
        raise RecipeError(f"{where} is a merge recipe, not a mixture-of-experts config",
                          hint="run it with merge-studio merge; merge-studio moe takes base_model and experts")
    try:
        return MoeConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise RecipeError(f"{where}: {field}: {first['msg']}",
                          hint="the format is mergekit-moe's: base_model, gate_mode, dtype, experts "
                          "(source_model, positive_prompts, negative_prompts)") from None


def load_moe_config(path: str | Path) -> MoeConfig:
    """Read a mergekit-moe YAML file, model paths made absolute (relative to the file's folder)."""
    p = Path(path).expanduser()
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise RecipeError(f"{p} is too large for an MoE config")
        data = load_yaml(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{p} does not exist", hint="give the path of a mergekit-moe YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RecipeError(f"{p} is not valid YAML ({exc})") from exc
    return resolve_paths(parse_moe_config(data, p.name), p.parent)


def resolve_paths(config: MoeConfig, base_dir: str | Path | None) -> MoeConfig:
    """Model references as paths: relative ones against ``base_dir``, hub ids found in the local cache."""
    from merge_studio.core.hf.hub_cache import resolve_model_reference

    def fix(ref: str) -> str:
        resolved = resolve_model_reference(ref, base_dir)
        local = Path(resolved).expanduser()
        if base_dir is not None and resolved == ref and not local.is_absolute() and (Path(base_dir) / local).exists():
            return str(Path(base_dir) / local)
        return resolved

    data = config.model_dump()
    data["base_model"] = fix(config.base_model)
    for group in ("experts", "shared_experts"):
        for entry in data.get(group) or []:
            entry["source_model"] = fix(entry["source_model"])
    return MoeConfig.model_validate(data)
