"""Merge Studio: merge neural-network checkpoints and see whether the merge worked."""

__version__ = "0.1.0"
