"""``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` files written by ``torch.save``.

Loading never runs code from the file: the pickle is read by PyTorch's
weights-only unpickler (``weights_only=True``, always passed explicitly so an
environment variable cannot turn it off) and nothing falls back to a full
unpickle. For the zip format (every file since PyTorch 1.6) we first check the
archive (:mod:`zip_guard`), then unpickle onto the ``meta`` device: that gives
names, shapes, dtypes and each storage's byte offset in the file without
reading any tensor data. Each storage is checked against its zip record, and a
tensor is read later with positional reads, exactly the bytes it needs. This
is as lazy as ``mmap=True`` but a short or compressed record is refused instead
of read past its end, and a file truncated while open raises instead of SIGBUS.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from merge_studio.core.checkpoints.base import Checkpoint, TensorInfo
from merge_studio.core.checkpoints.file_io import (
    LazyFile,
    read_head,
    read_strided,
    require_regular_file,
    sniff_not_a_checkpoint,
    strided_extent,
)
from merge_studio.core.checkpoints.unwrap import unwrap_state_dict
from merge_studio.core.checkpoints.zip_guard import ZipRecord, read_record, read_zip_records, refuse_compressed
from merge_studio.core.dtypes import element_size
from merge_studio.errors import CheckpointError, UnsafeCheckpointError

ZIP_MAGIC = b"PK\x03\x04"
ALLOCATING_GLOBALS = frozenset({"builtins.bytearray"})
LEGACY_PICKLES = 5  # magic number, protocol, system info, the object, the storage keys
MAX_PICKLE_BYTES = 4_000_000_000
MAX_LISTED_SKIPS = 20
UNSAFE_HINT = (
    "only open files you trust; ask for a safetensors copy, or convert it yourself in a "
    "separate Python session if you trust its author"
)


@dataclass(frozen=True)
class _Stored:
    """Where a tensor's elements are in the file."""

    offset: int  # absolute byte offset of the storage
    storage_bytes: int
    storage_offset: int  # in elements
    stride: tuple[int, ...]


_PREAMBLES = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _detail(exc: BaseException) -> str:
    """The informative line of an exception (PyTorch wraps it in a long preamble)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # Drop PyTorch's preamble and its advice to load with weights_only=False.
    useful = [line for line in lines if not line.startswith(_PREAMBLES) and "weights_only" not in line
              and not line.startswith(("(1)", "(2)"))]
    text = (useful or lines or [type(exc).__name__])[0]
    return text.removeprefix("WeightsUnpickler error:").strip()[:300]


def describe_load_failure(exc: BaseException, path: Path, source: Any = None) -> CheckpointError:
    """Turn whatever ``torch.load`` raised into an error a person can act on.

    PyTorch's own text suggests re-running with ``weights_only=False``; that advice is
    never passed on (it is how a crafted file runs its code).
    """
    first_line = _detail(exc)
    if isinstance(exc, pickle.UnpicklingError):
        unsafe = _foreign_globals(path, source)
        shown = ", ".join(unsafe[:5]) + (f" … and {len(unsafe) - 5} more" if len(unsafe) > 5 else "")
        dangerous = [g for g in unsafe if runs_code(g)]
        if dangerous:
            return UnsafeCheckpointError(
                f"{path.name} would run code when loaded: its pickle calls {', '.join(dangerous[:3])}; "
                "Merge Studio refuses it and did not run anything",
                hint=UNSAFE_HINT,
            )
        if unsafe:
            return UnsafeCheckpointError(
                f"{path.name} refers to Python objects other than tensors ({shown}); loading it "
                "could run code from the file, so Merge Studio refuses it",
                hint=UNSAFE_HINT,
            )
        return UnsafeCheckpointError(
            f"{path.name} cannot be loaded safely: its pickle uses something other than plain "
            f"tensors, or is corrupt ({first_line})",
            hint=UNSAFE_HINT,
        )
    return CheckpointError(
        f"{path.name} cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {first_line})",
        hint="the file may be truncated or corrupt; re-download or re-save it",
    )


def safe_torch_load(source: str | bytes, path: Path, map_location: str, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``, every failure turned into a CheckpointError.

    ``source`` is a file path, or the bytes of an archive nested in ``path``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = io.BytesIO(source) if isinstance(source, bytes) else source
            return torch.load(target, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - a hostile file can raise anything
        raise describe_load_failure(exc, path, source) from exc


def safe_nested_torch_load(data: bytes, path: Path, label: str) -> Any:
    """Load a ``torch.save`` archive held in memory (inside a ``.pt2``) with every check above."""
    records = read_zip_records(data, label)
    refuse_compressed(records, label)
    pickles = [r for name, r in records.items() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{label} is not a PyTorch archive (no single data.pkl inside)")
    record = pickles[0]
    refuse_allocating_globals(io.BytesIO(data[record.data_offset:record.data_offset + record.size]), 1, label)
    return safe_torch_load(data, path, map_location="cpu")


class TorchCheckpoint(Checkpoint):
    """A state dict saved with ``torch.save`` (wrappers and ``module.`` removed)."""

    format = "pytorch"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        require_regular_file(self.path)
        head = read_head(self.path)
        why = sniff_not_a_checkpoint(head)
        if why:
            raise CheckpointError(f"{self.path.name} is not a PyTorch checkpoint: {why}")
        self._file = LazyFile(self.path)
        self._stored: dict[str, _Stored] = {}
        self._in_memory: dict[str, torch.Tensor] = {}
        self._swap_bytes = False
        self.skipped: list[str] = []
        if head.startswith(ZIP_MAGIC):
            self._open_zip()
        else:
            self._open_legacy()
        if self.skipped:
            self.metadata["skipped_entries"] = _cap(self.skipped)

    # --- opening -------------------------------------------------------------
    def _open_zip(self) -> None:
        records = read_zip_records(self.path, self.path.name)
        root = _archive_root(records, self.path)
        order = read_record(self.path, records[f"{root}/byteorder"], 16, self.path.name).decode(
            "ascii", "replace"
        ) if f"{root}/byteorder" in records else "little"
        if order not in ("little", "big"):
            raise CheckpointError(f"{self.path.name}: unknown byte order {order!r}")
        self._swap_bytes = order != sys.byteorder
        pickled = read_record(self.path, records[f"{root}/data.pkl"], MAX_PICKLE_BYTES, self.path.name)
        refuse_allocating_globals(io.BytesIO(pickled), 1, self.path.name)
        del pickled
        try:
            obj = safe_torch_load(str(self.path), self.path, map_location="meta")
        except UnsafeCheckpointError:
            raise
        except CheckpointError as meta_error:
            # some tensor types (quantized ones) cannot be built on the meta device
            try:
                loaded = safe_torch_load(str(self.path), self.path, map_location="cpu", mmap=True)
            except CheckpointError:
                raise meta_error from None
            self._keep_in_memory(self._unwrap(loaded))
            self.metadata["storage"] = "zip (memory-mapped)"
            return
        tensors = self._unwrap(obj)
        by_offset = {r.data_offset: r for n, r in records.items() if n.startswith(f"{root}/data/")}
        fallback = False
        for name, t in tensors.items():
            if t.layout != torch.strided:
                self.skipped.append(f"{name} ({t.layout} tensor)")
                continue
            offset = checkpoint_offset(t)
            if offset is None:  # a PyTorch that no longer tells us: map the file instead
                fallback = True
                break
            self._stored[name] = self._check_storage(name, t, by_offset.get(offset))
            self._infos[name] = TensorInfo(name, tuple(t.shape), t.dtype)
        if fallback:
            self._stored.clear()
            self._infos.clear()
            self.skipped.clear()
            loaded = safe_torch_load(str(self.path), self.path, map_location="cpu", mmap=True)
            self._keep_in_memory(self._unwrap(loaded))
            self.metadata["storage"] = "zip (memory-mapped)"
            return
        self.metadata["storage"] = "zip"

    def _check_storage(self, name: str, t: torch.Tensor, record: ZipRecord | None) -> _Stored:
        where = f"{self.path.name}: tensor {name!r}"
        if record is None:
            raise CheckpointError(f"{where} points at data that is not a record of the archive (crafted file)")
        storage_bytes = t.untyped_storage().nbytes()
        if record.size < storage_bytes:
            raise CheckpointError(
                f"{where} needs {storage_bytes} bytes but its record holds {record.size} "
                "(truncated or crafted file)",
                hint="re-download or re-save the file",
            )
        size = element_size(t.dtype)
        shape, stride = tuple(t.shape), tuple(t.stride())
        if (t.storage_offset() + strided_extent(shape, stride)) * size > storage_bytes:
            raise CheckpointError(f"{where} reaches past the end of its storage (corrupt file)")
        return _Stored(record.data_offset, storage_bytes, t.storage_offset(), stride)

    def _open_legacy(self) -> None:
        """Files from before PyTorch 1.6: no zip, so no mapping; the tensors are loaded whole."""
        try:
            with self.path.open("rb") as f:
                refuse_allocating_globals(f, LEGACY_PICKLES, self.path.name)
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        loaded = safe_torch_load(str(self.path), self.path, map_location="cpu", mmap=False)
        self._keep_in_memory(self._unwrap(loaded))
        self.metadata["storage"] = "legacy (loaded into memory)"

    def _keep_in_memory(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            if t.layout != torch.strided or t.is_quantized:
                self.skipped.append(f"{name} ({'quantized' if t.is_quantized else t.layout} tensor)")
                continue
            self._in_memory[name] = t.detach()
            self._infos[name] = TensorInfo(name, tuple(t.shape), t.dtype)

    def _unwrap(self, obj: Any) -> dict[str, torch.Tensor]:
        found = unwrap_state_dict(obj, self.path.name)
        self.skipped.extend(found.skipped)
        if found.wrapper:
            self.metadata["unwrapped_from"] = found.wrapper
        if found.stripped_prefix:
            self.metadata["stripped_prefix"] = found.stripped_prefix
        return found.tensors

    # --- reading ---------------------------------------------------------------
    def _read(self, name: str, flat_range: tuple[int, int] | None) -> torch.Tensor:
        info = self._infos[name]
        if name in self._in_memory:
            t = self._in_memory[name]
            if flat_range is None:
                return t.clone(memory_format=torch.contiguous_format)
            return t.reshape(-1)[flat_range[0]:flat_range[1]].clone()
        stored = self._stored[name]
        return read_strided(
            self._file.fd(), stored.offset, info.dtype, info.shape, stored.stride,
            stored.storage_offset, flat_range, f"{self.name}:{name}", self._swap_bytes, self.cancel,
        )

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:
        file = getattr(self, "_file", None)
        if file is not None:
            file.close()


def checkpoint_offset(t: torch.Tensor) -> int | None:
    """Where ``torch.load(map_location="meta")`` says a tensor's storage starts in the file.

    PyTorch records it on meta storages (``_checkpoint_offset``, used by its own
    distributed checkpointing); ``None`` if a future PyTorch stops doing so.
    """
    offset = getattr(t.untyped_storage(), "_checkpoint_offset", None)
    return offset if isinstance(offset, int) else None


def pickle_globals(stream: BinaryIO, pickles: int) -> list[str]:
    """The ``module.name`` globals ``pickles`` consecutive pickles would import, in order.

    Read with :mod:`pickletools` (nothing is imported or called). ``STACK_GLOBAL``
    takes its names from the two strings pushed before it, which is how every
    pickler writes them; a malformed stream ends the scan where it breaks.
    """
    found: list[str] = []
    try:
        for _ in range(pickles):
            strings: list[str] = []
            memo: dict[int, str] = {}
            for opcode, arg, _pos in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", ".").replace("__builtin__.", "builtins."))
                elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                              "BINSTRING", "STRING") and isinstance(arg, str):
                    strings.append(arg)
                elif name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings and isinstance(arg, int):
                    memo[arg] = strings[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET") and isinstance(arg, int) and arg in memo:
                    strings.append(memo[arg])
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}".replace("__builtin__.", "builtins."))
    except Exception:  # noqa: BLE001 - a malformed pickle is torch.load's to refuse
        pass
    return list(dict.fromkeys(found))


# Globals that exist to run code: a file naming one is an attack, and the message says so.
CODE_RUNNING = ("builtins.exec", "builtins.eval", "builtins.compile", "builtins.__import__",
                "builtins.getattr", "builtins.open", "os.", "posix.", "nt.", "subprocess.", "runpy.",
                "importlib.", "pty.", "socket.", "shutil.", "sys.", "code.", "pickle.", "marshal.")


def runs_code(name: str) -> bool:
    return any(name == g or (g.endswith(".") and name.startswith(g)) for g in CODE_RUNNING)


def refuse_allocating_globals(stream: BinaryIO, pickles: int, label: str) -> None:
    """Refuse pickles that call ``bytearray`` (allowed by the weights-only unpickler).

    ``bytearray(2**36)`` in a ten-byte pickle allocates and zero-fills 64 GB:
    the process is killed for memory before any error can be shown. PyTorch
    never writes it for a state dict.
    """
    bombs = sorted(set(pickle_globals(stream, pickles)) & ALLOCATING_GLOBALS)
    if bombs:
        raise UnsafeCheckpointError(
            f"{label} asks to build {', '.join(bombs)} while loading, which PyTorch never writes for "
            "weights; a crafted file uses it to exhaust memory",
            hint=UNSAFE_HINT,
        )


def _foreign_globals(path: Path, source: Any) -> list[str]:
    """Globals a refused pickle names that a weights-only load does not allow."""
    try:
        scan = io.BytesIO(source) if isinstance(source, bytes) else str(path)
        unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(scan))
    except Exception:  # noqa: BLE001 - not a zip archive (legacy pickles), or damaged
        unsafe = []
    if unsafe:
        return unsafe
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private helper; without it, name everything not torch's
        allowed = set()
    try:
        stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else path.open("rb")
    except OSError:
        return []
    with stream:
        names = pickle_globals(stream, LEGACY_PICKLES)
    return [n for n in names if n not in allowed and not n.startswith("torch.") and n != "collections.OrderedDict"]


def _archive_root(records: dict[str, ZipRecord], path: Path) -> str:
    """The folder inside the archive that holds ``data.pkl``; refuses programs and TorchScript."""
    roots = [n[: -len("/data.pkl")] for n in records if n.endswith("/data.pkl") and n.count("/") == 1]
    if any(n.endswith("/archive_format") for n in records):
        raise CheckpointError(
            f"{path.name} is a torch.export program (.pt2), not a state dict",
            hint="give it the .pt2 suffix so it is read as an exported program",
        )
    if len(roots) != 1:
        raise CheckpointError(
            f"{path.name} is a zip archive but not a PyTorch checkpoint (no single data.pkl inside)"
        )
    root = roots[0]
    if f"{root}/constants.pkl" in records or any(n.startswith(f"{root}/code/") for n in records):
        raise UnsafeCheckpointError(
            f"{path.name} is a TorchScript archive: it holds code, and loading it would run that code",
            hint="in a trusted session save its state_dict() with torch.save or as safetensors",
        )
    refuse_compressed(records, path.name)
    return root


def _cap(items: list[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED_SKIPS])
    more = len(items) - MAX_LISTED_SKIPS
    return shown + (f"; … and {more} more" if more > 0 else "")
