"""Streaming safetensors output that appears all at once or not at all.

The tensor list is known before the first byte is written (names, shapes and
dtypes come from the inputs), so each file's header is laid out up front and
tensor data is appended as it is computed, chunk by chunk. Space is reserved in
the header for metadata only known at the end (source hashes, per-layer
statistics), which the spec allows to be padded with spaces.

Everything is written under a temporary name next to the target and renamed into
place by :meth:`OutputSet.commit`; :meth:`OutputSet.abort` removes it. The bytes
go to disk on a background thread (:class:`WriteBehind`), past the page cache where
the file system allows it (:mod:`merge_studio.core.direct_io`), so a merge computes
the next chunk while the last one is written.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from merge_studio.core.checkpoints.base import TensorInfo
from merge_studio.core.direct_io import BLOCK, AppendOnlyFile
from merge_studio.core.dtypes import SAFETENSORS_CODES
from merge_studio.core.fs_errors import output_error, shown_path
from merge_studio.errors import OutputError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


# A tensor the output will hold: the same facts a reader knows about its inputs.
PlannedTensor = TensorInfo


def _header_bytes(tensors: Sequence[PlannedTensor], metadata: Mapping[str, str]) -> bytes:
    # transformers expects {"format": "pt"} in every file it loads.
    header: dict[str, object] = {"__metadata__": {"format": "pt", **metadata}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": SAFETENSORS_CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    return json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _write_failed(path: Path, exc: OSError) -> OutputError:
    return output_error(exc, path)


class WriteBehind:
    """Run writes on one background thread, in order, at most ``depth`` behind the caller.

    The caller hands over a tensor it will not touch again; the conversion to the
    output dtype and the write itself (which waits for the disk) then overlap with the
    caller's next chunk. Writes smaller than ``batch_bytes`` are handed over together
    once that many bytes are waiting: a file of thousands of norms and biases would
    otherwise pay a thread hand-off (~0.2 ms) per tensor. A failed write is raised at a
    later :meth:`submit` or at :meth:`drain`.
    """

    def __init__(self, depth: int = 8, batch_bytes: int = 1 << 20) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self._pending: deque[Future[None]] = deque()
        self._depth = depth
        self._batch: list[Callable[[], None]] = []
        self._batch_bytes = 0
        self._limit = batch_bytes

    def submit(self, fn: Callable[[], None], nbytes: int = 0) -> None:
        """Queue ``fn`` (which writes ``nbytes``) after every write queued before it."""
        self._batch.append(fn)
        self._batch_bytes += nbytes
        if self._batch_bytes >= self._limit:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(_run_all, batch) if len(batch) > 1 else self._pool.submit(batch[0]))

    def drain(self) -> None:
        """Wait for every write so far; raises the first failure."""
        self._hand_over()
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop writes not yet started and wait for the running one (for aborts)."""
        self._batch.clear()
        for fut in self._pending:
            fut.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)


def _run_all(fns: list[Callable[[], None]]) -> None:
    for fn in fns:
        fn()


class SafetensorsStreamWriter:
    """One safetensors file, filled tensor by tensor in the planned order."""

    def __init__(
        self,
        path: Path,
        tensors: Sequence[PlannedTensor],
        metadata: Mapping[str, str],
        reserve: int = 0,
        background: WriteBehind | None = None,
        label: Path | None = None,
    ) -> None:
        self.path = Path(path)
        # Messages name the file the user asked for, not the temporary one being written.
        self.label = Path(label) if label is not None else self.path
        self._background = background
        self.tensors = list(tensors)
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise OutputError("two output tensors have the same name")
        self._empty = {t.name for t in self.tensors if t.nbytes == 0}
        header = _header_bytes(self.tensors, metadata)
        # Room for metadata known only at the end; the data starts on a block boundary
        # (so it can be written with direct I/O), which also keeps it 8-byte aligned.
        self._data_start = (8 + len(header) + reserve + BLOCK - 1) // BLOCK * BLOCK
        self._header_len = self._data_start - 8
        try:
            with self.path.open("wb") as file:
                file.write(struct.pack("<Q", self._header_len))
                file.write(header.ljust(self._header_len, b" "))
        except OSError as exc:
            raise _write_failed(self.label, exc) from exc
        # Opened at the first byte and closed after the last, so a folder of many shards
        # holds file descriptors only for the one being written.
        self._data: AppendOnlyFile | None = None
        self._index = 0
        self._written = 0

    @property
    def current(self) -> PlannedTensor | None:
        """The tensor whose bytes are expected next."""
        return self.tensors[self._index] if self._index < len(self.tensors) else None

    def write(self, name: str, data: torch.Tensor) -> None:
        """Append (part of) tensor ``name``; parts must come in order and add up."""
        planned = self.current
        if (planned is None or planned.name != name) and data.numel() == 0 and name in self._empty:
            return  # an empty tensor: its (absent) bytes were skipped when the tensor before it ended
        if planned is None or planned.name != name:
            raise OutputError(f"writer expected {planned.name if planned else 'nothing'}, got {name}")
        nbytes = data.numel() * planned.dtype.itemsize
        if self._written + nbytes > planned.nbytes:
            raise OutputError(f"too much data for {name}: shape {planned.shape}")
        if nbytes:
            if self._background is not None:
                self._background.submit(lambda: self._write_bytes(data, planned.dtype), nbytes)
            else:
                self._write_bytes(data, planned.dtype)
        self._written += nbytes
        if self._written == planned.nbytes:
            self._index += 1
            self._written = 0
            while self.current is not None and self.current.nbytes == 0:  # empty tensors
                self._index += 1
            if self.current is None:  # the last byte of this file is on its way
                if self._background is not None:
                    self._background.submit(self._close_data)
                else:
                    self._close_data()

    def _write_bytes(self, data: torch.Tensor, dtype: torch.dtype) -> None:
        flat = data.detach().to(device="cpu", dtype=dtype).contiguous().reshape(-1)
        try:
            if self._data is None:
                self._data = AppendOnlyFile(self.path, self._data_start)
            self._data.write(memoryview(flat.view(torch.uint8).numpy()))
        except OSError as exc:
            raise _write_failed(self.label, exc) from exc

    def _close_data(self) -> None:
        if self._data is None:
            return
        data, self._data = self._data, None
        try:
            data.close()
        except OSError as exc:
            raise _write_failed(self.label, exc) from exc

    def finish(self, metadata: Mapping[str, str]) -> None:
        """Check everything arrived, write the final header and flush to disk."""
        while self.current is not None and self.current.nbytes == 0:
            self._index += 1
        if self.current is not None:
            raise OutputError(f"output incomplete: {self.current.name} was never written")
        header = _header_bytes(self.tensors, metadata)
        if len(header) > self._header_len:
            raise OutputError("metadata grew beyond the space reserved for it (please report this)")
        if self._background is not None:
            self._background.drain()
        self._close_data()
        try:
            with self.path.open("r+b") as file:
                file.seek(8)
                file.write(header.ljust(self._header_len, b" "))
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise _write_failed(self.label, exc) from exc

    def close(self) -> None:
        """Release the file without finishing it (the caller deletes it)."""
        if self._data is not None:
            self._data.abort()
            self._data = None


def _shard_plan(tensors: Sequence[PlannedTensor], shard_bytes: int | None) -> list[list[PlannedTensor]]:
    if not shard_bytes:
        return [list(tensors)]
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


class OutputSet:
    """The files of one output model: a single ``.safetensors`` file, or a folder of shards.

    A target ending in ``.safetensors`` is a single file; any other target is a
    folder holding ``model.safetensors`` or shards with an index (Hugging Face layout).
    """

    def __init__(
        self,
        target: Path,
        tensors: Sequence[PlannedTensor],
        *,
        shard_bytes: int | None,
        metadata: Mapping[str, str],
        reserve: int = 0,
    ) -> None:
        self.target = Path(target)
        self.is_file = self.target.suffix == ".safetensors"
        shards = _shard_plan(tensors, shard_bytes)
        if self.is_file and len(shards) > 1:
            raise OutputError(
                f"the output ({sum(t.nbytes for t in tensors) / 1e9:.2f} GB) is larger than the shard size",
                hint="give a folder as output to write shards, or raise the shard size",
            )
        self.tmp = self.target.parent / f".{self.target.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            _check_target(self.target, self.is_file)
            _make_parent(self.target)
            if not self.is_file:
                self.tmp.mkdir()
        except OSError as exc:
            raise output_error(exc, self.target) from exc
        self._names: list[str] = []
        self._background = WriteBehind()
        self._writers: list[SafetensorsStreamWriter] = []
        self._writer_of: dict[str, SafetensorsStreamWriter] = {}
        n = len(shards)
        try:
            for i, shard in enumerate(shards):
                if self.is_file:
                    name, path = self.target.name, self.tmp
                else:
                    name = SINGLE_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                    path = self.tmp / name
                # Full metadata lives in a single file, or in the index (and the first shard).
                label = self.target if self.is_file else self.target / name
                writer = SafetensorsStreamWriter(
                    path, shard, metadata, reserve if i == 0 else 0, self._background, label=label
                )
                self._names.append(name)
                self._writers.append(writer)
                for t in shard:
                    self._writer_of[t.name] = writer
        except BaseException:
            self.abort()
            raise
        self._sharded = n > 1
        self._metadata = dict(metadata)

    def write(self, name: str, data: torch.Tensor) -> None:
        self._writer_of[name].write(name, data)

    def commit(self, metadata: Mapping[str, str], before_move: Callable[[Path], None] | None = None) -> Path:
        """Finish every file and move the output into place; returns the target.

        ``before_move`` writes the other files of a folder output (a Hugging Face
        config, tokenizer, model card) into the temporary folder, so they appear
        with the weights, atomically.
        """
        try:
            for i, w in enumerate(self._writers):
                w.finish(metadata if i == 0 else self._metadata)
            if self._sharded:
                weight_map = {t.name: self._names[i] for i, w in enumerate(self._writers) for t in w.tensors}
                index = {
                    "metadata": {"total_size": sum(t.nbytes for w in self._writers for t in w.tensors), **metadata},
                    "weight_map": weight_map,
                }
                try:
                    (self.tmp / INDEX_NAME).write_text(json.dumps(index, indent=2), encoding="utf-8")
                except OSError as exc:
                    raise output_error(exc, self.target / INDEX_NAME) from exc
            if before_move is not None and not self.is_file:
                try:
                    before_move(self.tmp)
                except OSError as exc:
                    raise output_error(exc, self.target, "write the model's files into") from exc
            try:
                _move_into_place(self.tmp, self.target)
            except OSError as exc:
                raise output_error(exc, self.target, "move the finished output to") from exc
        except BaseException:
            self.abort()
            raise
        self._background.close()
        return self.target

    def abort(self) -> None:
        """Close and delete everything written so far; the target is untouched."""
        self._background.close()
        for w in self._writers:
            w.close()
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)


def _make_parent(target: Path) -> None:
    """Create the output's folder; a file where a folder should be is named as such."""
    for ancestor in target.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(
                    f"cannot write {shown_path(target)}: {shown_path(ancestor)} is a file, not a folder",
                    hint="choose an output inside a folder",
                )
            break
    target.parent.mkdir(parents=True, exist_ok=True)


def _check_target(target: Path, is_file: bool) -> None:
    if is_file and target.is_dir():
        raise OutputError(f"{target} is a folder", hint="choose a file name ending in .safetensors")
    if not is_file and target.exists():
        if not target.is_dir():
            raise OutputError(f"{target} exists and is not a folder")
        from merge_studio.core.hf.output_folder import FOLDER_FILES

        ours = {SINGLE_NAME, INDEX_NAME, *FOLDER_FILES}
        foreign = [p.name for p in target.iterdir() if p.name not in ours and not p.name.startswith("model-")]
        if foreign:
            raise OutputError(
                f"output folder {target} already holds other files ({', '.join(sorted(foreign)[:3])})",
                hint="choose an empty or new folder",
            )


def _move_into_place(tmp: Path, target: Path) -> None:
    if tmp.is_dir() and target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def output_targets(target: Path, count: int) -> list[Path]:
    """Targets for a method that produces ``count`` models (model recombination)."""
    if count == 1:
        return [target]
    if target.suffix == ".safetensors":
        return [target.with_name(f"{target.stem}-{i + 1}{target.suffix}") for i in range(count)]
    return [target.with_name(f"{target.name}-{i + 1}") for i in range(count)]


def write_state_dict(
    target: str | Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    shard_bytes: int | None = None,
) -> Path:
    """Save a state dict as safetensors atomically (for aligned models, demo models...)."""
    planned = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    out = OutputSet(Path(target), planned, shard_bytes=shard_bytes, metadata=dict(metadata or {}))
    try:
        for name, t in tensors.items():
            out.write(name, t)
    except BaseException:
        out.abort()
        raise
    return out.commit(dict(metadata or {}))
