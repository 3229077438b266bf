"""A small multi-task digits suite for tests: a base and one fine-tune per task, written once per session."""

from __future__ import annotations

from pathlib import Path

from merge_studio.core.evaluate.multitask import MultiTaskSuite, build_suite

SMALL_ARCH = "zoo:mlp?hidden=64"
SMALL_TASKS = ("rotated", "inverted", "mirrored")


def small_suite(folder: Path, names: tuple[str, ...] = SMALL_TASKS) -> MultiTaskSuite:
    """Three tasks on a 64-64-10 MLP; about a second to train."""
    return build_suite(folder, names, arch=SMALL_ARCH, base_steps=150, finetune_steps=150)
