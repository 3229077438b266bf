"""Choosing evaluation data: digits, tensors files, user factories, safe loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from merge_studio.core.evaluate.data import DataError, DataSpec, load_data


def test_digits_split_is_fixed_by_the_seed_and_disjoint():
    first = load_data(DataSpec(seed=3))
    again = load_data(DataSpec(seed=3))
    other = load_data(DataSpec(seed=4))
    assert torch.equal(first.test.inputs, again.test.inputs)
    assert not torch.equal(first.test.inputs, other.test.inputs)
    assert len(first.train) + len(first.test) == 1797
    assert len(first.test) == round(1797 * 0.25)
    assert first.num_classes == 10


def test_digits_come_as_images_for_a_cnn_and_as_vectors_for_an_mlp(make_mlp, make_bn_cnn):
    assert load_data("digits", for_module=make_bn_cnn(0)).train.inputs.shape[1:] == (1, 8, 8)
    assert load_data("digits", for_module=make_mlp(0)).train.inputs.shape[1:] == (64,)
    assert float(load_data("digits").train.inputs.max()) <= 1.0


def test_max_examples_caps_each_split():
    data = load_data(DataSpec(max_examples=50))
    assert len(data.train) == 50 and len(data.test) == 50


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
def test_a_tensors_file_with_inputs_and_targets_is_split_for_evaluation(tmp_path, suffix):
    x = torch.randn(40, 6)
    y = torch.arange(40) % 3
    path = tmp_path / f"data{suffix}"
    if suffix == ".safetensors":
        save_file({"inputs": x, "targets": y}, str(path))
    elif suffix == ".pt":
        torch.save({"inputs": x, "targets": y}, path)
    else:
        np.savez(path, inputs=x.numpy(), targets=y.numpy())
    data = load_data(DataSpec(source=str(path), test_fraction=0.25))
    assert len(data.train) == 30 and len(data.test) == 10
    assert data.train.targets.dtype == torch.int64
    assert data.num_classes == 3


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"inputs": Evil()}, path)
    with pytest.raises(DataError, match="evil.pt"):
        load_data(DataSpec(source=str(path)))


def test_a_file_without_inputs_names_what_it_holds(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"features": torch.zeros(3, 2)}, str(path))
    with pytest.raises(DataError, match="features"):
        load_data(DataSpec(source=str(path)))


def test_language_modelling_tokens_without_targets_predict_the_next_token(tmp_path):
    path = tmp_path / "tokens.pt"
    tokens = torch.randint(0, 50, (20, 9))
    torch.save({"inputs": tokens}, path)
    data = load_data(DataSpec(source=str(path), task="language_modeling"))
    assert data.train.inputs.shape[1] == 8 and data.train.targets.shape[1] == 8
    assert data.train.inputs.dtype == torch.int64


def test_a_user_factory_returning_train_and_test_datasets_is_used_as_given(tmp_path):
    code = (
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def make_dataset():\n"
        "    x = torch.ones(12, 4)\n"
        "    return TensorDataset(x, torch.zeros(12, dtype=torch.long)), TensorDataset(x[:5], torch.ones(5, dtype=torch.long))\n"
    )
    (tmp_path / "mydata.py").write_text(code)
    data = load_data(DataSpec(source=f"{tmp_path / 'mydata.py'}:make_dataset"))
    assert len(data.train) == 12 and len(data.test) == 5


def test_a_broken_factory_says_which_file_failed(tmp_path):
    (tmp_path / "bad.py").write_text("def make_dataset():\n    raise RuntimeError('no disk')\n")
    with pytest.raises(DataError, match=r"bad.py:make_dataset\(\) failed.*no disk"):
        load_data(DataSpec(source=str(tmp_path / "bad.py")))


def test_an_unknown_source_tells_the_user_what_is_accepted():
    with pytest.raises(DataError) as info:
        load_data(DataSpec(source="imagenet"))
    assert "digits" in str(info.value)
