"""Hugging Face folders from a terminal: perplexity, perplexity barriers and the collapsed graph."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from merge_studio.cli.main import main  # noqa: E402
from merge_studio.graph.render import dot_available  # noqa: E402
from tests.hf_models import make_hf_folder, training_text  # noqa: E402


@pytest.fixture(scope="module")
def llamas(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-lm")
    text = root / "code.txt"
    text.write_text(training_text()[:6000])
    return (str(make_hf_folder(root / "a", "llama", seed=1)), str(make_hf_folder(root / "b", "llama", seed=2)),
            str(text))


def test_evaluate_two_folders_on_text_prints_perplexity_per_model(llamas, capsys):
    a, b, text = llamas
    code = main(["evaluate", a, b, "--data", text, "--seq-len", "32", "--max-tokens", "400", "--threads", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    header, row_a, row_b = out.strip().splitlines()
    assert header.split() == ["model", "loss", "perplexity", "next-token", "acc", "tokens"]
    assert row_a.split()[0] == "a" and row_b.split()[0] == "b" and row_a.split()[-1] == "384"


def test_barrier_between_two_folders_reports_perplexity_and_saves_the_plot(llamas, capsys, tmp_path):
    a, b, text = llamas
    plot = tmp_path / "barrier.png"
    code = main(["barrier", a, b, "--data", text, "--seq-len", "32", "--max-tokens", "400", "--steps", "3",
                 "--threads", "1", "--quiet", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["curve", "ppl", "A", "ppl"]
    assert out.splitlines()[1].startswith("naive")
    assert plot.stat().st_size > 10_000


def test_text_data_without_a_tokenizer_is_a_clear_error(tmp_path, capsys):
    from tests.hf_models import make_hf_folder

    a = make_hf_folder(tmp_path / "a", "llama", tokenizer=False)
    (tmp_path / "t.txt").write_text("hello")
    assert main(["evaluate", str(a), "--data", str(tmp_path / "t.txt"), "--quiet"]) == 1
    assert "needs a tokenizer" in capsys.readouterr().err


@pytest.mark.skipif(not dot_available(), reason="Graphviz 'dot' is not installed")
def test_graph_of_a_folder_draws_its_decoder_layers_once(tmp_path, capsys):
    folder = make_hf_folder(tmp_path / "deep", "llama", num_hidden_layers=6)
    assert main(["graph", str(folder), "-o", str(tmp_path / "g.svg")]) == 0
    out = capsys.readouterr().out
    assert f"architecture hf:{folder.resolve()}" in out
    assert "model.layers.0–5: 6 identical LlamaDecoderLayer drawn once (--expand model.layers draws each)" in out
