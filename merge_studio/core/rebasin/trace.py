"""Turn a module into an fx graph with the shape of every value recorded.

Two ways in: ``torch.fx`` symbolic tracing (module calls stay visible, attention
modules can be kept whole), and, for models torch.fx cannot follow (Hugging Face
models build caches and masks with Python logic), ``torch.export`` in non-strict
mode, whose ATen graph the ATen rules read. Shapes are recorded by running the
graph once on the example input with a small interpreter: torch's own ShapeProp
imports sympy on first use, which alone took a second.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from merge_studio.core.rebasin.module_rules import is_attention_module
from merge_studio.errors import ArchitectureError


class ShapeMeta(NamedTuple):
    """What the graph walk needs to know about a value: its shape and dtype."""

    shape: torch.Size
    dtype: torch.dtype


class _Tracer(fx.Tracer):
    """Keeps attention modules whole so the heads rule applies to them."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_attention_module(m) or super().is_leaf_module(m, module_qualified_name)


def as_args(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def primary_input(example_input: Any) -> Any:
    """What data batches stand in for: the example itself, or the first tensor of a keyword example.

    Architecture providers may give keyword examples (a language model's token ids with
    a ready attention mask); alignment feeds models plain batches of the data, so it
    traces and checks them with that one tensor, passed first (``input_ids``).
    """
    if isinstance(example_input, Mapping):
        for value in example_input.values():
            if isinstance(value, torch.Tensor):
                return value
    return example_input


def set_mode(module: nn.Module, training: bool) -> None:
    """``train``/``eval`` where allowed (exported programs refuse both and always run as exported)."""
    try:
        module.train(training)
    except NotImplementedError:
        pass


def fx_trace(module: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``module``; failures become an :class:`ArchitectureError`."""
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - tracing raises many kinds of errors
        raise ArchitectureError(
            f"cannot trace {type(module).__name__} to find its permutations: {exc}",
            hint="the model's forward must be traceable by torch.fx (no Python control flow on tensor values)",
        ) from exc
    return fx.GraphModule(module, graph)


def _no_cache_kwargs(module: nn.Module) -> dict[str, Any]:
    """``use_cache=False`` for forwards that take it (language models would otherwise return a cache)."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


EXTRA_ARGS = "merge_studio_extra_args"  # gm.meta key: flat inputs after the example input (keyword arguments)


def _dynamic_shapes(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Batch (and, for token ids, sequence) sizes left free, so the graph runs on batches of any size."""
    try:
        names = list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return None
    if len(names) < len(args) or any(names[i] in ("args", "kwargs") for i in range(len(args))):
        return None
    out: dict[str, Any] = {}
    for name, value in [*zip(names, args, strict=False), *kwargs.items()]:
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            dims = {0: torch.export.Dim.AUTO}
            if value.dim() == 2 and not value.is_floating_point():
                dims[1] = torch.export.Dim.AUTO  # token ids: sequences of any length
            out[name] = dims
        else:
            out[name] = None
    return out


def export_graph(module: nn.Module, example_input: Any) -> fx.GraphModule:
    """The flat ATen graph of ``module`` from ``torch.export`` (non-strict), for models fx cannot trace.

    Batch sizes (and token sequence lengths) are exported as free sizes where torch
    allows, so activations can be read on data batches of any size; otherwise the
    graph is fixed to the example's shapes.
    """
    was_training = module.training
    set_mode(module, False)
    args, kwargs = as_args(example_input), _no_cache_kwargs(module)
    try:
        try:
            program = torch.export.export(module, args, kwargs, dynamic_shapes=_dynamic_shapes(module, args, kwargs),
                                          strict=False)
        except Exception:  # noqa: BLE001 - some models only export with fixed shapes
            program = torch.export.export(module, args, kwargs, strict=False)
    finally:
        set_mode(module, was_training)
    gm = program.module()
    gm.meta[EXTRA_ARGS] = tuple(kwargs.values())
    return gm


def fixed_batch_size(gm: fx.GraphModule) -> int | None:
    """The batch size an exported graph was fixed to (``None`` when it takes any)."""
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None and len(shape) >= 1:
                return int(shape[0]) if isinstance(shape[0], int) else None
            return None
    return None


def graph_args(gm: fx.GraphModule, example_input: Any) -> tuple[Any, ...]:
    """The graph's flat inputs for a model input: the input, then any keyword values the export fixed."""
    return as_args(example_input) + tuple(getattr(gm, "meta", {}).get(EXTRA_ARGS, ()))


def graph_module(module: nn.Module, example_input: Any) -> fx.GraphModule:
    """The graph to walk: the module itself when it already is one, else fx tracing, else export."""
    if type(module).__name__ == "UnflattenedModule":
        raise ArchitectureError(
            "an unflattened exported program hides its graph behind submodule calls",
            hint="trace the flat program instead: torch.export.load(path).module()",
        )
    example_input = primary_input(example_input)
    if isinstance(module, fx.GraphModule):
        return module
    try:
        return fx_trace(module)
    except ArchitectureError as fx_error:
        try:
            return export_graph(module, example_input)
        except Exception as exc:  # noqa: BLE001 - export raises many kinds of errors
            raise ArchitectureError(
                f"cannot trace {type(module).__name__} to find its permutations: torch.fx failed "
                f"({fx_error.message.split(': ', 1)[-1]}) and torch.export failed ({type(exc).__name__}: {str(exc)[:200]})",
                hint="the model's forward must be traceable by torch.fx or torch.export",
            ) from exc


def _shape_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ShapeMeta(value.shape, value.dtype)
    if isinstance(value, (tuple, list)):
        parts = [_shape_meta(v) for v in value]
        return parts if any(p is not None for p in parts) else None  # sizes and other plain values: none
    return None


class _ShapeRecorder(fx.Interpreter):
    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        n.meta["tensor_meta"] = _shape_meta(result)
        return result


def record_shapes(gm: fx.GraphModule, module: nn.Module, example_input: Any) -> None:
    """Run ``gm`` once in eval mode on the example input, storing each node's shape in ``meta``."""
    example_input = primary_input(example_input)
    was_training = module.training
    set_mode(gm, False)
    try:
        with torch.no_grad():
            _ShapeRecorder(gm).run(*graph_args(gm, example_input))
    except Exception as exc:  # noqa: BLE001
        raise ArchitectureError(
            f"running {type(module).__name__} on its example input failed: {exc}",
            hint="check that the example input fits the model",
        ) from exc
    finally:
        set_mode(gm, was_training)
        set_mode(module, was_training)
