"""Output bytes written past the page cache arrive exactly as given, whatever their alignment."""

from __future__ import annotations

import os

import pytest

from merge_studio.core import direct_io
from merge_studio.core.direct_io import BLOCK, AppendOnlyFile


@pytest.mark.parametrize("direct", [True, False], ids=["direct I/O", "page cache"])
@pytest.mark.parametrize("sizes", [[1], [BLOCK], [BLOCK * 3 + 5, 7, 10_000], [70_000, 1, 65_536, 12_345]])
def test_appended_bytes_match_at_any_alignment(tmp_path, monkeypatch, direct, sizes):
    monkeypatch.setattr(direct_io, "USE_DIRECT", direct)
    monkeypatch.setattr(direct_io, "STAGING_BYTES", 4 * BLOCK)  # pieces cross the staging buffer
    path = tmp_path / "f.bin"
    header = b"H" * BLOCK
    path.write_bytes(header)
    pieces = [os.urandom(n) for n in sizes]
    out = AppendOnlyFile(path, BLOCK)
    for piece in pieces:
        out.write(memoryview(piece))
    out.close()
    assert path.read_bytes() == header + b"".join(pieces)


def test_direct_io_is_used_where_the_file_system_allows_it(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    out = AppendOnlyFile(path, 0)
    try:
        fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0))
        os.close(fd)
        supported = hasattr(os, "O_DIRECT")
    except OSError:
        supported = False
    assert out.direct == supported
    out.close()


def test_an_unaligned_start_falls_back_to_the_page_cache(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 10)
    out = AppendOnlyFile(path, 10)
    assert not out.direct
    out.write(memoryview(b"abc"))
    out.close()
    assert path.read_bytes() == b"x" * 10 + b"abc"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_folder_of_many_shards_keeps_few_files_open(tmp_path):
    import torch

    from merge_studio.core.writer import OutputSet, PlannedTensor

    tensors = {f"layers.{i}.weight": torch.full((64,), float(i)) for i in range(300)}
    planned = [PlannedTensor(n, tuple(t.shape), t.dtype) for n, t in tensors.items()]
    before = len(os.listdir("/proc/self/fd"))
    out = OutputSet(tmp_path / "out", planned, shard_bytes=256, metadata={})  # one shard per tensor
    peak = len(os.listdir("/proc/self/fd"))
    for name, t in tensors.items():
        out.write(name, t)
        peak = max(peak, len(os.listdir("/proc/self/fd")))
    out.commit({})
    assert peak - before < 20  # not three descriptors per shard for 300 shards
    assert len(list((tmp_path / "out").glob("model-*.safetensors"))) == 300
    from merge_studio.core.checkpoints import open_checkpoint

    with open_checkpoint(tmp_path / "out") as ck:
        assert torch.equal(ck.get_tensor("layers.299.weight"), tensors["layers.299.weight"])


def _append_watching_direct_writes(tmp_path, monkeypatch, data: bytes, on_direct_write) -> bytes:
    """Append ``data`` through 2-block staging buffers; ``on_direct_write(offset)`` runs before
    each write to the direct descriptor. Returns what the file holds afterwards."""
    monkeypatch.setattr(direct_io, "STAGING_BYTES", 2 * BLOCK)
    real_pwrite = os.pwrite
    holder: list[AppendOnlyFile] = []

    def pwrite(fd, chunk, offset):
        if holder and fd == holder[0]._direct_fd:  # the direct descriptor
            on_direct_write(offset)
        return real_pwrite(fd, chunk, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    out = AppendOnlyFile(path, 0)
    holder.append(out)
    out.write(memoryview(data))
    out.close()
    return path.read_bytes()


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no direct I/O here")
def test_a_file_system_that_refuses_direct_writes_gets_the_bytes_through_the_cache(tmp_path, monkeypatch):
    import errno

    def refuse(offset):
        raise OSError(errno.EINVAL, "Invalid argument")

    data = os.urandom(5 * BLOCK + 123)
    assert _append_watching_direct_writes(tmp_path, monkeypatch, data, refuse) == data


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no direct I/O here")
def test_full_buffers_reach_the_disk_two_at_a_time(tmp_path, monkeypatch):
    """A direct write returns only when the disk has the bytes: the next full buffer is
    written alongside it, not after it (the first write waits until the second begins)."""
    import threading

    second_began = threading.Event()
    overlapped: list[bool] = []

    def first_waits_for_second(offset):
        if offset == 0:
            overlapped.append(second_began.wait(timeout=10))
        else:
            second_began.set()

    data = os.urandom(6 * BLOCK + 5)
    assert _append_watching_direct_writes(tmp_path, monkeypatch, data, first_waits_for_second) == data
    assert overlapped == [True]


def test_a_failed_background_write_is_raised_and_the_file_closes(tmp_path, monkeypatch):
    import errno

    monkeypatch.setattr(direct_io, "STAGING_BYTES", 2 * BLOCK)
    real_pwrite = os.pwrite

    def pwrite(fd, data, offset):
        if offset >= 2 * BLOCK:
            raise OSError(errno.EIO, "Input/output error")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    path = tmp_path / "f.bin"
    path.write_bytes(b"")
    out = AppendOnlyFile(path, 0)
    with pytest.raises(OSError, match="Input/output error"):
        out.write(memoryview(os.urandom(12 * BLOCK)))
        out.close()
    out.abort()  # idempotent after a failure: nothing left running, descriptors closed
    assert out._fd == -1 and out._writers is None
