"""Hugging Face folders: ``model.safetensors.index.json`` (or ``pytorch_model.bin.index.json``)
plus shards, or a folder holding one ``model.safetensors`` / ``pytorch_model.bin``.

The index is untrusted like any file: every shard name must be one plain file
name inside the folder (no ``../``, no absolute path), every shard must exist,
and every tensor the index assigns to a shard must really be in that shard.
Opening reads only the index and each shard's header (``.bin`` shards: their
pickle, onto the ``meta`` device); tensor data is read on demand.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.checkpoints.file_io import require_regular_file
from merge_studio.core.checkpoints.safetensors_reader import SafetensorsCheckpoint
from merge_studio.core.progress import CancelToken
from merge_studio.errors import CheckpointError

if TYPE_CHECKING:
    import torch

MAX_INDEX_BYTES = 64_000_000
SHARD_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# What a Hugging Face folder may hold, most preferred first.
FOLDER_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
FOLDER_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
MAX_LISTED = 5


def _shard_opener(name: str) -> Callable[[Path], Checkpoint]:
    if name.endswith(".safetensors"):
        return SafetensorsCheckpoint
    from merge_studio.core.checkpoints.torch_reader import TorchCheckpoint  # imports torch

    return TorchCheckpoint


def check_shard_name(value: object, index: Path) -> str:
    """Refuse shard names that could leave the folder or are not checkpoint files."""
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"{index.name}: a weight_map entry is {value!r}, not a file name")
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if (
        "\x00" in value
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or len(posix.parts) != 1
        or len(windows.parts) != 1
        or value in (".", "..")
    ):
        raise CheckpointError(
            f"{index.name} names shard {value!r}, which is outside the model folder; "
            "shards must be plain file names next to the index",
            hint="this index is damaged or crafted; do not use it",
        )
    if not value.endswith(SHARD_SUFFIXES):
        raise CheckpointError(f"{index.name} names shard {value!r}, which is not a checkpoint file")
    return value


def read_index(index: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Parse an index: ``(tensor name -> shard file name, metadata)``."""
    size = require_regular_file(index)
    if size > MAX_INDEX_BYTES:
        raise CheckpointError(f"{index.name} is {size} bytes, too large for a shard index")
    try:
        data = json.loads(index.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{index.name} is not a valid JSON shard index ({exc})") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {index}: {exc.strerror or exc}") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index.name} has no weight_map (is it a shard index?)")
    names = {str(k): check_shard_name(v, index) for k, v in weight_map.items()}
    raw_meta = data.get("metadata") or {}
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    return names, metadata


def _listed(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:MAX_LISTED])
    return shown + (f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


class ShardedCheckpoint(Checkpoint):
    """Several shard files read as one checkpoint (named after their folder)."""

    def __init__(self, folder: Path, shard_of: dict[str, str] | None, shard_files: list[str],
                 metadata: dict[str, str] | None = None, index: Path | None = None) -> None:
        super().__init__(folder)
        self.index_path = index
        self._shards: dict[str, Checkpoint] = {}
        self._where: dict[str, Checkpoint] = {}
        suffixes = {Path(s).suffix for s in shard_files}
        self.format = "safetensors" if suffixes == {".safetensors"} else "pytorch"
        if len(shard_files) > 1:
            self.format = f"sharded {self.format}"
        try:
            self._open_shards(shard_of, shard_files)
        except BaseException:
            self.close()
            raise
        self.metadata = {**self.metadata, **(metadata or {})}
        self.metadata["shards"] = str(len(shard_files))

    def _open_shards(self, shard_of: dict[str, str] | None, shard_files: list[str]) -> None:
        label = self.index_path.name if self.index_path else self.path.name
        # A FIFO or a device "exists" but is no file: the shard opener names it for what it is.
        missing_files = [s for s in shard_files if not (self.path / s).exists()]
        if missing_files:
            raise CheckpointError(
                f"{label} names shard {_listed(missing_files)}, which is not in {self.path}",
                hint="download every shard of the model into the same folder",
            )
        for shard_name in shard_files:
            shard = _shard_opener(shard_name)(self.path / shard_name)
            self._shards[shard_name] = shard
            if not self.metadata:
                self.metadata = dict(shard.metadata)
        _refuse_names_in_two_shards(self._shards, label)
        wanted: dict[str, list[str]] = {s: [] for s in shard_files}
        if shard_of is not None:
            for tensor, shard in shard_of.items():
                wanted[shard].append(tensor)
        unindexed: list[str] = []
        for shard_name, shard in self._shards.items():
            if shard_of is None:
                names = shard.keys()
            else:
                absent = [t for t in wanted[shard_name] if t not in shard]
                if absent:
                    raise CheckpointError(
                        f"{label} says {_listed(absent)} are in {shard_name}, but that shard does "
                        "not hold them (the index and the shards disagree)",
                        hint="the shards may come from a different download or revision; fetch them again",
                    )
                names = [n for n in shard.keys() if shard_of.get(n) == shard_name]
                unindexed += [n for n in shard.keys() if n not in shard_of]
            for name in names:
                self._where[name] = shard
                self._infos[name] = shard.info(name)
        if unindexed:
            self.metadata["unindexed_tensors"] = _listed(unindexed)

    def watch(self, cancel: CancelToken | None) -> None:
        super().watch(cancel)
        for shard in self._shards.values():
            shard.watch(cancel)

    def source_files(self) -> list[Path]:
        files = [s.path for s in self._shards.values()]
        return ([self.index_path] if self.index_path else []) + files

    def shard_of(self, name: str) -> Path:
        """The file holding a tensor."""
        return self._where[name].path

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        shard = self._where[name]
        if flat_range is None:
            return shard.get_tensor(name)
        return shard.get_flat(name, *flat_range)

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()


def _refuse_names_in_two_shards(shards: dict[str, Checkpoint], label: str) -> None:
    """No tensor name may be held by two shards: which copy a loader uses would be an accident."""
    holder: dict[str, str] = {}
    clashes: list[str] = []
    for shard_name, shard in shards.items():
        for name in shard.keys():
            first = holder.setdefault(name, shard_name)
            if first != shard_name:
                clashes.append(f"{name!r} is in both {first} and {shard_name}")
    if clashes:
        more = f" … and {len(clashes) - MAX_LISTED} more" if len(clashes) > MAX_LISTED else ""
        raise CheckpointError(
            f"{label}: tensor {'; '.join(clashes[:MAX_LISTED])}{more}; a tensor must be in one shard only",
            hint="the folder mixes shards of different saves or revisions; fetch the model again",
        )


def open_index(index: Path) -> ShardedCheckpoint:
    """Open the shards an index names (the checkpoint is named after their folder)."""
    shard_of, metadata = read_index(index)
    shard_files = sorted(set(shard_of.values()))
    return ShardedCheckpoint(index.parent, shard_of, shard_files, metadata, index=index)


def open_folder(folder: Path) -> Checkpoint:
    """Open a Hugging Face model folder: its index, else its single weights file."""
    for name in FOLDER_INDEXES:
        if (folder / name).is_file():
            return open_index(folder / name)
    for name in FOLDER_SINGLE_FILES:
        if (folder / name).is_file():
            return ShardedCheckpoint(folder, None, [name])
    indexes = sorted(p.name for p in folder.glob("*.index.json") if p.is_file())
    if len(indexes) == 1:
        return open_index(folder / indexes[0])
    weights = sorted(p.name for p in folder.glob("*.safetensors") if p.is_file())
    if len(weights) == 1:
        return ShardedCheckpoint(folder, None, weights)
    found = ", ".join(indexes + weights) if indexes or weights else "no checkpoint file"
    raise CheckpointError(
        f"{folder} holds no model the app can pick on its own ({found})",
        hint="choose the .safetensors file or the .index.json file itself",
    )
