"""Check a zip archive (PyTorch ``.pt`` files, ``.pt2`` programs) before anything unpacks it.

PyTorch writes the records it reads back uncompressed (``STORED``). A record
that claims more bytes than the file holds, or whose local header is damaged,
is refused here; :func:`refuse_compressed` refuses compressed records before
anything inflates them. Together they rule out decompression bombs and reads
past a record's end (which ``torch.load(mmap=True)`` would otherwise allow).
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from merge_studio.errors import CheckpointError

MAX_RECORDS = 2_000_000
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_LOCAL_SIGNATURE = 0x04034B50


@dataclass(frozen=True)
class ZipRecord:
    """One stored record: where its bytes start in the file and how many there are."""

    name: str
    data_offset: int
    size: int  # bytes stored in the file
    compressed: bool = False


def read_zip_records(source: Path | bytes, label: str) -> dict[str, ZipRecord]:
    """List an archive's records after checking each lies inside the file, uncompressed.

    ``source`` is a path or the archive's bytes (for archives nested in a ``.pt2``).
    Raises :class:`CheckpointError` naming ``label`` for anything suspicious.
    """
    try:
        if isinstance(source, Path):
            with source.open("rb") as f:
                return _scan(f, f.seek(0, io.SEEK_END), label)
        return _scan(io.BytesIO(source), len(source), label)
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"cannot read {label}: {exc.strerror or exc}") from exc


def _scan(f: BinaryIO, size: int, label: str) -> dict[str, ZipRecord]:
    try:
        f.seek(0)
        archive = zipfile.ZipFile(f)
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
            NotImplementedError, OverflowError, struct.error, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{label} is not a readable zip archive ({exc or type(exc).__name__}); "
            "the file is truncated or corrupt",
            hint="re-download or re-save the file",
        ) from exc
    if len(entries) > MAX_RECORDS:
        raise CheckpointError(f"{label}: archive lists {len(entries)} records, more than any model needs")
    records: dict[str, ZipRecord] = {}
    for entry in entries:
        name = entry.filename
        if name in records:
            raise CheckpointError(f"{label}: archive holds record {name!r} twice")
        compressed = entry.compress_type != zipfile.ZIP_STORED
        if not compressed and entry.file_size != entry.compress_size:
            raise CheckpointError(f"{label}: record {name!r} declares two different sizes")
        if entry.header_offset + _LOCAL_HEADER.size > size:
            raise CheckpointError(f"{label}: record {name!r} starts past the end of the file (truncated?)")
        f.seek(entry.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
        fields = _LOCAL_HEADER.unpack(raw)
        if fields[0] != _LOCAL_SIGNATURE:
            raise CheckpointError(f"{label}: record {name!r} has a damaged header (corrupt file)")
        name_len, extra_len = fields[9], fields[10]
        data_offset = entry.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        if data_offset + entry.compress_size > size:
            raise CheckpointError(
                f"{label}: record {name!r} claims {entry.compress_size} bytes but the file ends "
                f"{max(0, size - data_offset)} bytes after it starts (truncated or crafted)",
                hint="re-download or re-save the file",
            )
        records[name] = ZipRecord(name, data_offset, entry.compress_size, compressed)
    return records


def refuse_compressed(records: dict[str, ZipRecord], label: str) -> None:
    """PyTorch never compresses the records it reads back; a compressed one is a repacked
    or crafted file, and inflating it could exhaust memory (a zip bomb)."""
    for record in records.values():
        if record.compressed:
            raise CheckpointError(
                f"{label}: record {record.name!r} is compressed; PyTorch never compresses records, "
                "so the file was repacked or crafted",
                hint="re-save it with torch.save, or convert it to safetensors",
            )


def read_record(f: BinaryIO | Path, record: ZipRecord, limit: int, label: str) -> bytes:
    """The bytes of a small record (a pickle, a JSON config), refusing records over ``limit``."""
    if record.compressed:
        raise CheckpointError(f"{label}: record {record.name!r} is compressed (repacked or crafted file)")
    if record.size > limit:
        raise CheckpointError(f"{label}: record {record.name!r} is {record.size} bytes, over the {limit}-byte limit")
    try:
        if isinstance(f, Path):
            with f.open("rb") as fh:
                fh.seek(record.data_offset)
                data = fh.read(record.size)
        else:
            f.seek(record.data_offset)
            data = f.read(record.size)
    except OSError as exc:
        raise CheckpointError(f"cannot read {label}: {exc.strerror or exc}") from exc
    if len(data) != record.size:
        raise CheckpointError(f"{label}: record {record.name!r} is cut short (truncated file)")
    return data
