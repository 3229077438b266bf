"""``.pt2`` programs: their weights open like any checkpoint, and the program itself is
rebuilt without running anything a hostile file smuggles in."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import load_exported_program, open_checkpoint
from merge_studio.errors import CheckpointError, UnsafeCheckpointError
from tests.core.checkpoints.conftest import PlantMarker, pt2_record, rewrite_zip, torch_bytes


def _edit_json(path: Path, suffix: str, edit, out: Path) -> Path:
    name = pt2_record(path, suffix)
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read(name))
    edit(data)
    return rewrite_zip(path, out, change={name: json.dumps(data).encode()})


def test_pt2_weights_buffers_and_constants_open_lazily(exported_program_file: Path) -> None:
    reference = torch.export.load(str(exported_program_file))
    with open_checkpoint(exported_program_file) as ck:
        assert ck.format == "pt2"
        assert ck.parameter_names == ["fc.weight", "fc.bias", "norm.weight", "norm.bias"]
        assert ck.buffer_names == ["norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]
        assert set(ck.constant_names) == {"offset", "scale"}
        for name in ck.keys():
            expected = reference.state_dict.get(name, reference.constants.get(name))
            assert torch.equal(ck.get_tensor(name), expected), name
        assert torch.equal(ck.get_flat("fc.weight", 2, 5), reference.state_dict["fc.weight"].reshape(-1)[2:5])


def test_load_exported_program_gives_a_working_module(exported_program_file: Path) -> None:
    program = load_exported_program(exported_program_file)
    reference = torch.export.load(str(exported_program_file))
    x = torch.randn(5, 3)
    assert torch.allclose(program.module()(x), reference.module()(x))
    args, _ = program.example_inputs
    assert args[0].shape == (2, 3)


def test_a_pickled_weight_that_plants_a_file_is_refused(exported_program_file: Path, tmp_path: Path,
                                                        marker: Path) -> None:
    def mark_pickled(data: dict) -> None:
        data["config"]["fc.weight"]["use_pickle"] = True

    staged = _edit_json(exported_program_file, "model_weights_config.json", mark_pickled, tmp_path / "staged.pt2")
    record = pt2_record(staged, "data/weights/" + json.loads(
        zipfile.ZipFile(staged).read(pt2_record(staged, "model_weights_config.json")))["config"]["fc.weight"]["path_name"])
    evil = rewrite_zip(staged, tmp_path / "evil.pt2", change={record: torch_bytes(PlantMarker(marker))})
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt2"):
        open_checkpoint(evil)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt2"):
        load_exported_program(evil)
    assert not marker.exists()


def test_hostile_example_inputs_are_dropped_not_unpickled(exported_program_file: Path, tmp_path: Path,
                                                          marker: Path) -> None:
    record = pt2_record(exported_program_file, "data/sample_inputs/model.pt")
    evil = rewrite_zip(exported_program_file, tmp_path / "inputs.pt2",
                       change={record: torch_bytes(((PlantMarker(marker),), {}))})
    program = load_exported_program(evil)
    assert program.example_inputs is None
    assert not marker.exists()


def test_a_custom_object_constant_is_listed_and_refused_for_rebuilding(exported_program_file: Path,
                                                                       tmp_path: Path, marker: Path) -> None:
    def add_custom(data: dict) -> None:
        data["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}

    staged = _edit_json(exported_program_file, "model_constants_config.json", add_custom, tmp_path / "s.pt2")
    root = pt2_record(staged, "archive_format").split("/")[0]
    evil = rewrite_zip(staged, tmp_path / "custom.pt2",
                       change={f"{root}/data/constants/opaque_obj_0": torch_bytes(PlantMarker(marker))})
    with open_checkpoint(evil) as ck:
        assert "evil" not in ck
        assert "evil (custom object)" in ck.metadata["skipped_entries"]
    with pytest.raises(UnsafeCheckpointError, match=r"custom\.pt2 holds custom Python objects"):
        load_exported_program(evil)
    assert not marker.exists()


def test_guard_code_from_the_file_never_runs(exported_program_file: Path, tmp_path: Path, marker: Path) -> None:
    def add_guard(data: dict) -> None:
        data["guards_code"] = [f"__import__('os').system('touch {marker}')"]

    evil = _edit_json(exported_program_file, "models/model.json", add_guard, tmp_path / "guards.pt2")
    program = load_exported_program(evil)
    program.module()(torch.randn(2, 3))
    assert not marker.exists()


def test_a_shape_expression_with_python_code_is_refused(exported_program_file: Path, tmp_path: Path,
                                                        marker: Path) -> None:
    payload = f"__import__('os').system('touch {marker}')"

    def poison(data: dict) -> None:
        text = json.dumps(data)
        data.clear()
        data.update(json.loads(text.replace('"expr_str": "', '"expr_str": "' + payload.replace("'", "\\u0027") + ' + ', 1)))

    evil = _edit_json(exported_program_file, "models/model.json", poison, tmp_path / "expr.pt2")
    with pytest.raises(UnsafeCheckpointError, match=r"expr\.pt2: the program contains the shape expression"):
        load_exported_program(evil)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["torch.hub.load", "builtins.exec", "_operator.attrgetter",
                                    "torch.ops.import_module.x", "torch.ops.aten.__class__"])
def test_a_node_calling_anything_but_an_operator_is_refused(exported_program_file: Path, tmp_path: Path,
                                                            target: str) -> None:
    def retarget(data: dict) -> None:
        data["graph_module"]["graph"]["nodes"][0]["target"] = target

    evil = _edit_json(exported_program_file, "models/model.json", retarget, tmp_path / "target.pt2")
    with pytest.raises(CheckpointError, match=r"target\.pt2"):
        load_exported_program(evil)


def test_a_weight_record_shorter_than_its_tensor_is_refused(exported_program_file: Path, tmp_path: Path) -> None:
    record = pt2_record(exported_program_file, "data/weights/weight_0")
    cut = rewrite_zip(exported_program_file, tmp_path / "cut.pt2", change={record: b"\0" * 8})
    with pytest.raises(CheckpointError, match=r"cut\.pt2: weight 'fc\.weight' needs more bytes"):
        open_checkpoint(cut)


def test_a_torch_save_file_named_pt2_says_it_is_not_a_program(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "weights.pt2"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match=r"weights\.pt2 is a zip archive but not a torch\.export program"):
        open_checkpoint(path)


def test_a_pt2_renamed_pt_is_pointed_back_to_pt2(exported_program_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "program.pt"
    path.write_bytes(exported_program_file.read_bytes())
    with pytest.raises(CheckpointError, match=r"program\.pt is a torch\.export program"):
        open_checkpoint(path)
