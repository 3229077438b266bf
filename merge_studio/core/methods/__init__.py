"""Merge methods, each declared once (see :mod:`merge_studio.core.methods.spec`)."""

from merge_studio.core.methods.registry import get_method, list_methods, register_method
from merge_studio.core.methods.spec import (
    MethodParams,
    MethodSpec,
    ModelParams,
    NoModelParams,
    TensorContext,
    ui,
)

__all__ = [
    "MethodParams",
    "MethodSpec",
    "ModelParams",
    "NoModelParams",
    "TensorContext",
    "get_method",
    "list_methods",
    "register_method",
    "ui",
]
