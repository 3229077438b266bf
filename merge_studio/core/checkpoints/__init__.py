"""Open any supported checkpoint lazily: ``open_checkpoint(path)``."""

from merge_studio.core.checkpoints.base import Checkpoint, CheckpointSummary, TensorInfo
from merge_studio.core.checkpoints.registry import SUPPORTED_SUFFIXES, open_checkpoint

__all__ = ["SUPPORTED_SUFFIXES", "Checkpoint", "CheckpointSummary", "TensorInfo", "open_checkpoint"]
