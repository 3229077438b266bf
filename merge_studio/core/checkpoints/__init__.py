"""Open any supported checkpoint lazily, see its module tree, check a set fits together."""

from merge_studio.core.checkpoints.base import Checkpoint, CheckpointSummary, TensorInfo
from merge_studio.core.checkpoints.compat import CompatibilityReport, check_compatibility
from merge_studio.core.checkpoints.keys import KeyNode, build_key_tree
from merge_studio.core.checkpoints.registry import SUPPORTED_SUFFIXES, open_checkpoint

KeyTree = KeyNode  # the tree is its root node

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Checkpoint",
    "CheckpointSummary",
    "CompatibilityReport",
    "KeyNode",
    "KeyTree",
    "TensorInfo",
    "build_key_tree",
    "check_compatibility",
    "load_exported_program",
    "open_checkpoint",
]


def __getattr__(name: str):  # noqa: ANN202
    """``load_exported_program`` imports torch, so it is loaded when first asked for."""
    if name == "load_exported_program":
        from merge_studio.core.checkpoints.export_reader import load_exported_program

        return load_exported_program
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
