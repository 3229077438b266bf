"""Pick the reader for a path, by what the file holds rather than only by its name.

A safetensors file renamed ``.bin`` still opens as safetensors, a Git LFS pointer
or an HTML page saved as ``.safetensors`` is named for what it is, and zip
archives go to the ``.pt2`` or the ``torch.save`` reader by their contents.
"""

from __future__ import annotations

import struct
from pathlib import Path

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.checkpoints.file_io import read_head, require_regular_file, sniff_not_a_checkpoint
from merge_studio.core.checkpoints.safetensors_reader import MAX_HEADER_BYTES, SafetensorsCheckpoint
from merge_studio.core.checkpoints.sharded_reader import open_folder, open_index
from merge_studio.core.fs_errors import input_error, missing_path_error
from merge_studio.errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SUPPORTED_SUFFIXES = (".safetensors", *TORCH_SUFFIXES, ".pt2", ".index.json")
PICKLE_PROTOCOL_MARK = 0x80


def looks_like_safetensors(head: bytes) -> bool:
    """A little-endian u64 header length that fits the cap, then a JSON object."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= MAX_HEADER_BYTES and head[8:].lstrip(b" \t\r\n")[:1] == b"{"


def _open_file(p: Path) -> Checkpoint:
    name = p.name.lower()
    if name.endswith(".index.json"):
        return open_index(p)
    require_regular_file(p)
    head = read_head(p)
    why = sniff_not_a_checkpoint(head)
    if why:
        raise CheckpointError(f"{p.name} is not a checkpoint: {why}", hint="fetch the real file")
    if looks_like_safetensors(head):
        return SafetensorsCheckpoint(p)
    # The torch-based readers are imported only for their files: listing a safetensors
    # checkpoint never loads torch.
    if head.startswith(ZIP_MAGIC):
        if p.suffix.lower() == ".pt2":
            from merge_studio.core.checkpoints.export_reader import ExportedProgramCheckpoint

            return ExportedProgramCheckpoint(p)
        from merge_studio.core.checkpoints.torch_reader import TorchCheckpoint

        return TorchCheckpoint(p)
    if p.suffix.lower() == ".safetensors":
        return SafetensorsCheckpoint(p)  # its own checks word the error precisely
    if p.suffix.lower() in TORCH_SUFFIXES:
        if head[0] != PICKLE_PROTOCOL_MARK and not _is_tar(head):
            raise CheckpointError(
                f"{p.name} is neither a zip archive nor a pickle, so not a PyTorch checkpoint "
                "(corrupt, or another format)",
                hint="re-download the file, or check which program wrote it",
            )
        from merge_studio.core.checkpoints.torch_reader import TorchCheckpoint

        return TorchCheckpoint(p)
    if p.suffix.lower() == ".pt2":
        raise CheckpointError(f"{p.name} is not a torch.export program (not a zip archive; corrupt?)")
    raise CheckpointError(
        f"{p.name}: unsupported file type {p.suffix or '(none)'}",
        hint=f"supported: {', '.join(SUPPORTED_SUFFIXES)} files, or a Hugging Face model folder",
    )


def _is_tar(head: bytes) -> bool:
    return len(head) > 262 and head[257:262] == b"ustar"


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint lazily; no tensor is read until asked.

    ``path`` is a file (``.safetensors``, ``.pt/.pth/.bin/.ckpt``, ``.pt2``), a
    shard index (``*.index.json``), a Hugging Face model folder, a LoRA adapter
    (a PEFT folder or a kohya file, opened as an adapter), or ``BASE+ADAPTER``: the
    adapter applied onto the base, read lazily (mergekit's syntax). Raises
    :class:`CheckpointError` with a readable message for anything that cannot
    be opened, and :class:`UnsafeCheckpointError` for files that would need to
    run code to load.
    """
    from merge_studio.core.lora.files import is_peft_folder, open_peft_folder, recognise_adapter  # imports this module

    p = Path(path).expanduser()
    try:
        is_dir = p.is_dir()
        exists = is_dir or p.exists()
    except OSError as exc:  # a name too long, a permission problem on the way
        raise input_error(exc, path) from exc
    if not exists:
        from merge_studio.core.lora.apply import open_adapted_path  # imports torch: only for "+" paths

        adapted = open_adapted_path(str(path))  # mergekit's "base+adapter"
        if adapted is not None:
            return adapted
        raise missing_path_error(p)
    try:
        if is_dir:
            return open_peft_folder(p) if is_peft_folder(p) else open_folder(p)
        return recognise_adapter(_open_file(p))
    except (OSError, RuntimeError) as exc:  # a folder we may not list, a link loop inside it
        if isinstance(exc, RuntimeError) and "symlink loop" not in str(exc).lower():
            raise
        raise input_error(exc, path) from exc
