"""Evaluation: data, the evaluation loop, interpolation sweeps and barriers (Qt-free)."""

from __future__ import annotations

from merge_studio.core.evaluate.barrier import BarrierReport, iter_barrier_comparison
from merge_studio.core.evaluate.curves import BarrierCurve, BarrierPoint, barrier_height
from merge_studio.core.evaluate.data import DataError, DataSpec, EvalData, TensorSplit, load_data
from merge_studio.core.evaluate.interpolate import iter_interpolation, iter_path_interpolation
from merge_studio.core.evaluate.loop import (
    EvalResult,
    ModelScores,
    evaluate,
    evaluate_models,
    iter_evaluate_models,
    reset_batchnorm,
)

__all__ = [
    "BarrierCurve",
    "BarrierPoint",
    "BarrierReport",
    "DataError",
    "DataSpec",
    "EvalData",
    "EvalResult",
    "ModelScores",
    "TensorSplit",
    "barrier_height",
    "evaluate",
    "evaluate_models",
    "iter_barrier_comparison",
    "iter_evaluate_models",
    "iter_interpolation",
    "iter_path_interpolation",
    "load_data",
    "reset_batchnorm",
]
