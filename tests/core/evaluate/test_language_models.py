"""Causal language models: text cut into token windows, perplexity, and barriers between HF folders."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("transformers")

from merge_studio.core.evaluate.data import DataError, DataSpec, load_data  # noqa: E402
from merge_studio.core.evaluate.jobs import BarrierRequest, EvaluateRequest  # noqa: E402
from merge_studio.core.evaluate.streaming import LazyState, StreamingInterpolator  # noqa: E402
from merge_studio.core.evaluate.text import TextDataError  # noqa: E402
from merge_studio.core.progress import CancelToken, drive  # noqa: E402
from merge_studio.errors import Cancelled  # noqa: E402
from tests.hf_models import make_hf_folder, training_text  # noqa: E402

TEXT = training_text()[:20_000]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one torch thread is fastest, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    a = make_hf_folder(root / "llama_a", "llama", seed=1)
    b = make_hf_folder(root / "llama_b", "llama", seed=2)
    text = root / "corpus.txt"
    text.write_text(TEXT)
    return a, b, text


def _spec(source, folder, **kw):
    return DataSpec(source=str(source), tokenizer=str(folder), **kw)


def test_a_text_file_becomes_next_token_windows_within_the_budget(folders):
    a, _, text = folders
    data = load_data(_spec(text, a, seq_len=32, max_tokens=1000))
    assert data.task == "language_modeling" and data.tokens == 1000
    assert data.test.inputs.shape == (31, 32)  # (1000 - 1) // 32 windows
    assert torch.equal(data.test.inputs[:, 1:], data.test.targets[:, :-1])
    assert torch.equal(data.test.inputs[1, 0], data.test.targets[0, -1])  # windows meet: every token predicted once
    assert data.describe() == "corpus.txt: 1,000 tokens in 31 windows of 32"


def test_a_folder_of_text_files_and_a_jsonl_read_the_same_documents(folders, tmp_path):
    a, _, _ = folders
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "1.txt").write_text("def first():\n    return 1\n")
    (tmp_path / "docs" / "2.txt").write_text("import os\nprint(os.sep)\n")
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in (
        "def first():\n    return 1\n", "import os\nprint(os.sep)\n")) + "\n")
    from_folder = load_data(_spec(tmp_path / "docs", a, seq_len=8))
    from_jsonl = load_data(_spec(tmp_path / "docs.jsonl", a, seq_len=8))
    assert torch.equal(from_folder.test.inputs, from_jsonl.test.inputs)


def test_a_jsonl_line_without_text_is_named(folders, tmp_path):
    a, _, _ = folders
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"prompt": "no text here"}\n')
    with pytest.raises(TextDataError, match=r'bad.jsonl line 2 has no "text" string \(it has: prompt\)'):
        load_data(_spec(path, a))


def test_text_without_a_tokenizer_says_where_one_comes_from(folders):
    _, _, text = folders
    with pytest.raises(TextDataError, match="needs a tokenizer") as info:
        load_data(DataSpec(source=str(text)))
    assert "Hugging Face model folders" in info.value.hint


def test_text_with_a_classification_task_is_refused(folders):
    a, _, text = folders
    with pytest.raises(DataError, match="only language models"):
        load_data(_spec(text, a, task="classification"))


def test_windows_are_no_longer_than_the_models_context(folders):
    from merge_studio.core.arch import build_module

    a, _, text = folders
    module = build_module(f"hf:{a}")  # max_position_embeddings = 128
    data = load_data(_spec(text, a, seq_len=4096, max_tokens=2000), for_module=module)
    assert data.test.inputs.shape[1] == 128


def test_perplexity_of_two_folders_matches_transformers_own_loss(folders):
    from transformers import AutoModelForCausalLM

    a, b, text = folders
    spec = DataSpec(source=str(text), seq_len=32, max_tokens=600)
    scores = drive(EvaluateRequest(models=(str(a), str(b)), data=spec, device="cpu").job())
    assert scores.task == "language_modeling" and list(scores.results) == ["test"]
    result = scores.results["test"][0]
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.tokens == 18 * 32 and 0.0 <= result.accuracy <= 1.0
    data = load_data(_spec(text, a, seq_len=32, max_tokens=600))
    model = AutoModelForCausalLM.from_pretrained(a).eval()
    with torch.no_grad():
        logits = model(data.test.inputs).logits
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.test.targets.reshape(-1))
    assert result.loss == pytest.approx(float(expected), rel=1e-5)
    assert scores.results["test"][1].loss != pytest.approx(result.loss)


def test_a_perplexity_barrier_between_two_folders_starts_and_ends_at_their_perplexities(folders):
    a, b, text = folders
    spec = DataSpec(source=str(text), seq_len=32, max_tokens=600)
    scores = drive(EvaluateRequest(models=(str(a), str(b)), data=spec, device="cpu").job())
    report = drive(BarrierRequest(model_a=str(a), model_b=str(b), data=spec, steps=3, device="cpu").job())
    curve = report.curve("naive")
    assert report.task == "language_modeling" and curve.splits == ("test",)
    assert curve.losses["test"][0] == pytest.approx(scores.results["test"][0].loss, rel=1e-6)
    assert curve.losses["test"][-1] == pytest.approx(scores.results["test"][1].loss, rel=1e-6)
    assert report.data.startswith("corpus.txt: 600 tokens")


def test_a_barrier_between_tied_models_reads_the_head_from_the_embeddings(tmp_path):
    a = make_hf_folder(tmp_path / "qa", "qwen2", seed=1)
    b = make_hf_folder(tmp_path / "qb", "qwen2", seed=2)
    (tmp_path / "t.txt").write_text(TEXT[:3000])
    report = drive(BarrierRequest(model_a=str(a), model_b=str(b), steps=2, device="cpu",
                                  data=DataSpec(source=str(tmp_path / "t.txt"), seq_len=16, max_tokens=200)).job())
    assert all(math.isfinite(v) for v in report.curve("naive").losses["test"])


def test_streaming_interpolation_writes_the_midpoint_into_the_modules_own_tensors(folders):
    from merge_studio.core.arch import build_module

    a, b, _ = folders
    module = build_module(f"hf:{a}", init_weights=False)
    before = {k: t.data_ptr() for k, t in module.state_dict().items()}
    with LazyState(a, keep=False) as state_a, LazyState(b, keep=False) as state_b:
        interp = StreamingInterpolator(module, [state_a, state_b], ["A", "B"], torch.device("cpu"))
        interp.set(0.5)
        assert not state_a._kept and not state_b._kept  # nothing held beyond the tensor in hand
        key = "model.layers.1.mlp.up_proj.weight"
        assert torch.allclose(module.state_dict()[key], (state_a[key] + state_b[key]) / 2, atol=1e-7)
    assert {k: t.data_ptr() for k, t in module.state_dict().items()} == before


def test_cancelling_a_language_model_barrier_stops_it(folders):
    a, b, text = folders
    cancel = CancelToken()
    job = BarrierRequest(model_a=str(a), model_b=str(b), steps=5, device="cpu",
                         data=DataSpec(source=str(text), seq_len=32, max_tokens=600)).job(cancel)
    next(job)
    cancel.cancel()
    with pytest.raises(Cancelled):
        for _ in job:
            pass
