"""User factories: ``path/to/file.py:build`` and ``package.module:build``.

Loading a factory file **runs that Python file**, exactly like ``python file.py``
would. That is intended: the user picked their own model code (in the GUI's file
picker or on the command line). Never point it at files you do not trust.

A factory returns an ``nn.Module`` or ``(module, example_input)``. The example input
comes, in this order, from a sibling ``example_input(**kwargs)`` function (it may
take ``batch_size`` and the factory's arguments), from the factory's own pair, or
from a module attribute ``example_input_shape`` giving the shape of ONE sample (no
batch dimension), for which random floats of ``(batch_size, *shape)`` are used.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from merge_studio.core.arch.spec import ArchSpec
from merge_studio.errors import ArchitectureError

_LOADED_FILES: dict[tuple[str, int], ModuleType] = {}


def load_factory_module(spec: ArchSpec) -> ModuleType:
    """Import the module that holds the factory (a file by path, or a dotted module)."""
    if spec.kind == "module":
        try:
            return importlib.import_module(spec.target)
        except Exception as exc:
            raise ArchitectureError(
                f"cannot import module {spec.target!r} for architecture {spec}: {exc}",
                hint="check that the package is installed in this Python environment",
            ) from exc
    path = Path(spec.target).expanduser().resolve()
    if not path.is_file():
        raise ArchitectureError(
            f"factory file {spec.target} does not exist", hint="pick the .py file that defines your model"
        )
    key = (str(path), path.stat().st_mtime_ns)
    if key in _LOADED_FILES:
        return _LOADED_FILES[key]
    # A unique name per path keeps two user files called model.py apart.
    name = "merge_studio_user_arch_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ArchitectureError(f"cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ArchitectureError(
            f"running factory file {path.name} failed: {type(exc).__name__}: {exc}",
            hint="fix the error in your model file (it is run as Python to build the model)",
        ) from exc
    _LOADED_FILES[key] = module
    return module


def _function(module: ModuleType, spec: ArchSpec) -> Callable[..., Any]:
    function = getattr(module, spec.function or "", None)
    if not callable(function):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ArchitectureError(
            f"{spec.target} has no function {spec.function!r}",
            hint=f"functions found: {', '.join(available[:12]) or 'none'}",
        )
    return function


def _accepted(function: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``function`` accepts (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


def call_factory(spec: ArchSpec, kwargs: Mapping[str, Any]) -> tuple[nn.Module, Any]:
    """Build the module; returns ``(module, example_input_or_None)``."""
    function = _function(load_factory_module(spec), spec)
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError as exc:
        raise ArchitectureError(
            f"{spec.function}() in {spec.target} does not accept {sorted(kwargs)}: {exc}",
            hint=f"its signature is {spec.function}{inspect.signature(function)}",
        ) from exc
    try:
        result = function(**kwargs)
    except Exception as exc:
        raise ArchitectureError(
            f"{spec.function}() in {spec.target} failed: {type(exc).__name__}: {exc}",
            hint="fix the factory; it must return an nn.Module",
        ) from exc
    example = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, example = result
    if not isinstance(result, nn.Module):
        raise ArchitectureError(
            f"{spec.function}() in {spec.target} returned {type(result).__name__}, not an nn.Module",
            hint="return the model (or a (model, example_input) pair)",
        )
    return result, example


def factory_example_input(spec: ArchSpec, kwargs: Mapping[str, Any], batch_size: int) -> Any:
    """The factory's example input, from ``example_input()`` or ``example_input_shape``."""
    module = load_factory_module(spec)
    maker = getattr(module, "example_input", None)
    if callable(maker):
        extra = {**kwargs, "batch_size": batch_size}
        try:
            return maker(**_accepted(maker, extra))
        except Exception as exc:
            raise ArchitectureError(
                f"example_input() in {spec.target} failed: {type(exc).__name__}: {exc}"
            ) from exc
    _, example = call_factory(spec, kwargs)
    if example is not None:
        return example
    shape = getattr(module, "example_input_shape", None)
    if shape is not None:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(batch_size, *(int(s) for s in shape), generator=generator)
    raise ArchitectureError(
        f"{spec} gives no example input, so its graph cannot be traced",
        hint="add example_input() or example_input_shape = (C, H, W) beside the factory, "
        "or return (model, example_input)",
    )
