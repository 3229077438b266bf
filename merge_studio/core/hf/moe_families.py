"""Which dense families have a mixture-of-experts form in transformers, and what that form looks like.

Assembling a mixture of experts keeps the base model's attention, norms and
embeddings and gives every decoder layer several copies of the MLP (one per expert
model) behind a router. That needs an MoE architecture whose attention is the dense
family's attention: Llama and Mistral become **Mixtral**, Qwen2 becomes **Qwen2-MoE**
(which also has an always-on shared expert), Qwen3 becomes **Qwen3-MoE**. Other
families (GPT-2, Phi, Gemma, ...) have no such form and are refused by name.

The output's tensor names and shapes are not written down here: they are asked of
the installed transformers, by building the MoE model on the meta device and
turning its state dict into the names ``save_pretrained`` writes (transformers 5
keeps experts fused in memory, as ``experts.gate_up_proj``, but saves them one by
one, as transformers 4 did). What this module knows is only the family's
vocabulary: which config keys hold the expert counts and how an expert's
projections are named relative to the dense MLP's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from merge_studio.errors import ArchitectureError

# Config keys that describe the file, not the model; dropped before building the MoE config.
_FILE_KEYS = ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map", "torch_dtype", "dtype")


@dataclass(frozen=True)
class MoeForm:
    """One MoE architecture and how a dense family's config and MLP map onto it."""

    key: str  # what mergekit's ``architecture:`` field may say ("mixtral", "qwen")
    label: str  # for people: "Mixtral", "Qwen2-MoE"
    model_type: str
    architecture: str
    bases: tuple[str, ...]  # dense model_types it is built from
    experts_key: str  # config key holding the number of experts
    # expert projection name in the MoE -> the dense MLP's projection it is copied from
    projections: Mapping[str, str] = field(default_factory=dict)
    shared_expert: bool = False
    # extra config keys, computed from the dense config (intermediate sizes, sparsity)
    extra: str = ""

    def config_values(self, base: Mapping[str, Any], experts: int, per_token: int, shared: bool) -> dict[str, Any]:
        values: dict[str, Any] = {self.experts_key: experts, "num_experts_per_tok": per_token}
        if self.extra == "qwen":
            size = int(base.get("intermediate_size") or 0)
            values.update(moe_intermediate_size=size, decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True)
            if self.shared_expert:
                # Without a shared expert model, a one-unit expert of zeros: adds exactly nothing.
                values["shared_expert_intermediate_size"] = size if shared else 1
        return values


_SAME = {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}
FORMS: tuple[MoeForm, ...] = (
    MoeForm("mixtral", "Mixtral", "mixtral", "MixtralForCausalLM", ("llama", "mistral"), "num_local_experts",
            {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}),
    MoeForm("qwen", "Qwen2-MoE", "qwen2_moe", "Qwen2MoeForCausalLM", ("qwen2", "llama", "mistral"), "num_experts",
            _SAME, shared_expert=True, extra="qwen"),
    MoeForm("qwen3", "Qwen3-MoE", "qwen3_moe", "Qwen3MoeForCausalLM", ("qwen3",), "num_experts", _SAME, extra="qwen"),
)
# The form each dense family gets by default (a shared expert asks for a form that has one).
_DEFAULT = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen", "qwen3": "qwen3"}


def supported_families() -> str:
    """A sentence part naming what can be assembled, for error messages and help."""
    return "Llama and Mistral (into Mixtral), Qwen2 (into Qwen2-MoE) and Qwen3 (into Qwen3-MoE)"


def moe_form_for(model_type: str | None, *, shared_experts: int = 0, architecture: str | None = None) -> MoeForm:
    """The MoE form for a base of ``model_type``; refuses families that have none, by name."""
    family = (model_type or "").lower()
    if family not in _DEFAULT:
        shown = model_type or "a model without a model_type"
        raise ArchitectureError(
            f"the base model is {shown}, a family with no mixture-of-experts form in transformers, "
            f"so no MoE can be assembled from it",
            hint=f"use a base (and experts) of a supported family: {supported_families()}",
        )
    if shared_experts > 1:
        raise ArchitectureError(f"{shared_experts} shared experts were given; at most one is supported")
    candidates = [f for f in FORMS if family in f.bases]
    if architecture:
        wanted = architecture.lower().replace("-", "").replace("_", "")
        candidates = [f for f in candidates if f.key.startswith(wanted) or f.model_type.replace("_", "").startswith(wanted)
                      or f.label.lower().replace("-", "").startswith(wanted)]
        if not candidates:
            raise ArchitectureError(f"a {family} base cannot become the architecture {architecture!r}",
                                    hint="leave 'architecture' out to get " + _default(family).label)
    if shared_experts:
        candidates = [f for f in candidates if f.shared_expert]
        if not candidates:
            raise ArchitectureError(
                f"a shared expert was given, but the MoE form of a {family} base has none",
                hint="leave out shared_experts, or use a Llama, Mistral or Qwen2 base (into Qwen2-MoE)",
            )
        return candidates[0]
    default = _default(family)
    return default if default in candidates else candidates[0]


def _default(family: str) -> MoeForm:
    return next(f for f in FORMS if f.key == _DEFAULT[family])


def moe_config(form: MoeForm, base: Mapping[str, Any], *, experts: int, per_token: int, shared: bool) -> dict[str, Any]:
    """The MoE's ``config.json``: the base's settings in the MoE architecture's config class."""
    from merge_studio.core.arch.hf import require_transformers

    require_transformers("assembling a mixture of experts")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if form.model_type not in CONFIG_MAPPING:
        raise ArchitectureError(f"the installed transformers does not know {form.label} ({form.model_type})",
                                hint="upgrade transformers")
    values = {k: copy.deepcopy(v) for k, v in base.items() if k not in _FILE_KEYS}
    values.update(form.config_values(base, experts, per_token, shared))
    try:
        config = CONFIG_MAPPING[form.model_type](**values)
    except Exception as exc:  # noqa: BLE001 - transformers' own words on a config it rejects
        raise ArchitectureError(f"cannot make a {form.label} config from the base's: {type(exc).__name__}: {exc}") from exc
    out = config.to_dict()
    out.pop("_name_or_path", None)
    out["architectures"] = [form.architecture]
    out["model_type"] = form.model_type
    return out


def saved_layout(
    config: Mapping[str, Any], *, as_saved: bool = True
) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The tensors ``save_pretrained`` writes for ``config`` (name -> shape), and tied names it leaves out.

    Built on the meta device: nothing is allocated, so a 47B Mixtral costs a fraction of a second.
    ``as_saved=False`` gives the in-memory names instead (transformers 5's fused experts,
    which it also loads; what mergekit-moe writes there).
    """
    import torch

    from merge_studio.core.arch.bind import tied_names
    from merge_studio.core.arch.hf import _skip_init, model_class

    transformers = require_transformers_module()
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    cfg = CONFIG_MAPPING[config["model_type"]].from_dict(
        {k: v for k, v in config.items() if k not in ("transformers_version",)})
    cls = model_class(cfg)
    try:
        with torch.device("meta"), _skip_init():
            module = cls(cfg)
    except Exception as exc:  # noqa: BLE001 - transformers' own words on a model it cannot build
        raise ArchitectureError(f"transformers {transformers.__version__} cannot build {cls.__name__} from the "
                                f"assembled config: {type(exc).__name__}: {exc}") from exc
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    tied = set(tied_names(module))
    state = {k: v for k, v in module.state_dict().items() if k not in tied}
    try:  # transformers 5: in-memory (fused) names -> the names written to disk
        from transformers.modeling_utils import revert_weight_conversion
    except ImportError:  # transformers 4 keeps the saved names in memory
        revert_weight_conversion = None
    if revert_weight_conversion is not None and as_saved:
        state = revert_weight_conversion(module, state)
    return {k: tuple(v.shape) for k, v in state.items()}, tied


def require_transformers_module() -> Any:
    from merge_studio.core.arch.hf import require_transformers

    return require_transformers("assembling a mixture of experts")


# --- what each output tensor is ---------------------------------------------------------------
@dataclass(frozen=True)
class TensorRole:
    """Where one output tensor comes from.

    ``kind``: ``"base"`` (copied from the base model), ``"expert"`` (expert ``expert``'s
    dense MLP projection ``projections[0]``), ``"fused_experts"`` (every expert's
    ``projections`` in turn, in one tensor), ``"router"``, ``"shared"`` (the shared
    expert's projection), ``"shared_gate"``.
    """

    kind: str
    layer: int | None = None
    expert: int | None = None
    projections: tuple[str, ...] = ()
    dense_name: str = ""  # the dense MLP tensor of that layer, "{prefix}mlp.{projection}.weight"


_LAYER = r"^(?P<pre>(?:.*\.)?layers\.(?P<layer>\d+)\.)"
_EXPERT = re.compile(_LAYER + r"\w+\.experts\.(?P<expert>\d+)\.(?P<proj>\w+)\.weight$")
_FUSED = re.compile(_LAYER + r"\w+\.experts\.(?P<proj>gate_up_proj|down_proj)$")
_ROUTER = re.compile(_LAYER + r"\w+\.gate\.weight$")
_SHARED = re.compile(_LAYER + r"\w+\.shared_experts?\.(?P<proj>\w+)\.weight$")
_SHARED_GATE = re.compile(_LAYER + r"\w+\.shared_expert_gate\.weight$")
DENSE_MLP = "mlp"  # the dense families' MLP module name
_FUSED_PARTS = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}


def tensor_role(form: MoeForm, name: str) -> TensorRole:
    """What output tensor ``name`` of ``form`` is made from (by its name in the saved layout)."""
    if m := _EXPERT.match(name):
        proj = m["proj"]
        dense = form.projections.get(proj)
        if dense is None:
            raise ArchitectureError(f"{form.label}'s expert tensor {name} has a projection ({proj}) "
                                    "this version of Merge Studio does not know", hint="please report this")
        return TensorRole("expert", int(m["layer"]), int(m["expert"]), (dense,),
                          f"{m['pre']}{DENSE_MLP}.{dense}.weight")
    if m := _FUSED.match(name):
        parts = _FUSED_PARTS[m["proj"]]
        return TensorRole("fused_experts", int(m["layer"]), None, parts, f"{m['pre']}{DENSE_MLP}.{{}}.weight")
    if m := _SHARED_GATE.match(name):
        return TensorRole("shared_gate", int(m["layer"]))
    if m := _SHARED.match(name):
        return TensorRole("shared", int(m["layer"]), None, (m["proj"],), f"{m['pre']}{DENSE_MLP}.{m['proj']}.weight")
    if m := _ROUTER.match(name):
        return TensorRole("router", int(m["layer"]))
    return TensorRole("base")


def is_dense_mlp(name: str) -> bool:
    """A base tensor the experts replace (the base's own MLP)."""
    return re.match(_LAYER + DENSE_MLP + r"\.", name) is not None
