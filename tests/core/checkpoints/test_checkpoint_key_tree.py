"""Tensor names read as a module tree, as the inspector shows them."""

from __future__ import annotations

import torch

from merge_studio.core.checkpoints import TensorInfo, build_key_tree


def infos(**shapes: tuple[int, ...]) -> dict[str, TensorInfo]:
    return {name.replace("__", "."): TensorInfo(name.replace("__", "."), shape, torch.float32)
            for name, shape in shapes.items()}


def sample() -> dict[str, TensorInfo]:
    return infos(
        embed__weight=(10, 4),
        layers__0__attn__q__weight=(4, 4),
        layers__0__attn__q__bias=(4,),
        layers__1__attn__q__weight=(4, 4),
        layers__1__attn__q__bias=(4,),
        head__weight=(3, 4),
        scale=(),
    )


def test_dotted_names_become_a_module_hierarchy_with_numeric_segments_as_children() -> None:
    root = build_key_tree(sample())
    assert list(root.children) == ["embed", "layers", "head"]
    layers = root.find("layers")
    assert layers is not None and list(layers.children) == ["0", "1"]
    q = root.find("layers.1.attn.q")
    assert q is not None and q.path == "layers.1.attn.q" and q.name == "q"
    assert list(q.tensors) == ["weight", "bias"]
    assert q.tensors["weight"].shape == (4, 4) and q.tensors["weight"].dtype == torch.float32


def test_each_node_counts_the_parameters_of_its_subtree() -> None:
    root = build_key_tree(sample())
    assert root.parameter_count == 40 + 2 * (16 + 4) + 12 + 1
    assert root.find("layers").parameter_count == 40
    assert root.find("layers.0").tensor_count == 2
    assert root.find("layers.0").nbytes == 20 * 4


def test_top_level_tensors_sit_on_the_root() -> None:
    root = build_key_tree(sample())
    assert list(root.tensors) == ["scale"]
    assert root.find("") is root


def test_walk_visits_parents_before_children_and_module_paths_lists_tensor_holders() -> None:
    root = build_key_tree(sample())
    paths = [n.path for n in root.walk()]
    assert paths.index("layers") < paths.index("layers.0") < paths.index("layers.0.attn.q")
    assert root.module_paths() == ["", "embed", "layers.0.attn.q", "layers.1.attn.q", "head"]


def test_find_returns_none_for_a_path_that_is_not_there() -> None:
    root = build_key_tree(sample())
    assert root.find("layers.7") is None
    assert root.find("embed.weight.x") is None


def test_every_tensor_appears_once_even_when_a_name_is_also_a_module() -> None:
    tree = build_key_tree(infos(a__b=(2,), a__b__c=(3,)))
    assert tree.find("a").tensors["b"].shape == (2,)
    assert tree.find("a.b").tensors["c"].shape == (3,)
    assert sorted(tree.tensor_names()) == ["a.b", "a.b.c"]


def test_an_empty_checkpoint_gives_an_empty_root() -> None:
    root = build_key_tree({})
    assert root.is_leaf and root.parameter_count == 0 and root.module_paths() == []


def test_a_checkpoint_gives_its_own_tree(tmp_path) -> None:
    from merge_studio.core.checkpoints import open_checkpoint
    from tests.core.checkpoints.conftest import tiny_state_dict, write_safetensors

    with open_checkpoint(write_safetensors(tmp_path / "m.safetensors", tiny_state_dict())) as ck:
        tree = ck.key_tree()
    assert tree.parameter_count == ck.summary().parameter_count
    assert tree.find("layers.1.0").tensors["weight"].shape == (4, 4)
