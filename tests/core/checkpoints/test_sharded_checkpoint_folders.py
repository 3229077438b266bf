"""Hugging Face folders open as one checkpoint named after the folder, reading headers only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.checkpoints.sharded_reader import ShardedCheckpoint
from merge_studio.errors import CheckpointError
from tests.core.checkpoints.conftest import write_safetensors, write_sharded


def test_a_sharded_safetensors_folder_opens_as_one_checkpoint(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "llama-tiny", state_dict, shards=3)
    with open_checkpoint(folder) as ck:
        assert ck.name == "llama-tiny"
        assert ck.format == "sharded safetensors"
        assert sorted(ck.keys()) == sorted(state_dict)
        for name, tensor in state_dict.items():
            assert torch.equal(ck.get_tensor(name), tensor)
            assert torch.equal(ck.get_flat(name, 1, 3), tensor.reshape(-1)[1:3])
        assert ck.metadata["shards"] == "3"
        assert ck.metadata["total_size"] == "1"


def test_opening_the_index_file_is_the_same_as_opening_the_folder(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict)
    with open_checkpoint(folder / "model.safetensors.index.json") as ck:
        assert ck.name == "m" and len(ck) == len(state_dict)


def test_source_files_list_the_index_and_every_shard(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict, shards=2)
    with open_checkpoint(folder) as ck:
        names = [p.name for p in ck.source_files()]
        assert names == ["model.safetensors.index.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors"]
        assert ck.file_bytes() == sum(p.stat().st_size for p in ck.source_files())


def test_opening_a_folder_opens_no_shard_file_until_a_tensor_is_read(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict, shards=2)
    ck = open_checkpoint(folder)
    assert isinstance(ck, ShardedCheckpoint)
    shards = list(ck._shards.values())
    assert all(s._file._fd is None for s in shards)
    first = ck.keys()[0]
    ck.get_tensor(first)
    assert [s._file._fd is not None for s in shards] == [True, False]
    ck.close()
    assert all(s._file._fd is None for s in shards)


def test_a_sharded_bin_folder_opens(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "old-model", state_dict, kind="bin")
    with open_checkpoint(folder) as ck:
        assert ck.format == "sharded pytorch"
        for name, tensor in state_dict.items():
            assert torch.equal(ck.get_tensor(name), tensor)


def test_a_folder_with_a_single_model_safetensors_is_named_after_the_folder(tmp_path: Path, state_dict) -> None:
    folder = tmp_path / "gpt-mini"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", state_dict, {"format": "pt"})
    with open_checkpoint(folder) as ck:
        assert ck.name == "gpt-mini" and ck.format == "safetensors"
        assert ck.metadata["format"] == "pt"
        assert torch.equal(ck.get_tensor("head.weight"), state_dict["head.weight"])


def test_a_folder_prefers_safetensors_over_bin(tmp_path: Path, state_dict) -> None:
    folder = tmp_path / "both"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", state_dict)
    torch.save({"other": torch.ones(1)}, folder / "pytorch_model.bin")
    with open_checkpoint(folder) as ck:
        assert "other" not in ck and len(ck) == len(state_dict)


def test_a_stray_shard_file_the_index_does_not_name_is_not_read(tmp_path: Path, state_dict) -> None:
    folder = tmp_path / "stray"
    folder.mkdir()
    write_safetensors(folder / "a.safetensors", state_dict)
    write_safetensors(folder / "b.safetensors", state_dict)  # e.g. left over from an older save
    index = {"weight_map": {k: "a.safetensors" for k in state_dict}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with open_checkpoint(folder) as ck:
        assert ck.shard_of("head.weight").name == "a.safetensors"
        assert [p.name for p in ck.source_files()] == ["model.safetensors.index.json", "a.safetensors"]


def test_a_tensor_held_by_two_shards_of_the_index_is_refused_naming_both(tmp_path: Path, state_dict) -> None:
    folder = tmp_path / "dup"
    folder.mkdir()
    names = list(state_dict)
    write_safetensors(folder / "s1.safetensors", {n: state_dict[n] for n in names[:2]})
    # s2 holds the rest and, again, the first tensor (with other values)
    write_safetensors(folder / "s2.safetensors", {**{n: state_dict[n] for n in names[2:]}, names[0]: state_dict[names[0]] + 1})
    weight_map = {n: ("s1.safetensors" if i < 2 else "s2.safetensors") for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=rf"'{names[0]}' is in both s1.safetensors and s2.safetensors"):
        open_checkpoint(folder)


def test_a_shard_that_is_a_pipe_is_named_as_one(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    (folder / shard).unlink()
    os.mkfifo(folder / shard)
    with pytest.raises(CheckpointError, match=rf"{shard} is not a regular file \(a pipe or a device\?\)"):
        open_checkpoint(folder)


def test_tensors_a_shard_holds_but_the_index_omits_are_listed(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    dropped = next(iter(data["weight_map"]))
    del data["weight_map"][dropped]
    index.write_text(json.dumps(data))
    with open_checkpoint(folder) as ck:
        assert dropped not in ck
        assert dropped in ck.metadata["unindexed_tensors"]


def test_an_index_with_a_non_string_shard_is_refused(tmp_path: Path, state_dict) -> None:
    folder = write_sharded(tmp_path / "m", state_dict)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": 3}}))
    with pytest.raises(CheckpointError, match="not a file name"):
        open_checkpoint(folder)


def test_an_index_without_weight_map_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="has no weight_map"):
        open_checkpoint(index)
