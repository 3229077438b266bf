"""Small, careful file helpers shared by the readers.

Every reader reads tensor bytes with positional reads (``os.preadv``) into fresh
tensor memory: a file truncated while open raises an error instead of SIGBUS,
pages we are done with leave our resident set, and several threads may read one
file at once without sharing a file position.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy

from merge_studio.core.lazy_torch import torch
from merge_studio.core.progress import CancelToken
from merge_studio.errors import CheckpointError


def require_regular_file(path: Path) -> int:
    """Return the file size, refusing things that are not plain files.

    A FIFO would hang the reader and ``/dev/zero`` never ends, so only regular
    files (symlinks to them included: Hugging Face caches are made of symlinks)
    are opened.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path.name} is a folder, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{path.name} is not a regular file (a pipe or a device?)")
    if st.st_size == 0:
        raise CheckpointError(
            f"{path.name} is empty (0 bytes)", hint="the download or copy did not finish; fetch it again"
        )
    return st.st_size


def read_head(path: Path, count: int = 512) -> bytes:
    """The first ``count`` bytes of a file (for sniffing its format)."""
    try:
        with path.open("rb") as f:
            return f.read(count)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc


def sniff_not_a_checkpoint(head: bytes) -> str | None:
    """Recognise files that are commonly mistaken for checkpoints, and say what they are."""
    text = head.lstrip()[:64].lower()
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the model data (run `git lfs pull` in the repository)"
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head")):
        return "it is a web page, not a model (the download probably failed or needed a login)"
    if text.startswith(b"{") and b'"weight_map"' in head:
        return "it is a shard index; open the .index.json file or its folder instead"
    return None


READ_SLICE = 64 << 20  # bytes per read call: a huge tensor is read in pieces a cancel can stop between


def pread_bytes(fd: int, offset: int, nbytes: int, label: str, cancel: CancelToken | None = None) -> torch.Tensor:
    """Read ``nbytes`` at ``offset`` into a new ``uint8`` tensor.

    Reads at most :data:`READ_SLICE` bytes per call and checks ``cancel`` between
    them, so reading a many-gigabyte tensor (or a sparse file of zeros) can be stopped.
    """
    if nbytes == 0:
        return torch.empty(0, dtype=torch.uint8)
    # numpy's plain malloc, not torch.empty: torch asks glibc for 64-byte-aligned blocks, which it
    # cannot carve from a freed block of the same size, so the heap grew, was trimmed and every
    # read of a whole tensor faulted in fresh zeroed pages (17% of a TIES merge's CPU time)
    array = numpy.empty(nbytes, numpy.uint8)
    buf = torch.from_numpy(array)
    view = memoryview(array)
    got = 0
    while got < nbytes:
        if cancel is not None and got:
            cancel.raise_if_cancelled()
        try:
            n = os.preadv(fd, [view[got:got + READ_SLICE]], offset + got)
        except OSError as exc:
            raise CheckpointError(f"{label}: read failed ({exc.strerror or exc})") from exc
        if n <= 0:
            raise CheckpointError(f"{label}: file ended early (truncated while open?)")
        got += n
    return buf


def pread_tensor(
    fd: int, offset: int, nbytes: int, dtype: torch.dtype, shape: tuple[int, ...], label: str,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Read ``nbytes`` at ``offset`` into a new tensor of ``dtype`` and ``shape``."""
    return pread_bytes(fd, offset, nbytes, label, cancel).view(dtype).reshape(shape)


class LazyFile:
    """A read-only file descriptor opened on first use and shared by threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def fd(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(self.path, os.O_RDONLY)
                except OSError as exc:
                    raise CheckpointError(f"cannot open {self.path}: {exc.strerror}") from exc
            return self._fd

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def strided_extent(shape: tuple[int, ...], stride: tuple[int, ...]) -> int:
    """Elements a strided tensor spans in its storage (0 when it is empty)."""
    if any(d == 0 for d in shape):
        return 0
    return 1 + sum((d - 1) * s for d, s in zip(shape, stride))


def is_c_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether elements lie in row-major order with no gaps (so a flat range is one read)."""
    expected = 1
    for d, s in zip(reversed(shape), reversed(stride)):
        if d != 1 and s != expected:
            return False
        expected *= d
    return True


def read_strided(
    fd: int,
    storage_at: int,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    storage_offset: int,
    flat_range: tuple[int, int] | None,
    label: str,
    swap_bytes: bool = False,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Read a tensor stored as a strided view of a storage starting at byte ``storage_at``.

    Reads only the bytes the tensor spans (or, for a contiguous tensor and a flat
    range, only that range) and returns a contiguous tensor of its own.
    """
    size = torch.empty((), dtype=dtype).element_size()

    def typed(raw: torch.Tensor) -> torch.Tensor:
        if swap_bytes and raw.numel():
            raw.untyped_storage().byteswap(dtype)
        return raw.view(dtype)

    if flat_range is not None and is_c_contiguous(shape, stride):
        start, stop = flat_range
        count = max(0, stop - start)
        return typed(pread_bytes(fd, storage_at + (storage_offset + start) * size, count * size, label, cancel))
    span = strided_extent(shape, stride)
    if span == 0:
        whole = torch.empty(shape, dtype=dtype)
    else:
        flat = typed(pread_bytes(fd, storage_at + storage_offset * size, span * size, label, cancel))
        whole = flat.as_strided(shape, stride).contiguous()
    if flat_range is None:
        return whole
    return whole.reshape(-1)[flat_range[0]:flat_range[1]].clone()
