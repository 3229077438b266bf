"""User factories (file or module) and .pt2 exported programs build and bind like the zoo."""

from __future__ import annotations

import sys

import pytest
import torch

from merge_studio.core.arch import build_module, detect_arch, example_input
from merge_studio.errors import ArchitectureError

FACTORY = '''
import torch
from torch import nn

example_input_shape = (6,)


def build(hidden: int = 4, scale: float = 1.0, bias: bool = True):
    model = nn.Sequential(nn.Linear(6, hidden, bias=bias), nn.ReLU(), nn.Linear(hidden, 3))
    model.scale = scale
    return model


def with_input(width=5):
    return nn.Linear(width, 2), torch.ones(1, width)


def broken():
    raise ValueError("no GPU here")


def not_a_module():
    return 42
'''


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def test_factory_file_builds_with_coerced_keyword_arguments(factory):
    model = build_module(f"{factory}:build?hidden=7&scale=0.5&bias=false")
    assert model[0].out_features == 7 and model[0].bias is None and model.scale == 0.5


def test_factory_example_input_comes_from_the_shape_attribute(factory):
    x = example_input(f"{factory}:build", batch_size=3)
    assert x.shape == (3, 6)
    assert build_module(f"{factory}:build")(x).shape == (3, 3)


def test_factory_may_return_its_own_example_input(factory):
    assert example_input(f"{factory}:with_input?width=4").shape == (1, 4)


def test_factory_failures_are_explained(factory, tmp_path):
    with pytest.raises(ArchitectureError, match="no GPU here"):
        build_module(f"{factory}:broken")
    with pytest.raises(ArchitectureError, match="not an nn.Module"):
        build_module(f"{factory}:not_a_module")
    with pytest.raises(ArchitectureError, match="has no function 'missing'") as info:
        build_module(f"{factory}:missing")
    assert "build" in info.value.hint
    with pytest.raises(ArchitectureError, match="does not accept"):
        build_module(f"{factory}:build?depth=3")
    with pytest.raises(ArchitectureError, match="does not exist"):
        build_module(f"{tmp_path / 'nope.py'}:build")


def test_two_factory_files_with_the_same_name_stay_apart(tmp_path):
    for folder, width in (("a", 3), ("b", 5)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "model.py").write_text(
            f"from torch import nn\ndef build():\n    return nn.Linear({width}, 1)\n"
        )
    assert build_module(f"{tmp_path / 'a' / 'model.py'}:build").in_features == 3
    assert build_module(f"{tmp_path / 'b' / 'model.py'}:build").in_features == 5


def test_module_factory_is_imported_by_name(factory, monkeypatch):
    monkeypatch.syspath_prepend(str(factory.parent))
    monkeypatch.delitem(sys.modules, "net", raising=False)
    model = build_module("net:build?hidden=2")
    assert model[0].out_features == 2


def test_missing_module_is_explained():
    with pytest.raises(ArchitectureError, match="cannot import module"):
        build_module("no_such_package.models:build")


def test_factory_binds_a_state_dict_strictly(factory):
    source = build_module(f"{factory}:build?hidden=4")
    bound = build_module(f"{factory}:build?hidden=4", source.state_dict())
    assert torch.equal(bound[0].weight, source[0].weight)
    with pytest.raises(ArchitectureError, match="0.weight"):
        build_module(f"{factory}:build?hidden=5", source.state_dict())


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(3, 5),)), str(path))
    return path, model


def test_exported_program_carries_its_module_and_example_input(exported):
    path, original = exported
    module = build_module(str(path))
    x = example_input(str(path))
    assert x.shape == (3, 5)
    assert torch.allclose(module(x), original(x))
    assert [n for n, _ in module.named_children()] == ["0", "1", "2"]


def test_exported_program_binds_other_weights(exported):
    path, original = exported
    other = {k: v + 1 for k, v in original.state_dict().items()}
    module = build_module(str(path), other)
    assert torch.equal(module.state_dict()["0.weight"], other["0.weight"])


def test_pt2_path_is_its_own_architecture(exported):
    path, _ = exported

    class Fake:
        metadata: dict = {}
        infos: dict = {}

    fake = Fake()
    fake.path = path
    assert detect_arch(fake) == str(path)
