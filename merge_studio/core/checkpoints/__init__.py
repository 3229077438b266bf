"""Open any supported checkpoint lazily, see its module tree, check a set fits together."""

from merge_studio.core.checkpoints.base import Checkpoint, CheckpointSummary, TensorInfo
from merge_studio.core.checkpoints.compat import CompatibilityReport, check_compatibility
from merge_studio.core.checkpoints.export_reader import load_exported_program
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
