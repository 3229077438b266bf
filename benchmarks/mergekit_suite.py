"""``vs_mergekit.py --suite tiny``: every config of ``mergekit_configs.py`` through both tools on tiny
float32 Llama folders, with per-config agreement.

Models: ``a b c`` are three independent random initialisations of a 2-layer Llama (as in
mergekit's tests); ``base ft1 ft2 ft3`` are a 4-layer Llama and three sparse "fine-tunes"
of it (60% of every tensor's entries moved, the norms and the head included, so the
tensors outside the decoder layers show whether a gradient reaches them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


def build_models(folder: Path) -> dict[str, Path]:
    """Write the tiny model folders (once) and return them by placeholder name."""
    sys.path.insert(0, str(ROOT))
    from tests.hf_models import make_hf_folder, make_hf_model

    paths = {name: folder / name for name in ("a", "b", "c", "base", "ft1", "ft2", "ft3")}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    for seed, name in enumerate(("a", "b", "c"), start=1):
        make_hf_folder(paths[name], "llama", seed=seed, tokenizer=False)
    base = make_hf_model("llama", seed=0, num_hidden_layers=4)
    make_hf_folder(paths["base"], model=base, tokenizer=False)
    for k, name in enumerate(("ft1", "ft2", "ft3"), start=1):
        tuned = make_hf_model("llama", seed=0, num_hidden_layers=4)
        gen = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for param in tuned.parameters():
                moved = torch.rand(param.shape, generator=gen) < 0.6
                param.add_(0.02 * torch.randn(param.shape, generator=gen) * moved)
        make_hf_folder(paths[name], model=tuned, tokenizer=False)
    return paths


def _tensor_files(out: Path) -> dict[str, Path]:
    if out.is_file():
        files = [out]
    else:
        index = out / "model.safetensors.index.json"
        if index.exists():
            return {k: out / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        files = sorted(out.glob("*.safetensors"))
    names: dict[str, Path] = {}
    for f in files:
        with safe_open(f, "pt") as fh:
            names.update({k: f for k in fh.keys()})
    return names


def _canonical(name: str) -> str:
    """A tensor name without its ``model.`` segments: LLaVA's old and new spellings meet there."""
    return ".".join(part for part in name.split(".") if part != "model")


def compare_renamed(a: Path, b: Path) -> tuple[float, int, int, str]:
    """:func:`compare` for outputs that spell tensor names differently (LLaVA: mergekit renames, we keep
    the inputs' names): tensors are matched by :func:`_canonical` name; a tensor only one output has is
    counted in the note that goes with the worst place."""
    fa = {_canonical(k): (k, f) for k, f in _tensor_files(a).items()}
    fb = {_canonical(k): (k, f) for k, f in _tensor_files(b).items()}
    worst, worst_name, same = 0.0, "", 0
    for name in sorted(set(fa) & set(fb)):
        (ka, pa), (kb, pb) = fa[name], fb[name]
        with safe_open(pa, "pt") as x, safe_open(pb, "pt") as y:
            ta, tb = x.get_tensor(ka), y.get_tensor(kb)
        same += int(torch.equal(ta, tb))
        diff = float((ta.float() - tb.float()).abs().max()) if ta.numel() else 0.0
        if diff > worst:
            worst, worst_name = diff, name
    only_a, only_b = len(set(fa) - set(fb)), len(set(fb) - set(fa))
    if only_a or only_b:
        worst_name += f" [names matched without 'model.'; {only_b} tensors only in ours, {only_a} only in mergekit's]"
    return worst, same, len(set(fa) & set(fb)), worst_name


def compare(a: Path, b: Path) -> tuple[float, int, int, str]:
    """(largest |a − b|, identical tensors, tensors, the tensor with the largest difference)."""
    fa, fb = _tensor_files(a), _tensor_files(b)
    if set(fa) != set(fb):
        if {_canonical(k) for k in fa} == {_canonical(k) for k in fb} or {_canonical(k) for k in fa} & {_canonical(k) for k in fb}:
            return compare_renamed(a, b)
        raise RuntimeError(f"different tensor names: {sorted(set(fa) ^ set(fb))[:5]}")
    worst, worst_name, same = 0.0, "", 0
    for name in sorted(fa):
        with safe_open(fa[name], "pt") as x, safe_open(fb[name], "pt") as y:
            ta, tb = x.get_tensor(name), y.get_tensor(name)
        if ta.dtype != tb.dtype:
            raise RuntimeError(f"{name}: dtype {ta.dtype} against {tb.dtype}")
        same += int(torch.equal(ta, tb))
        diff = float((ta.float() - tb.float()).abs().max()) if ta.numel() else 0.0
        if diff > worst:
            worst, worst_name = diff, name
    return worst, same, len(fa), worst_name


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[bool, float, float, str]:
    """(succeeded, wall seconds, peak RSS in MB, last lines of stderr) under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%M", *cmd], capture_output=True, text=True,
                              check=False, env=env, timeout=900)
        wall = time.perf_counter() - start
        lines = Path(report.name).read_text().split()
        rss = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else float("nan")
    return proc.returncode == 0, wall, rss, "\n".join(proc.stderr.strip().splitlines()[-3:])


def run_suite(
    folder: Path, mergekit: str, suite: list[tuple[str, str, str, str]], only: list[str] | None = None,
    log: Callable[[str], None] = print, build: Callable[[Path], dict[str, Path]] | None = None,
) -> list[dict[str, object]]:
    """Run every config through both tools; one result row per config (``build`` writes the models)."""
    paths = (build or build_models)(folder)
    names = {k: str(v) for k, v in paths.items()}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ours = [sys.executable, "-m", "merge_studio", "merge", "-q"]
    rows = []
    for label, group, kind, template in suite:
        if only and not any(word in label for word in only):
            continue
        config = folder / "config.yml"
        text = template
        for key, path in names.items():
            text = text.replace("{" + key + "}", path)
        config.write_text(text)
        out_mk = folder / "out-mergekit"
        # A folder output when the inputs are model folders, as a user would merge them (config, tokenizer, card).
        out_ms = folder / ("out-merge-studio" if build else "out-merge-studio.safetensors")
        shutil.rmtree(out_mk, ignore_errors=True)
        shutil.rmtree(out_ms, ignore_errors=True) if out_ms.is_dir() else out_ms.unlink(missing_ok=True)
        mk_ok, mk_s, mk_mb, mk_err = _run([mergekit, str(config), str(out_mk), "--no-copy-tokenizer", "--quiet",
                                           "--allow-crimes"])
        ms_ok, ms_s, ms_mb, ms_err = _run([*ours, str(config), "-o", str(out_ms), "--no-hash"], env)
        row: dict[str, object] = {"label": label, "group": group, "kind": kind, "mk_s": mk_s, "ms_s": ms_s,
                                  "mk_mb": mk_mb, "ms_mb": ms_mb}
        if kind == "refused":
            row["verdict"] = "both refuse ✓" if not mk_ok and not ms_ok else f"mergekit {'ok' if mk_ok else 'refuses'}, ours {'ok' if ms_ok else 'refuses'} ✗"
            row["diff"] = None
        elif not (mk_ok and ms_ok):
            row["verdict"] = f"FAILED ✗ ({'mergekit: ' + mk_err if not mk_ok else 'ours: ' + ms_err})"
            row["diff"] = None
        else:
            worst, same, total, where = compare(out_mk, out_ms)
            row.update(diff=worst, same=same, total=total, where=where)
            if kind == "random":
                row["verdict"] = "random draws differ by design (seeded)"
            else:
                row["verdict"] = "agrees ✓" if worst <= TOLERANCE else f"differs ✗ (at {where})"
                if "[" in str(where):
                    row["verdict"] += " " + str(where)[str(where).index("["):]
        log(f"{label}: {row['verdict']}")
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    print("\n| group | config | mergekit s | merge-studio s | mergekit peak MB | merge-studio peak MB | max abs diff | identical tensors | agreement |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        diff = "—" if r.get("diff") is None else f"{r['diff']:.2e}"
        same = f"{r['same']}/{r['total']}" if "same" in r else "—"
        print(f"| {r['group']} | {r['label']} | {r['mk_s']:.1f} | {r['ms_s']:.1f} | {r['mk_mb']:.0f} | {r['ms_mb']:.0f} | "
              f"{diff} | {same} | {r['verdict']} |")
    checked = [r for r in rows if r["kind"] != "random"]
    good = sum(1 for r in checked if "✓" in str(r["verdict"]))
    print(f"\n{good}/{len(checked)} deterministic or refused configs agree with mergekit "
          f"(tolerance {TOLERANCE:g}); {len(rows) - len(checked)} randomised configs reported for size only.")
