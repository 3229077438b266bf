"""``merge-studio graph`` writes pictures headless, and explains what it cannot do."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.cli import graph_cmd
from merge_studio.core.arch import arch_metadata, build_module
from merge_studio.graph.render import dot_available

needs_dot = pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="merge-studio")
    graph_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["graph", *argv])
    return args.func(args)


@pytest.fixture
def gpt_pair(tmp_path):
    """A small GPT checkpoint and a 'merged' one that moved its attention weights."""
    spec = "zoo:gpt?d_model=16&n_layer=1&n_head=2&vocab_size=32&block_size=8"
    torch.manual_seed(0)
    state = build_module(spec).state_dict()
    merged = {k: v * 1.5 if "attn" in k else v.clone() for k, v in state.items()}
    a, m = tmp_path / "a.safetensors", tmp_path / "merged.safetensors"
    save_file(state, a, metadata=arch_metadata(spec))
    save_file(merged, m, metadata=arch_metadata(spec))
    return a, m


@needs_dot
def test_arch_alone_is_drawn_to_png(tmp_path, capsys):
    out = tmp_path / "resnet.png"
    assert run_cli("--arch", "zoo:resnet20?width=2", "--depth", "2", "-o", str(out)) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "architecture zoo:resnet20?width=2" in capsys.readouterr().out


@needs_dot
def test_checkpoint_is_drawn_with_its_recorded_architecture(gpt_pair, tmp_path):
    _, merged = gpt_pair
    out = tmp_path / "g.svg"
    assert run_cli(str(merged), "-o", str(out)) == 0
    assert "blocks.0.attn.q_proj" in out.read_text()


@needs_dot
def test_unknown_checkpoint_is_drawn_as_its_module_tree(tmp_path, capsys):
    path = tmp_path / "odd.safetensors"
    save_file({"trunk.a.weight": torch.zeros(3, 3), "trunk.b.weight": torch.zeros(3)}, path)
    out = tmp_path / "tree.svg"
    assert run_cli(str(path), "-o", str(out)) == 0
    assert "module tree" in capsys.readouterr().out
    assert "trunk" in out.read_text()


@needs_dot
def test_relative_change_overlay_colours_the_changed_layers(gpt_pair, tmp_path):
    a, merged = gpt_pair
    out = tmp_path / "change.svg"
    assert run_cli(str(merged), "--overlay", "relative-change", "--against", str(a), "-o", str(out)) == 0
    svg = out.read_text()
    assert "relative change" in svg
    assert "#fde725" in svg  # the attention projections moved by 50%: top of the scale


def test_overlay_without_a_reference_is_an_error(gpt_pair, tmp_path, capsys):
    _, merged = gpt_pair
    assert run_cli(str(merged), "--overlay", "cosine", "-o", str(tmp_path / "x.svg")) == 1
    assert "--against" in capsys.readouterr().err


def test_unsupported_output_type_is_an_error(tmp_path, capsys):
    assert run_cli("--arch", "zoo:mlp", "-o", str(tmp_path / "x.pdf")) == 1
    assert ".svg or .png" in capsys.readouterr().err


def test_nothing_to_draw_is_an_error(tmp_path, capsys):
    assert run_cli("-o", str(tmp_path / "x.svg")) == 1
    assert "CHECKPOINT" in capsys.readouterr().err


def test_without_graphviz_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert run_cli("--arch", "zoo:mlp", "-o", str(tmp_path / "x.svg")) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install graphviz" in err and "brew install graphviz" in err
    assert not (tmp_path / "x.svg").exists()


def test_bad_architecture_spelling_lists_the_forms(tmp_path, capsys):
    assert run_cli("--arch", "resnet", "-o", str(tmp_path / "x.svg")) == 1
    assert "zoo:NAME" in capsys.readouterr().err
