"""Every file-system failure a user can cause is one line naming the path they gave.

Permission problems are produced for real: the command runs in a child process
that, when the tests run as root (who may write anywhere), first drops to the
``nobody`` user, so the operating system itself refuses the read or the write.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from merge_studio.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

_AS_UNPRIVILEGED = f"""
import contextlib, io, json, os, sys
sys.path.insert(0, {str(ROOT)!r})
import merge_studio.cli.main as cli
import merge_studio.cli.merge_cmd, merge_studio.cli.inspect_cmd, merge_studio.core.engine  # noqa: F401
import merge_studio.core.estimate, merge_studio.core.history, merge_studio.core.overwrite  # noqa: F401
import torch, safetensors.torch  # noqa: F401  (imported while the interpreter's files are readable)
cli.build_parser()
if os.geteuid() == 0:
    os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""

OUTPUTS = {"new subfolder": "ro/new/merged.safetensors", "file": "ro/merged.safetensors", "folder": "ro/merged"}


def merge_args(output: str) -> list[str]:
    return ["merge", "--method", "simple_average", "a.safetensors", "b.safetensors", "-o", output, "-q", "--no-hash"]


@pytest.fixture(scope="module")
def denied() -> Iterator[tuple[Path, dict[str, tuple[int, str]]]]:
    """Run every permission case once, in one unprivileged child (one interpreter start)."""
    folder = Path(tempfile.mkdtemp(prefix="merge-studio-fs-"))
    folder.chmod(0o777)
    torch.manual_seed(0)
    for name in ("a", "b"):
        save_file({"w": torch.randn(4, 4), "b": torch.randn(4)}, str(folder / f"{name}.safetensors"))
        (folder / f"{name}.safetensors").chmod(0o644)
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)
    (folder / "locked").mkdir()
    shutil.copy(folder / "a.safetensors", folder / "locked" / "model.safetensors")
    (folder / "locked").chmod(0)
    cases = {key: merge_args(out) for key, out in OUTPUTS.items()}
    cases["inspect"] = ["inspect", "locked"]
    env = {**os.environ, "MERGE_STUDIO_CACHE_DIR": str(folder / ".cache")}
    proc = subprocess.run([sys.executable, "-c", _AS_UNPRIVILEGED, json.dumps(list(cases.values()))],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = {key: tuple(r) for key, r in zip(cases, json.loads(proc.stdout.splitlines()[-1]), strict=True)}
    yield folder, results
    for p in [folder / "ro", folder / "locked"]:
        p.chmod(0o777)
    shutil.rmtree(folder, ignore_errors=True)


def one_error_line(code: int, err: str) -> str:
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("merge-studio: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_an_output_in_a_read_only_folder_is_one_line_naming_the_requested_output(denied, case: str) -> None:
    folder, results = denied
    line = one_error_line(*results[case])
    assert f"cannot write {folder / OUTPUTS[case]}: permission denied" in line
    assert ".tmp-" not in line  # never the hidden temporary name
    assert list((folder / "ro").iterdir()) == []


def test_inspecting_an_unreadable_folder_is_one_line_naming_it(denied) -> None:
    _, results = denied
    assert "cannot open locked: permission denied" in one_error_line(*results["inspect"])


def test_a_symlink_loop_given_to_merge_is_named_as_a_loop(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.ones(2)}, "b.safetensors")
    os.symlink("loop2", "loop1")
    os.symlink("loop1", "loop2")
    code = main(["merge", "--method", "simple_average", "loop1", "b.safetensors", "-o", "out.safetensors", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{tmp_path / 'loop1'} is a symbolic-link loop" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_dangling_link_says_where_it_points(tmp_path: Path, capsys) -> None:
    link = tmp_path / "model.safetensors"
    os.symlink(tmp_path / "moved-away.safetensors", link)
    assert main(["inspect", str(link)]) == 1
    assert f"{link} is a link to {tmp_path / 'moved-away.safetensors'}, which does not exist" in capsys.readouterr().err


def test_a_broken_file_behind_a_link_is_reported_by_the_name_the_user_gave(tmp_path: Path, capsys) -> None:
    real = tmp_path / "blobs" / "9f86d081884c7d65"
    real.parent.mkdir()
    real.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")  # header longer than the file
    link = tmp_path / "adapter.safetensors"
    os.symlink(real, link)
    ok = tmp_path / "ok.safetensors"
    save_file({"w": torch.ones(2)}, str(ok))
    code = main(["merge", "--method", "simple_average", str(link), str(ok), "-o", str(tmp_path / "o.safetensors"), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "adapter.safetensors" in err and "9f86d081884c7d65" not in err


def test_an_output_whose_parent_is_a_file_names_that_file(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.ones(2)}, "a.safetensors")
    save_file({"w": torch.zeros(2)}, "b.safetensors")
    Path("notes.txt").write_text("not a folder")
    assert main(merge_args("notes.txt/merged.safetensors")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write {tmp_path / 'notes.txt/merged.safetensors'}: {tmp_path / 'notes.txt'} is a file, not a folder" in err


def test_a_path_too_long_is_a_short_message(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({"w": torch.ones(2)}, "a.safetensors")
    save_file({"w": torch.zeros(2)}, "b.safetensors")
    assert main(merge_args("x" * 5000 + "/merged.safetensors")) == 1
    err = capsys.readouterr().err
    assert "name is too long" in err and len(err) < 500 and "Traceback" not in err


def test_a_merge_of_checkpoints_without_tensors_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({}, "empty1.safetensors")
    save_file({}, "empty2.safetensors")
    code = main(["merge", "--method", "simple_average", "empty1.safetensors", "empty2.safetensors", "-o", "o.safetensors", "-q"])
    assert code == 1
    assert "nothing to merge" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
