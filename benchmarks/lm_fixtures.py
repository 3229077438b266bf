"""Tiny Llama-shaped language models that merge the way real ones do, made in seconds.

A base model is trained briefly on Python source from the standard library; two
fine-tunes start from it, one on the license texts that ship with the Python
install, one on docstrings of other standard-library modules. Each text keeps its
last part for evaluation. Merging the two fine-tunes then behaves as merges do: on
each text the merge's perplexity lies between its parents' (and task arithmetic
keeps more of both than the average). Nothing is downloaded; the tokenizer and the
configs come from ``tests/hf_models.py``.

Built models are cached by a hash of everything that shapes them (texts, sizes,
steps, seeds), in ``$TMPDIR/merge-studio-lm-fixtures/<hash>/``, so tests pay for
training once per machine.

    python benchmarks/lm_fixtures.py            # build (or reuse), merge, print the perplexity table
    python benchmarks/lm_fixtures.py --json out.json
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FIXTURE_VERSION = 1
TEXTS = ("code", "licenses", "docstrings")
CODE_MODULES = ("json", "textwrap", "string", "csv", "configparser", "difflib", "argparse", "shlex", "fnmatch",
                "calendar", "fractions", "heapq", "bisect", "pprint", "ipaddress", "statistics", "glob")
DOC_MODULES = ("collections", "functools", "itertools", "pathlib", "datetime", "random", "re", "os", "shutil",
               "subprocess", "threading", "socket", "logging", "unittest", "decimal", "typing", "inspect", "zipfile")
TEXT_CHARS = 120_000  # per text
EVAL_SHARE = 0.15  # the end of each text is held out for evaluation
# Model and training sizes: ~60k parameters, seconds on one CPU thread.
MODEL = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
SEQ_LEN = 64
BATCH = 8
BASE_STEPS, TUNE_STEPS = 200, 100
BASE_LR, TUNE_LR = 5e-3, 2e-3


@dataclass(frozen=True)
class LMFixtures:
    """Model folders (base and its two fine-tunes) and the held-out text of each corpus."""

    folder: Path
    base: Path
    licenses: Path
    docstrings: Path
    eval_texts: dict[str, Path]

    @property
    def models(self) -> dict[str, Path]:
        return {"base": self.base, "licenses": self.licenses, "docstrings": self.docstrings}


# --- texts ------------------------------------------------------------------------------------
def _stdlib_source() -> str:
    parts = []
    for name in CODE_MODULES:
        try:
            parts.append(inspect.getsource(importlib.import_module(name)))
        except (OSError, TypeError, ImportError):
            continue
    return "\n".join(parts)


def _licenses() -> str:
    """License texts of the Python install: the interpreter's own, then its packages'."""
    stdlib = Path(os.__file__).parent
    files = [stdlib / "LICENSE.txt"]
    for prefix in dict.fromkeys((sys.base_prefix, sys.prefix)):
        pattern = os.path.join(prefix, "lib", "python3*", "site-packages", "*.dist-info")
        for info in sorted(glob.glob(pattern)):
            files += sorted(p for p in Path(info).rglob("*") if p.is_file() and p.name.upper().startswith(("LICEN", "COPYING")))
    texts = []
    for path in files:
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return "\n\n".join(texts)


def _docstrings() -> str:
    parts = []
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for _, member in sorted(vars(module).items()):
            if (inspect.isfunction(member) or inspect.isclass(member)) and getattr(member, "__module__", "") == name:
                doc = inspect.getdoc(member)
                if doc:
                    parts.append(doc)
    return "\n\n".join(parts)


def corpus_texts() -> dict[str, str]:
    """The three texts, each cut to the same length (all from this Python, nothing fetched)."""
    return {"code": _stdlib_source()[:TEXT_CHARS], "licenses": _licenses()[:TEXT_CHARS],
            "docstrings": _docstrings()[:TEXT_CHARS]}


def split_text(text: str) -> tuple[str, str]:
    cut = int(len(text) * (1 - EVAL_SHARE))
    return text[:cut], text[cut:]


# --- training ---------------------------------------------------------------------------------
def _train(model, ids, steps: int, lr: float, seed: int) -> float:  # noqa: ANN001
    """Next-token training on random windows of ``ids``; returns the last loss."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - SEQ_LEN - 1, (BATCH,), generator=generator)
        batch = torch.stack([ids[s : s + SEQ_LEN + 1] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss)


def _fingerprint(texts: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps(
        {"v": FIXTURE_VERSION, "model": MODEL, "seq": SEQ_LEN, "batch": BATCH,
         "steps": [BASE_STEPS, TUNE_STEPS], "lr": [BASE_LR, TUNE_LR]}, sort_keys=True).encode())
    for name in TEXTS:
        digest.update(texts[name].encode())
    return digest.hexdigest()[:16]


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "merge-studio-lm-fixtures"


def build_lm_fixtures(cache: Path | None = None, *, log=print) -> LMFixtures:  # noqa: ANN001
    """The base model and its two fine-tunes, built once per content hash and reused after."""
    texts = corpus_texts()
    folder = (cache or default_cache()) / _fingerprint(texts)
    fixtures = LMFixtures(folder, folder / "base", folder / "licenses", folder / "docstrings",
                          {name: folder / "eval" / f"{name}.txt" for name in TEXTS})
    if (folder / "done").is_file():
        return fixtures
    import torch

    from tests.hf_models import make_hf_folder, make_hf_model, make_tokenizer

    work = Path(tempfile.mkdtemp(prefix="lm-fixtures-", dir=folder.parent if folder.parent.exists() else None))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and fair to a busy machine
    try:
        tokenizer = make_tokenizer()
        (work / "eval").mkdir(parents=True)
        train_ids = {}
        for name, text in texts.items():
            train, held_out = split_text(text)
            (work / "eval" / f"{name}.txt").write_text(held_out, encoding="utf-8")
            train_ids[name] = torch.tensor(tokenizer(train, add_special_tokens=False)["input_ids"])
        started = time.perf_counter()
        model = make_hf_model("llama", seed=0, **MODEL)
        loss = _train(model, train_ids["code"], BASE_STEPS, BASE_LR, seed=1)
        make_hf_folder(work / "base", model=model)
        log(f"base: {BASE_STEPS} steps on code, last loss {loss:.3f} ({time.perf_counter() - started:.1f} s)")
        for seed, name in enumerate(("licenses", "docstrings"), start=2):
            started = time.perf_counter()
            tuned = make_hf_model("llama", seed=0, **MODEL)
            tuned.load_state_dict(model.state_dict())
            loss = _train(tuned, train_ids[name], TUNE_STEPS, TUNE_LR, seed=seed)
            make_hf_folder(work / name, model=tuned)
            log(f"{name}: {TUNE_STEPS} steps from base, last loss {loss:.3f} ({time.perf_counter() - started:.1f} s)")
        (work / "done").write_text("ok\n")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            work.rename(folder)
        except OSError:  # another process finished first: use theirs
            if not (folder / "done").is_file():
                raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(work, ignore_errors=True)
    return fixtures


# --- the table --------------------------------------------------------------------------------
def merge(fixtures: LMFixtures, out: Path, method: str, model_params: dict | None = None, **params: object) -> Path:
    """Merge the two fine-tunes with Merge Studio itself (task vectors against the base)."""
    from merge_studio.core.engine import run_merge
    from merge_studio.core.recipe import ModelEntry, Recipe

    base = str(fixtures.base) if method != "simple_average" else None
    entries = [ModelEntry(path=str(p), params=dict(model_params or {})) for p in (fixtures.licenses, fixtures.docstrings)]
    recipe = Recipe(method=method, models=entries, base=base, params=dict(params), output=str(out), device="cpu")
    run_merge(recipe)
    return out


def perplexity_table(models: dict[str, Path], texts: dict[str, Path], *, max_tokens: int = 8000) -> dict[str, dict[str, float]]:
    """Perplexity of each model on each held-out text: ``table[model][text]``."""
    from merge_studio.core.evaluate.data import DataSpec
    from merge_studio.core.evaluate.jobs import EvaluateRequest
    from merge_studio.core.progress import drive

    table: dict[str, dict[str, float]] = {name: {} for name in models}
    for text, path in texts.items():
        spec = DataSpec(source=str(path), seq_len=SEQ_LEN, max_tokens=max_tokens)
        scores = drive(EvaluateRequest(models=tuple(str(p) for p in models.values()), names=tuple(models),
                                       data=spec, device="cpu").job())
        for i, name in enumerate(scores.names):
            table[name][text] = float(scores.results["test"][i].perplexity)
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    lines = [f"| model | {' | '.join(TEXTS)} |", "|---|" + "---:|" * len(TEXTS)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[t]:.2f}" for t in TEXTS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="where built models are kept (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    parser.add_argument("--max-tokens", type=int, default=8000, help="held-out tokens per text (default 8000)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    fixtures = build_lm_fixtures(args.cache)
    print(f"fixtures in {fixtures.folder} ({time.perf_counter() - started:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        models = dict(fixtures.models)
        models["average"] = merge(fixtures, Path(tmp) / "average", "simple_average")
        models["task arithmetic λ=0.7"] = merge(fixtures, Path(tmp) / "ta", "task_arithmetic", **{"lambda": 0.7})
        models["TIES density 0.5"] = merge(fixtures, Path(tmp) / "ties", "ties", model_params={"density": 0.5})
        table = perplexity_table(models, fixtures.eval_texts, max_tokens=args.max_tokens)
    print(f"\nperplexity on held-out text (load average {open('/proc/loadavg').read().split()[0]})\n")
    print(format_table(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
