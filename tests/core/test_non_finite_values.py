"""NaN and infinity never slip into a merged model unnoticed, and huge reads have a way out."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from merge_studio.core import chunk_tasks, engine
from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.core.checkpoints import file_io
from merge_studio.core.checkpoints.compat import check_compatibility
from merge_studio.core.engine import run_merge
from merge_studio.core.finite import NonFinite, NonFiniteValuesError, scan_checkpoint
from merge_studio.core.hashing import HashingStopped, file_sha256
from merge_studio.core.progress import CancelToken, drive
from merge_studio.core.recipe import Recipe
from merge_studio.errors import Cancelled
from tests.core.conftest import tiny_state


def _recipe(paths, out, **kw) -> Recipe:
    return Recipe(models=[{"path": str(p)} for p in paths], output=str(out), **kw)


def with_nan(seed: int, name: str = "layers.0.weight") -> dict[str, torch.Tensor]:
    state = tiny_state(seed)
    state[name].view(-1)[3] = float("nan")
    return state


def test_a_nan_in_one_input_stops_the_merge_naming_tensor_and_model(make_checkpoint, tmp_path) -> None:
    good = make_checkpoint("good.safetensors", seed=0)
    bad = make_checkpoint("diverged.safetensors", with_nan(1))
    out = tmp_path / "out" / "merged.safetensors"
    with pytest.raises(NonFiniteValuesError, match=r"layers\.0\.weight holds NaN or infinite values in diverged\.safetensors"):
        run_merge(_recipe([good, bad], out, method="simple_average"))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_the_base_is_named_when_it_holds_the_infinity(make_checkpoint, tmp_path) -> None:
    base = tiny_state(0)
    base["head.weight"][0] = float("inf")
    paths = [make_checkpoint("base.safetensors", base), make_checkpoint("ft.safetensors", seed=1)]
    with pytest.raises(NonFiniteValuesError, match=r"head\.weight holds NaN or infinite values in base\.safetensors"):
        run_merge(Recipe(method="task_arithmetic", base=str(paths[0]), models=[{"path": str(paths[1])}],
                         output=str(tmp_path / "o.safetensors")))


def test_a_tensor_copied_from_the_base_is_checked_too(make_checkpoint, tmp_path) -> None:
    a = with_nan(0, "head.weight")
    b = tiny_state(1)
    del b["head.weight"]
    paths = [make_checkpoint("a.safetensors", a), make_checkpoint("b.safetensors", b)]
    with pytest.raises(NonFiniteValuesError, match=r"head\.weight holds NaN or infinite values in a\.safetensors"):
        run_merge(_recipe(paths, tmp_path / "o.safetensors", method="simple_average", on_mismatch="copy_base"))


def test_non_finite_values_can_be_allowed_on_purpose(make_checkpoint, tmp_path) -> None:
    paths = [make_checkpoint("a.safetensors", seed=0), make_checkpoint("b.safetensors", with_nan(1))]
    out = tmp_path / "o.safetensors"
    run_merge(_recipe(paths, out, method="simple_average", allow_non_finite=True))
    assert torch.isnan(load_file(out)["layers.0.weight"].view(-1)[3])


def test_values_beyond_float16s_range_are_refused_rather_than_written_as_infinity(make_checkpoint, tmp_path) -> None:
    big = tiny_state(0)
    big["head.weight"][1] = 1e6
    paths = [make_checkpoint("a.safetensors", big), make_checkpoint("b.safetensors", big)]
    with pytest.raises(NonFiniteValuesError, match=r"head\.weight .*float16's range"):
        run_merge(_recipe(paths, tmp_path / "o.safetensors", method="simple_average", dtype="float16"))


def test_the_check_finds_nan_in_any_chunk_of_a_streamed_tensor(make_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(chunk_tasks, "CHUNK_ELEMENTS", 16)
    state = tiny_state(1)
    state["layers.2.weight"][3, 15] = float("-inf")  # the last chunk
    paths = [make_checkpoint("a.safetensors", seed=0), make_checkpoint("b.safetensors", state)]
    with pytest.raises(NonFiniteValuesError, match=r"layers\.2\.weight holds .* in b\.safetensors"):
        run_merge(_recipe(paths, tmp_path / "o.safetensors", method="simple_average"))


def test_large_finite_values_whose_sum_overflows_are_not_mistaken_for_infinity(make_checkpoint, tmp_path) -> None:
    huge = {"w": torch.full((64,), 3e38)}
    paths = [make_checkpoint("a.safetensors", huge), make_checkpoint("b.safetensors", huge)]
    run_merge(_recipe(paths, tmp_path / "o.safetensors", method="lerp", params={"t": 0.5}))
    assert torch.equal(load_file(tmp_path / "o.safetensors")["w"], huge["w"])


def test_a_scan_lists_each_tensor_with_its_nan_and_infinity_counts(make_checkpoint) -> None:
    state = with_nan(0)
    state["head.weight"][:2] = float("inf")
    with open_checkpoint(make_checkpoint("m.safetensors", state)) as ck:
        found = drive(scan_checkpoint(ck))
    assert sorted(found, key=lambda f: f.name) == [NonFinite("head.weight", 0, 2), NonFinite("layers.0.weight", 1, 0)]


def test_the_compatibility_report_flags_models_holding_non_finite_values(make_checkpoint) -> None:
    a, b = make_checkpoint("a.safetensors", seed=0), make_checkpoint("b.safetensors", with_nan(1))
    with open_checkpoint(a) as ca, open_checkpoint(b) as cb:
        report = check_compatibility([ca, cb], non_finite={cb.name: drive(scan_checkpoint(cb))})
    assert any("b.safetensors holds NaN or infinite values: layers.0.weight (1 NaN)" in line for line in report.lines())
    assert not report.ok


def test_the_command_line_merge_with_a_nan_exits_non_zero_with_one_line_and_no_output(make_checkpoint, tmp_path) -> None:
    paths = [make_checkpoint("a.safetensors", seed=0), make_checkpoint("nan-model.safetensors", with_nan(1))]
    out = tmp_path / "merged.safetensors"
    proc = subprocess.run([sys.executable, "-m", "merge_studio", "merge", "--method", "simple_average",
                           *map(str, paths), "-o", str(out), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "layers.0.weight" in lines[0] and "nan-model.safetensors" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "nan-model.safetensors"]


def test_hashing_stops_between_blocks_when_asked(tmp_path, monkeypatch) -> None:
    import merge_studio.core.hashing as hashing

    monkeypatch.setattr(hashing, "_BLOCK", 1024)
    path = tmp_path / "big.bin"
    path.write_bytes(bytes(64 * 1024))
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashingStopped):
        file_sha256(path, use_cache=False, stop=stop)


def test_a_failed_merge_stops_hashing_its_inputs(make_checkpoint, tmp_path, monkeypatch) -> None:
    seen: list[threading.Event | None] = []
    real = engine.files_sha256

    def recording(files, stop=None):
        seen.append(stop)
        stop.wait(timeout=30)  # a hash that only ends when told to
        return real(files, stop=stop)

    monkeypatch.setattr(engine, "files_sha256", recording)
    paths = [make_checkpoint("a.safetensors", seed=0), make_checkpoint("b.safetensors", with_nan(1))]
    with pytest.raises(NonFiniteValuesError):
        run_merge(_recipe(paths, tmp_path / "o.safetensors", method="simple_average"))
    assert seen and all(s is not None and s.is_set() for s in seen)


def test_reading_a_huge_tensor_stops_between_slices_when_cancelled(make_checkpoint, monkeypatch) -> None:
    monkeypatch.setattr(file_io, "READ_SLICE", 64)
    path = make_checkpoint("m.safetensors", {"w": torch.zeros(10_000)})
    token = CancelToken()
    with open_checkpoint(path) as ck:
        ck.watch(token)
        assert torch.equal(ck.get_tensor("w"), torch.zeros(10_000))
        token.cancel()
        with pytest.raises(Cancelled):
            ck.get_tensor("w")


def test_opening_a_huge_sparse_file_reads_only_its_header(tmp_path: Path, monkeypatch) -> None:
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [4_000_000_000], "data_offsets": [0, 16_000_000_000]}}).encode()
    path = tmp_path / "sparse.safetensors"
    with path.open("wb") as f:  # 16 GB of zeros that take no disk space
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 16_000_000_000)
    reads: list[int] = []
    monkeypatch.setattr(file_io, "pread_bytes", lambda *a, **k: reads.append(a[2]))
    with open_checkpoint(path) as ck:
        summary = ck.summary()
    assert summary.parameter_count == 4_000_000_000
    assert reads == []
