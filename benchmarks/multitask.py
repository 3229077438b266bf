"""Multi-task merging benchmark on digits, in the spirit of FusionBench's eight-task CLIP table.

Builds (once, cached in a folder) a base MLP pre-trained on plain digits and one
fine-tune per task (rotated, inverted, mirrored, shifted, upside-down, transposed
images; a shared 10-way head), then merges the fine-tunes with every method and
prints each one's test accuracy per task and on average:

* each fine-tune alone, the base;
* simple average, task arithmetic (λ = 0.3), TIES (density 0.2, λ = 1, as the paper);
* Fisher merging, RegMean (α = 0.9), both on each task's own training inputs;
* AdaMerging (layer-wise, entropy on unlabeled training inputs of every task);
* the searched merge: task arithmetic's per-model weights and λ found by a
  coefficient search (TPE) maximising the mean accuracy on the tasks' training data
  (validation), judged on the test data like the others.

Every merge runs through the ordinary engine from a recipe (no shortcuts), so the
table also shows what a user gets from ``merge-studio merge``.

    python benchmarks/multitask.py                  # the full table (under a minute on 2 cores)
    python benchmarks/multitask.py --trials 50 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from merge_studio.core.engine import run_merge  # noqa: E402
from merge_studio.core.evaluate.multitask import MultiTaskSuite, build_suite  # noqa: E402
from merge_studio.core.recipe import ModelEntry, Recipe  # noqa: E402


def recipe_for(suite: MultiTaskSuite, method: str, out: Path, params: dict[str, Any] | None = None,
               model_params: dict[str, Any] | None = None, *, own_data: bool = False, base: bool = True) -> Recipe:
    models = []
    for path, data in zip(suite.models, suite.data, strict=True):
        mp = dict(model_params or {})
        if own_data:
            mp["data"] = str(data)
        models.append(ModelEntry(path=str(path), params=mp))
    return Recipe(method=method, models=models, base=str(suite.base) if base else None, params=params or {},
                  arch=suite.arch, output=str(out), hash_sources=False)


def run_row(suite: MultiTaskSuite, name: str, recipe: Recipe) -> tuple[str, dict[str, float], float, Any]:
    start = time.perf_counter()
    result = run_merge(recipe)
    seconds = time.perf_counter() - start
    return name, suite.accuracies(result.output), seconds, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="where the suite is cached (default: a temporary folder)")
    parser.add_argument("--trials", type=int, default=50, help="trials of the coefficient search (0: skip it)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the coefficient search")
    parser.add_argument("--ray", metavar="ADDRESS", help="run the search's trials on Ray (e.g. 'local' or 'auto')")
    parser.add_argument("--ada-steps", type=int, default=100, help="AdaMerging's Adam steps")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="merge-studio-multitask-") as tmp:
        folder = args.folder or Path(tmp) / "suite"
        start = time.perf_counter()
        suite = build_suite(folder)
        print(f"suite: {len(suite.tasks)} tasks, {suite.arch}, built in {time.perf_counter() - start:.1f} s "
              f"({folder})\n")
        out = Path(tmp)
        rows: list[tuple[str, dict[str, float], float]] = [("base (pre-trained)", suite.accuracies(suite.base), 0.0)]
        for task, path in zip(suite.tasks, suite.models, strict=True):
            rows.append((f"fine-tune: {task.name}", suite.accuracies(path), 0.0))
        merges = [
            ("simple average", recipe_for(suite, "simple_average", out / "avg.safetensors", base=False)),
            ("task arithmetic (λ=0.3)", recipe_for(suite, "task_arithmetic", out / "ta.safetensors", {"lambda": 0.3})),
            ("TIES (density 0.2, λ=1)", recipe_for(suite, "ties", out / "ties.safetensors", {"lambda": 1.0},
                                                  {"density": 0.2})),
            ("Fisher", recipe_for(suite, "fisher", out / "fisher.safetensors", {"num_examples": 256}, own_data=True,
                                  base=False)),
            ("RegMean (α=0.9)", recipe_for(suite, "regmean", out / "regmean.safetensors", {"num_examples": 512},
                                           own_data=True, base=False)),
            ("AdaMerging (layer-wise)", recipe_for(suite, "adamerging", out / "ada.safetensors",
                                                   {"steps": args.ada_steps}, own_data=True)),
        ]
        for name, recipe in merges:
            label, acc, seconds, _ = run_row(suite, name, recipe)
            rows.append((label, acc, seconds))
        if args.trials > 0:
            rows.append(searched_row(suite, out, args))
        print_table(suite, rows)
    return 0


def searched_row(suite: MultiTaskSuite, out: Path, args: argparse.Namespace) -> tuple[str, dict[str, float], float]:
    from merge_studio.core.search import Objective, SearchSpace, run_search

    recipe = recipe_for(suite, "task_arithmetic", out / "searched.safetensors", {"lambda": 1.0}, {"weight": 0.3})
    space = SearchSpace.parse(["lambda=0.2:1.5", *[f"models.{i}.weight=0:1" for i in range(len(suite.models))]])
    objective = Objective(kind="accuracy", data=[str(p) for p in suite.data], split="train")
    start = time.perf_counter()
    result = run_search(recipe, space, [objective], trials=args.trials, workers=args.workers, ray=args.ray,
                        storage=out / "searched.search.db")
    best = result.best_recipe()
    merged = run_merge(best)
    seconds = time.perf_counter() - start
    label = f"searched task arithmetic ({args.trials} trials, {'ray' if args.ray else f'{args.workers} workers'})"
    return label, suite.accuracies(merged.output), seconds


def print_table(suite: MultiTaskSuite, rows: list[tuple[str, dict[str, float], float]]) -> None:
    names = [t.name for t in suite.tasks]
    width = max(len(r[0]) for r in rows) + 2
    head = "method".ljust(width) + "".join(n[:11].rjust(12) for n in names) + "     average" + "   seconds"
    print(head)
    print("-" * len(head))
    for label, acc, seconds in rows:
        cells = "".join(f"{100 * acc[n]:12.1f}" for n in names)
        print(f"{label.ljust(width)}{cells}{100 * acc['average']:12.1f}{seconds:10.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
