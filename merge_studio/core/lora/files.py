"""Open adapters as checkpoints: a PEFT folder, its weights file, or a kohya LoRA file.

An opened adapter is an :class:`AdapterCheckpoint`: a lazy checkpoint of the
adapter's own tensors (so the inspector lists them like any file) that also
carries the :class:`~merge_studio.core.lora.adapter.LoraAdapter` description.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.lora.adapter import (
    CONFIG_NAME,
    WEIGHT_NAMES,
    LoraAdapter,
    kohya_adapter,
    looks_like_kohya,
    looks_like_peft,
    peft_adapter,
    read_peft_config,
)
from merge_studio.errors import CheckpointError

if TYPE_CHECKING:
    import torch


class AdapterCheckpoint(Checkpoint):
    """An adapter's tensors, with its description in ``adapter``."""

    def __init__(self, path: Path, inner: Checkpoint, adapter: LoraAdapter) -> None:
        super().__init__(path)
        self.inner = inner
        self.adapter = adapter
        self._infos = dict(inner.infos)
        self.metadata = {**inner.metadata, **adapter.summary_metadata()}
        self.format = adapter.kind_label

    def source_files(self) -> list[Path]:
        files = list(self.inner.source_files())
        config = self.path / CONFIG_NAME if self.path.is_dir() else None
        return ([config] if config is not None and config.is_file() else []) + files

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        return self.inner.get_tensor(name) if flat_range is None else self.inner.get_flat(name, *flat_range)

    def close(self) -> None:
        self.inner.close()


def is_peft_folder(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


def _open_weights(path: Path) -> Checkpoint:
    from merge_studio.core.checkpoints.registry import open_checkpoint

    return open_checkpoint(path)


def open_peft_folder(folder: Path) -> AdapterCheckpoint:
    """A folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``)."""
    config = read_peft_config(folder)
    weights = next((folder / n for n in WEIGHT_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(
            f"{folder.name} has an {CONFIG_NAME} but no {WEIGHT_NAMES[0]}",
            hint="copy the adapter's weights file into the folder",
        )
    inner = _open_weights(weights)
    try:
        return AdapterCheckpoint(folder, inner, peft_adapter(folder, inner, config))
    except BaseException:
        inner.close()
        raise


def recognise_adapter(checkpoint: Checkpoint) -> Checkpoint:
    """Wrap a just-opened file as an adapter when its tensor names say it is one."""
    names = checkpoint.keys()
    try:
        if looks_like_kohya(names):
            return AdapterCheckpoint(checkpoint.path, checkpoint, kohya_adapter(checkpoint.path, checkpoint))
        if looks_like_peft(names):
            folder = checkpoint.path.parent
            config = read_peft_config(folder) if is_peft_folder(folder) else {}
            return AdapterCheckpoint(checkpoint.path, checkpoint, peft_adapter(checkpoint.path, checkpoint, config))
    except BaseException:
        checkpoint.close()
        raise
    return checkpoint
