"""Every supported format opens lazily and gives back exactly the tensors that were saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import SUPPORTED_SUFFIXES, open_checkpoint
from merge_studio.core.checkpoints import file_io
from merge_studio.errors import CheckpointError
from tests.core.checkpoints.conftest import write_legacy_pickle, write_safetensors


def assert_same_tensors(ck, expected: dict[str, torch.Tensor]) -> None:
    assert sorted(ck.keys()) == sorted(expected)
    for name, tensor in expected.items():
        got = ck.get_tensor(name)
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got, tensor), name


def test_safetensors_file_opens_with_metadata_and_summary(tmp_path: Path, state_dict) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", state_dict, {"author": "me"})
    with open_checkpoint(path) as ck:
        assert ck.format == "safetensors" and ck.metadata == {"author": "me"}
        assert_same_tensors(ck, state_dict)
        summary = ck.summary()
    assert summary.tensor_count == len(state_dict)
    assert summary.parameter_count == sum(t.numel() for t in state_dict.values())
    assert summary.total_bytes == sum(t.numel() * t.element_size() for t in state_dict.values())
    assert summary.dtypes == {"float32": len(state_dict)}


def test_a_safetensors_file_named_bin_still_opens_as_safetensors(tmp_path: Path, state_dict) -> None:
    path = write_safetensors(tmp_path / "model.bin", state_dict)
    with open_checkpoint(path) as ck:
        assert ck.format == "safetensors"
        assert_same_tensors(ck, state_dict)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".ckpt"])
def test_torch_save_state_dict_opens_under_every_suffix(tmp_path: Path, state_dict, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    torch.save(state_dict, path)
    with open_checkpoint(path) as ck:
        assert ck.format == "pytorch"
        assert_same_tensors(ck, state_dict)


def test_opening_a_pt_file_reads_no_tensor_data(tmp_path: Path, state_dict, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    torch.save(state_dict, path)
    reads: list[int] = []
    real = file_io.pread_bytes
    monkeypatch.setattr(file_io, "pread_bytes", lambda fd, off, n, label, cancel=None: reads.append(n) or real(fd, off, n, label, cancel))
    with open_checkpoint(path) as ck:
        assert reads == []
        assert ck.info("head.weight").shape == (3, 4)
        ck.get_tensor("head.weight")
        assert reads == [3 * 4 * 4]


@pytest.mark.parametrize(
    ("wrapped", "wrapper"),
    [
        (lambda sd: {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}}, "state_dict"),
        (lambda sd: {"model": sd, "args": [1, 2]}, "model"),
        (lambda sd: {"model_state_dict": sd}, "model_state_dict"),
        (lambda sd: {"ema": {"module": sd}}, "ema.module"),
        (lambda sd: {"model": {"state_dict": sd}}, "model.state_dict"),
    ],
)
def test_common_training_wrappers_are_unwrapped_and_named(tmp_path: Path, state_dict, wrapped, wrapper) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped(state_dict), path)
    with open_checkpoint(path) as ck:
        assert ck.metadata["unwrapped_from"] == wrapper
        assert_same_tensors(ck, state_dict)


def test_non_tensor_entries_are_skipped_and_listed_in_the_summary(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {**state_dict, "step": 7}, "epoch": 3}, path)
    with open_checkpoint(path) as ck:
        summary = ck.summary()
        assert "step" not in ck
    listed = summary.metadata["skipped_entries"]
    assert "epoch (int)" in listed and "step (int)" in listed


def test_data_parallel_module_prefix_is_removed(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "dp.pt"
    torch.save({f"module.{k}": v for k, v in state_dict.items()}, path)
    with open_checkpoint(path) as ck:
        assert ck.metadata["stripped_prefix"] == "module."
        assert_same_tensors(ck, state_dict)


def test_views_tied_and_transposed_tensors_read_correctly_whole_and_in_ranges(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "base": base,
        "rows": base[1:4],
        "strided": base[:, 1::3],
        "transposed": base.t(),
        "tied": base,
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "half": torch.randn(3, 5).half(),
    }
    path = tmp_path / "views.pt"
    torch.save(tensors, path)
    with open_checkpoint(path) as ck:
        assert_same_tensors(ck, tensors)
        for name, tensor in tensors.items():
            assert torch.equal(ck.get_flat(name, 2, 7), tensor.reshape(-1)[2:7]), name
        assert ck.get_tensor("tied").data_ptr() != ck.get_tensor("base").data_ptr()


def test_legacy_torch_save_format_opens(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "old.pt"
    torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as ck:
        assert "legacy" in ck.metadata["storage"]
        assert_same_tensors(ck, state_dict)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_bare_tensor_is_refused_saying_what_the_file_holds(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.ones(3), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"t.pt holds a single tensor \(shape \[3\], float32\), "
                       r"not a checkpoint: a checkpoint maps tensor names to tensors"):
        open_checkpoint(path)


def test_a_list_is_refused_with_a_clear_reason(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(3), torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match=r"list.pt holds a list of 2, not a checkpoint: a checkpoint maps"):
        open_checkpoint(path)


def test_a_dict_without_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cfg.pt"
    torch.save({"lr": 0.1, "epochs": 3}, path)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        open_checkpoint(path)


def test_a_raw_pickle_of_plain_tensors_opens(tmp_path: Path, state_dict) -> None:
    path = write_legacy_pickle(tmp_path / "raw.bin", {"w": 1})
    with pytest.raises(CheckpointError):  # a plain pickle of non-tensors: nothing to merge
        open_checkpoint(path)
    torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    with open_checkpoint(path) as ck:
        assert_same_tensors(ck, state_dict)


def test_reading_after_close_reopens_the_file(tmp_path: Path, state_dict) -> None:
    path = write_safetensors(tmp_path / "a.safetensors", state_dict)
    ck = open_checkpoint(path)
    ck.get_tensor("head.bias")
    ck.close()
    assert torch.equal(ck.get_tensor("head.bias"), state_dict["head.bias"])
    ck.close()


def test_supported_suffixes_list_every_format() -> None:
    assert {".safetensors", ".pt", ".pth", ".bin", ".pt2", ".index.json"} <= set(SUPPORTED_SUFFIXES)


def test_an_unknown_suffix_names_what_is_supported(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x04onnx")
    with pytest.raises(CheckpointError, match=r"unsupported file type \.onnx"):
        open_checkpoint(path)


def test_a_missing_path_says_it_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        open_checkpoint(tmp_path / "nope.safetensors")


def test_without_storage_offsets_from_torch_the_reader_falls_back_to_a_memory_map(
    tmp_path: Path, state_dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from merge_studio.core.checkpoints import torch_reader

    monkeypatch.setattr(torch_reader, "checkpoint_offset", lambda t: None)
    path = tmp_path / "model.pt"
    torch.save({"model": state_dict, "step": 1}, path)
    with open_checkpoint(path) as ck:
        assert ck.metadata["unwrapped_from"] == "model"
        assert ck.skipped == ["step (int)"]
        assert_same_tensors(ck, state_dict)


def test_several_threads_can_read_one_checkpoint_at_once(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tensors = {f"w{i}": torch.randn(64, 64) for i in range(16)}
    path = tmp_path / "many.pt"
    torch.save(tensors, path)
    with open_checkpoint(path) as ck, ThreadPoolExecutor(4) as pool:
        results = dict(zip(tensors, pool.map(ck.get_tensor, tensors)))
    assert all(torch.equal(results[k], v) for k, v in tensors.items())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantized_tensors_are_skipped_and_listed(tmp_path: Path) -> None:
    quantized = torch.quantize_per_tensor(torch.randn(4), 0.1, 0, torch.qint8)
    path = tmp_path / "q.pt"
    torch.save({"q": quantized, "w": torch.ones(2)}, path)
    with open_checkpoint(path) as ck:
        assert ck.keys() == ["w"]
        assert ck.skipped == ["q (quantized tensor)"]
        assert "q (quantized tensor)" in ck.summary().metadata["skipped_entries"]
        assert torch.equal(ck.get_tensor("w"), torch.ones(2))
