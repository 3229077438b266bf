"""``.safetensors`` reader with every check of the reference reader, plus readable errors.

We parse the header ourselves (so duplicate names are refused and the messages
say what is wrong in words) and read tensor bytes with positional reads
(``os.preadv``) straight into tensor memory. Positional reads go through the
same page cache as a memory map, but pages we are done with do not stay in our
resident set, a truncated file raises an error instead of SIGBUS, and a 70 GB
file does not need 70 GB of address space: memory stays flat whatever the model
size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.checkpoints.file_io import (
    LazyFile,
    pread_tensor,
    require_regular_file,
    sniff_not_a_checkpoint,
)
from merge_studio.core.dtypes import SAFETENSORS_NAMES, element_size
from merge_studio.errors import CheckpointError

MAX_HEADER_BYTES = 100_000_000  # the reference reader's cap


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise CheckpointError(f"the header names tensor {key!r} twice")
        seen[key] = value
    return seen


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], int, dict[str, tuple[int, int]]]:
    """Parse and validate a safetensors header.

    Returns the tensor infos (file order), the metadata, the byte offset where the
    data buffer starts, and each tensor's absolute byte range.
    """
    size = require_regular_file(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path.name}: file is too short to be safetensors ({size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > MAX_HEADER_BYTES or header_len + 8 > size:
                f.seek(0)
                head = f.read(512)
                why = sniff_not_a_checkpoint(head) or (
                    "it is a zip archive (a PyTorch .pt file?)" if head.startswith(b"PK\x03\x04") else None
                )
                if why:
                    raise CheckpointError(f"{path.name} is not a safetensors file: {why}")
                raise CheckpointError(
                    f"{path.name}: header length {header_len} does not fit in a "
                    f"{size}-byte file (truncated or not safetensors)",
                    hint="re-download or re-export the file",
                )
            raw = f.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path.name}: header is not UTF-8 text (corrupt file)") from exc
    if not text.lstrip().startswith("{"):
        raise CheckpointError(f"{path.name}: header is not a JSON object (corrupt file)")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except CheckpointError as exc:
        raise CheckpointError(f"{path.name}: {exc.message}") from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path.name}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path.name}: __metadata__ must map strings to strings")

    data_start = 8 + header_len
    infos: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        infos[name], span = _parse_entry(path, name, entry)
        spans.append((*span, name))

    # Offsets must tile the data buffer exactly: no overlap, no hole, nothing after.
    expected = 0
    for begin, end, name in sorted(spans):
        if begin != expected:
            raise CheckpointError(
                f"{path.name}: tensor {name!r} starts at byte {begin}, expected {expected} "
                "(overlapping or missing data)"
            )
        expected = end
    if data_start + expected != size:
        missing = data_start + expected - size
        if missing > 0:
            declared, held = expected, size - data_start
            if declared > 100 * max(held, 1) and missing > 1 << 30:
                # Not what an interrupted copy looks like: the offsets themselves are wrong.
                raise CheckpointError(
                    f"{path.name}: its header places {declared:,} bytes of tensor data in a file that "
                    f"holds {held:,}; the tensor offsets are out of range (a damaged or crafted header)",
                    hint="do not use this file; fetch or export it again",
                )
            last = max(spans)[2] if spans else "?"
            raise CheckpointError(
                f"{path.name} is {missing:,} bytes shorter than its header says (tensor data up to "
                f"{last!r} should end at byte {data_start + declared:,}; the file ends at {size:,}): "
                "it is truncated, or its header is wrong",
                hint="if the download or copy was interrupted, fetch the file again",
            )
        raise CheckpointError(f"{path.name}: {-missing} unexpected bytes after the tensor data")
    ranges = {name: (data_start + b, data_start + e) for b, e, name in spans}
    return infos, metadata, data_start, ranges


def _parse_entry(path: Path, name: str, entry: Any) -> tuple[TensorInfo, tuple[int, int]]:
    where = f"{path.name}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: header entry is not an object")
    dtype = SAFETENSORS_NAMES.get(entry.get("dtype"))  # type: ignore[arg-type]
    if dtype is None:
        raise CheckpointError(f"{where}: unsupported dtype {entry.get('dtype')!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise CheckpointError(f"{where}: invalid data_offsets {offsets!r}")
    info = TensorInfo(name, tuple(shape), dtype)
    if offsets[1] - offsets[0] != info.nbytes:
        raise CheckpointError(
            f"{where}: {offsets[1] - offsets[0]} bytes stored but shape {tuple(shape)} "
            f"of {info.dtype_name} needs {info.nbytes}"
        )
    return info, (offsets[0], offsets[1])


class SafetensorsCheckpoint(Checkpoint):
    """One ``.safetensors`` file."""

    format = "safetensors"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._infos, self.metadata, _, self._ranges = read_safetensors_header(self.path)
        self._file = LazyFile(self.path)

    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        info = self._infos[name]
        begin, _end = self._ranges[name]
        label = f"{self.name}:{name}"
        if flat_range is None:
            return pread_tensor(self._file.fd(), begin, info.nbytes, info.dtype, info.shape, label, self.cancel)
        start, stop = flat_range
        size = element_size(info.dtype)
        count = max(0, stop - start)
        return pread_tensor(self._file.fd(), begin + start * size, count * size, info.dtype, (count,), label, self.cancel)

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()
