"""Truncated, corrupt and hostile files give a clear CheckpointError naming the file,
never a crash, a hang, or code run from a pickle."""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.errors import CheckpointError, UnsafeCheckpointError
from tests.core.checkpoints.conftest import (
    HugeByteArray,
    RunShell,
    hostile_state_dict,
    rewrite_zip,
    write_legacy_pickle,
    write_safetensors,
    write_sharded,
)


def open_and_read_all(path: Path) -> None:
    with open_checkpoint(path) as ck:
        for name in ck.keys():
            ck.get_tensor(name)


# --- pickles that would run code -------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth", ".ckpt"])
def test_pickle_planting_a_file_in_a_zip_torch_file_is_refused(tmp_path: Path, marker: Path, suffix: str) -> None:
    path = tmp_path / f"evil{suffix}"
    torch.save(hostile_state_dict(marker), path)
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\{suffix} refers to Python objects other than tensors \(io\.open\)") as err:
        open_checkpoint(path)
    assert not marker.exists()
    assert err.value.hint


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_raw_pickle_planting_a_file_is_refused(tmp_path: Path, marker: Path, suffix: str) -> None:
    path = write_legacy_pickle(tmp_path / f"evil{suffix}", hostile_state_dict(marker))
    with pytest.raises(UnsafeCheckpointError, match=rf"evil\{suffix}"):
        open_checkpoint(path)
    assert not marker.exists()


def test_legacy_torch_save_with_a_shell_command_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": RunShell(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt would run code when loaded: its pickle calls posix\.system") as err:
        open_checkpoint(path)
    assert not marker.exists()
    assert "weights_only" not in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_raw_pickle_calling_exec_is_refused_saying_it_would_run_code(tmp_path: Path, marker: Path, protocol: int) -> None:
    class CallsExec:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"w": CallsExec()}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt would run code when loaded: its pickle calls builtins\.exec") as err:
        open_checkpoint(path)
    assert not marker.exists()
    assert "weights_only" not in str(err.value)  # PyTorch's advice to turn the protection off is never passed on


def test_pickle_planting_a_file_inside_a_sharded_bin_folder_is_refused(tmp_path: Path, state_dict, marker: Path) -> None:
    folder = write_sharded(tmp_path / "model", state_dict, kind="bin")
    evil = folder / "pytorch_model-00002-of-00002.bin"
    part = torch.load(evil, weights_only=True)
    torch.save({**part, "payload": RunShell(marker)}, evil)
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model-00002-of-00002.bin"):
        open_checkpoint(folder)
    assert not marker.exists()


def test_refusal_holds_even_when_the_environment_disables_weights_only(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "evil.pt"
    torch.save(hostile_state_dict(marker), path)
    with pytest.raises(UnsafeCheckpointError):
        open_checkpoint(path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_archive_is_refused_as_code(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeCheckpointError, match="scripted.pt is a TorchScript archive"):
        open_checkpoint(path)


def test_a_pickle_allocating_a_terabyte_is_refused_before_loading(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, plain)
    with zipfile.ZipFile(plain) as z:
        pickle_name = next(n for n in z.namelist() if n.endswith("data.pkl"))
    bomb = rewrite_zip(plain, tmp_path / "bomb.pt",
                       change={pickle_name: pickle.dumps({"w": HugeByteArray()}, protocol=2)})
    with pytest.raises(UnsafeCheckpointError, match=r"bomb\.pt asks to build builtins\.bytearray"):
        open_checkpoint(bomb)


def test_a_raw_pickle_allocating_a_terabyte_is_refused(tmp_path: Path) -> None:
    path = write_legacy_pickle(tmp_path / "bomb.bin", {"w": HugeByteArray()})
    with pytest.raises(UnsafeCheckpointError, match=r"bomb\.bin asks to build builtins\.bytearray"):
        open_checkpoint(path)


def test_a_legacy_file_declaring_a_huge_storage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    at = data.find(struct.pack("<4f", 0, 1, 2, 3)) - 8  # the storage's element count precedes its data
    assert struct.unpack_from("<q", data, at) == (4,)
    struct.pack_into("<q", data, at, 2**40)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"legacy\.pt cannot be read as a PyTorch checkpoint"):
        open_checkpoint(path)


# --- safetensors damage ------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.999, 0.75, 0.5, 0.1])
def test_truncated_safetensors_say_truncated(tmp_path: Path, state_dict, keep: float) -> None:
    path = write_safetensors(tmp_path / "cut.safetensors", state_dict)
    data = path.read_bytes()
    path.write_bytes(data[: max(9, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*(truncated|does not fit)"):
        open_checkpoint(path)


@pytest.mark.parametrize("cut", [1, 7])
def test_safetensors_shorter_than_its_length_field_is_refused(tmp_path: Path, state_dict, cut: int) -> None:
    path = write_safetensors(tmp_path / "tiny.safetensors", state_dict)
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match=r"tiny\.safetensors"):
        open_checkpoint(path)


def test_garbage_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(CheckpointError, match=r"noise\.safetensors"):
        open_checkpoint(path)


def test_git_lfs_pointer_says_run_git_lfs_pull(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*Git LFS pointer.*git lfs pull"):
        open_checkpoint(path)


def test_html_page_saved_as_bin_says_download_failed(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    path.write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*web page"):
        open_checkpoint(path)


def _raw_safetensors(path: Path, header: str | bytes, data: bytes) -> Path:
    raw = header.encode() if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_header_length_larger_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"a": 1}')
    with pytest.raises(CheckpointError, match=r"big\.safetensors: header length 10000 does not fit"):
        open_checkpoint(path)


def test_overlapping_offsets_are_refused(tmp_path: Path) -> None:
    header = json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    })
    path = _raw_safetensors(tmp_path / "overlap.safetensors", header, bytes(12))
    with pytest.raises(CheckpointError, match=r"overlap\.safetensors.*overlapping"):
        open_checkpoint(path)


def test_duplicate_tensor_names_are_refused(tmp_path: Path) -> None:
    header = ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},'
              ' "a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}')
    path = _raw_safetensors(tmp_path / "dup.safetensors", header, bytes(8))
    with pytest.raises(CheckpointError, match=r"dup\.safetensors.*'a' twice"):
        open_checkpoint(path)


def test_shape_that_disagrees_with_the_byte_count_is_refused(tmp_path: Path) -> None:
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})
    path = _raw_safetensors(tmp_path / "lie.safetensors", header, bytes(8))
    with pytest.raises(CheckpointError, match=r"lie\.safetensors.*needs 12"):
        open_checkpoint(path)


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    for name in ("empty.safetensors", "empty.pt"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(CheckpointError, match=rf"{name} is empty"):
            open_checkpoint(path)


def test_a_folder_with_no_checkpoint_says_so(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(CheckpointError, match="holds no model"):
        open_checkpoint(tmp_path)


def test_a_fifo_is_refused_instead_of_hanging(tmp_path: Path) -> None:
    import os

    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    with pytest.raises(CheckpointError, match="not a regular file"):
        open_checkpoint(path)


# --- torch zip damage ------------------------------------------------------------------------
def _data_record(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if "/data/" in n)


def test_a_compressed_record_zip_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1_000_000)}, plain)
    bomb = rewrite_zip(plain, tmp_path / "bomb.pt", compress=True)
    assert bomb.stat().st_size < 100_000  # 4 MB of zeros squeezed
    with pytest.raises(CheckpointError, match=r"bomb\.pt: record .* is compressed"):
        open_checkpoint(bomb)


def test_a_zip_declaring_huge_sizes_is_refused(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "huge.pt"
    torch.save(state_dict, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(_data_record(path))
    # patch the central directory entry's compressed and uncompressed sizes
    position = 0
    while True:
        position = data.find(b"PK\x01\x02", position)
        name_len = struct.unpack_from("<H", data, position + 28)[0]
        if data[position + 46:position + 46 + name_len].decode() == info.filename:
            break
        position += 4
    struct.pack_into("<II", data, position + 20, 0x7FFF_FFF0, 0x7FFF_FFF0)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"huge\.pt"):
        open_and_read_all(path)


def test_a_record_shorter_than_its_tensor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.pt"
    torch.save({"w": torch.ones(64)}, path)
    record = _data_record(path)
    rewrite_zip(path, tmp_path / "shortened.pt", change={record: bytes(16)})
    with pytest.raises(CheckpointError, match=r"shortened\.pt: tensor 'w' needs 256 bytes but its record holds 16"):
        open_checkpoint(tmp_path / "shortened.pt")


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2, 0.05])
def test_truncated_pt_files_are_refused(tmp_path: Path, state_dict, keep: float) -> None:
    path = tmp_path / "cut.pt"
    torch.save(state_dict, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        open_and_read_all(path)


# --- shard indexes -----------------------------------------------------------------------------
def _point_index_at(folder: Path, shard: str) -> None:
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    first = next(iter(data["weight_map"]))
    data["weight_map"][first] = shard
    index.write_text(json.dumps(data))


@pytest.mark.parametrize("escape", ["../outside.safetensors", "/etc/outside.safetensors",
                                    "sub/../../outside.safetensors", "C:\\outside.safetensors"])
def test_an_index_pointing_outside_its_folder_is_refused(tmp_path: Path, state_dict, escape: str) -> None:
    folder = write_sharded(tmp_path / "model", state_dict)
    write_safetensors(tmp_path / "outside.safetensors", state_dict)
    _point_index_at(folder, escape)
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json names shard .* outside the model folder"):
        open_checkpoint(folder)


def test_an_index_naming_a_missing_shard_is_refused(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "model", state_dict)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"names shard 'model-00002-of-00002\.safetensors', which is not in"):
        open_checkpoint(folder / "model.safetensors.index.json")


def test_an_index_that_disagrees_with_its_shards_is_refused(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "model", state_dict)
    _point_index_at(folder, "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="does not hold them"):
        open_checkpoint(folder)


def test_an_index_that_is_not_json_is_refused(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "model", state_dict)
    (folder / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json is not a valid JSON"):
        open_checkpoint(folder)
