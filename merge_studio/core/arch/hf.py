"""Hugging Face architectures: a model folder's ``config.json`` names the module to build.

``hf:path/to/folder`` (or ``hf:path/to/config.json``) builds the class the config's
``architectures`` names (``LlamaForCausalLM``), else the causal-LM class transformers
maps its ``model_type`` to. Only classes that ship inside transformers are built:
a config asking for remote code is refused, never run. On the meta device nothing
is allocated and no initialiser runs, so a 70B config costs a few milliseconds.

Finding the config (:func:`hf_config_path`, :func:`hf_spec_for`) needs only the
standard library; building needs the ``hf`` extra, and says so when it is missing.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from merge_studio.core.arch.spec import ArchSpec
from merge_studio.errors import ArchitectureError, MissingExtraError

CONFIG_NAME = "config.json"
MAX_CONFIG_BYTES = 8_000_000
EXAMPLE_TOKENS = 16
# Published models have at most a few hundred layers; a config declaring more is damaged or
# hostile, and building it (even on the meta device) would run for hours.
MAX_LAYERS = 2048
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers", "encoder_layers",
                    "decoder_layers", "num_encoder_layers")
# Files a folder's weights are kept in: a weights file beside config.json belongs to it.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


def require_transformers(feature: str = "Hugging Face models") -> Any:
    """The ``transformers`` module, or a :class:`MissingExtraError` naming the ``hf`` extra."""
    try:
        import transformers
    except ImportError:
        raise MissingExtraError(feature, "transformers", "hf") from None
    return transformers


# --- finding and reading config.json (standard library only) ---------------------------------
def read_config_json(path: str | Path) -> dict[str, Any]:
    """A ``config.json`` as a dict; a damaged or oversized file is an :class:`ArchitectureError`."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ArchitectureError(f"{p} is {size} bytes, too large for a model config")
        data = json.loads(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ArchitectureError(f"{p} does not exist", hint="give a model folder that holds a config.json") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArchitectureError(f"{p} is not a valid JSON model config ({exc})") from exc
    except OSError as exc:
        raise ArchitectureError(f"cannot read {p}: {exc.strerror or exc}") from exc
    if not isinstance(data, dict):
        raise ArchitectureError(f"{p} is not a JSON object, so not a model config")
    return data


def hf_config_path(target: str | Path) -> Path:
    """The ``config.json`` an ``hf:`` target names: the file itself, or the one in (or beside) it."""
    p = Path(target).expanduser()
    if p.is_dir():
        return p / CONFIG_NAME
    if p.suffix.lower() == ".json" and not p.name.lower().endswith(".index.json"):
        return p
    return p.parent / CONFIG_NAME


def hf_spec_for(path: str | Path | None) -> str | None:
    """``hf:FOLDER`` for a Hugging Face folder, or a weights file beside its ``config.json``.

    Only a config naming a ``model_type`` counts (a ``config.json`` of another tool
    does not); whether transformers knows that type is checked when building.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        if not p.is_dir() and not p.name.lower().endswith(WEIGHT_SUFFIXES):
            return None
        config = hf_config_path(p)
        if not config.is_file():
            return None
        data = read_config_json(config)
    except (ArchitectureError, OSError):
        return None
    if not isinstance(data.get("model_type"), str) or not data["model_type"]:
        return None
    return f"hf:{config.parent.resolve()}"


# --- building ---------------------------------------------------------------------------------
def check_layer_counts(data: Mapping[str, Any], path: Path) -> None:
    """Refuse a config (or one of its sub-configs) that declares an impossible number of layers."""
    sections = [("", data)] + [(f"{k}.", v) for k, v in data.items() if isinstance(v, Mapping)]
    for prefix, section in sections:
        for key in LAYER_COUNT_KEYS:
            value = section.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not 0 <= value <= MAX_LAYERS:
                raise ArchitectureError(
                    f"{path} declares {prefix}{key} = {value}, not a layer count a model can have "
                    f"(0 to {MAX_LAYERS})",
                    hint="the config.json is damaged; use the one saved with the model",
                )


def load_hf_config(spec: ArchSpec) -> Any:
    """The transformers config of an ``hf:`` spec, with the spec's arguments as overrides."""
    transformers = require_transformers(f"architecture {spec}")
    path = hf_config_path(spec.target)
    data = read_config_json(path)
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ArchitectureError(f"{path} names no model_type, so transformers cannot build it",
                                hint="use the config.json saved with the model (save_pretrained writes one)")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ArchitectureError(
            f"transformers {transformers.__version__} does not know model_type {model_type!r} ({path})",
            hint="upgrade transformers, or give the architecture as a factory (--arch my_model.py:build)",
        )
    check_layer_counts(data, path)
    values = {k: v for k, v in data.items() if k not in ("auto_map", "transformers_version")}
    try:
        return CONFIG_MAPPING[model_type].from_dict(values, **spec.kwargs)
    except Exception as exc:  # noqa: BLE001 - a config transformers rejects, in its own words
        raise ArchitectureError(f"transformers cannot read {path}: {type(exc).__name__}: {exc}") from exc


def model_class(config: Any) -> type[nn.Module]:
    """The transformers class a config asks for (``architectures[0]``), else its causal-LM class."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, str(name), None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    for auto in (AutoModelForCausalLM, AutoModel):
        mapping = auto._model_mapping  # noqa: SLF001 - the public way to ask is to build
        if type(config) in mapping:
            return mapping[type(config)]
    raise ArchitectureError(
        f"transformers has no model class for {type(config).__name__} "
        f"(architectures: {getattr(config, 'architectures', None)})",
        hint="models that need their own remote code are not built; give a factory with --arch",
    )


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """Construct without running initialisers (weights are bound or never read)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


def build_hf_module(
    spec: ArchSpec, *, device: str | torch.device | None = None, initialise: bool = True
) -> nn.Module:
    """The module an ``hf:`` spec names, in eval mode with the KV cache off (we evaluate, not generate).

    ``device="meta"`` (or ``initialise=False``) skips the initialisers; tied weights
    are tied either way.
    """
    config = load_hf_config(spec)
    cls = model_class(config)
    on_meta = device is not None and torch.device(device).type == "meta"
    init = contextlib.nullcontext() if initialise and not on_meta else _skip_init()
    place = torch.device(device) if device is not None else contextlib.nullcontext()
    try:
        with place, init:
            module = cls(config)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build, in its words
        raise ArchitectureError(f"cannot build {cls.__name__} from {spec}: {type(exc).__name__}: {exc}") from exc
    if hasattr(module, "tie_weights"):
        module.tie_weights()  # skipped initialisers skip the tying too
    if getattr(module.config, "use_cache", None):
        module.config.use_cache = False
    return module.eval()


def hf_example_input(spec: ArchSpec, batch_size: int = 2) -> dict[str, Any]:
    """Token ids and a ready 4-D causal mask (so tracing on meta needs no data-dependent checks)."""
    config = load_hf_config(spec)
    vocab = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None)
    if not vocab:
        raise ArchitectureError(f"{spec} declares no vocab_size, so no token input can be made for it",
                                hint="only text models are traced from a config")
    tokens = EXAMPLE_TOKENS
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(vocab), (batch_size, tokens), generator=generator)
    mask = torch.full((tokens, tokens), torch.finfo(torch.float32).min).triu(1)
    return {"input_ids": ids, "attention_mask": mask.expand(batch_size, 1, tokens, tokens).contiguous(),
            "use_cache": False}


def config_summary(spec: ArchSpec) -> Mapping[str, Any]:
    """What a user reads about an HF architecture: type, layers, width, vocabulary."""
    data = read_config_json(hf_config_path(spec.target))
    keys = ("model_type", "architectures", "num_hidden_layers", "n_layer", "hidden_size", "n_embd", "vocab_size")
    return {k: data[k] for k in keys if k in data}
