"""``merge-studio search``: find a method's coefficients on data with Optuna, locally or on Ray."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from merge_studio.cli.progress_bar import ProgressBar

EPILOG = """examples:
  merge-studio search recipe.yaml --param lambda=0:1.5 --param weight=0:1 --trials 50 --workers 2
  merge-studio search recipe.yaml --param "lambda=0:1@3" --objective accuracy:val.safetensors@test
  merge-studio search recipe.yaml --param weight=0:1 --objective accuracy:a.npz --objective accuracy:b.npz
  merge-studio search recipe.yaml --param density=0.1:1 --trials 200 --ray auto

parameters: NAME=LO:HI, with :log or :int, and @N for a per-layer gradient of N anchors;
a per-model parameter (weight, density) gets one dimension per model (models.0.weight …).
objectives: accuracy | loss | perplexity, optionally :SOURCE[,SOURCE…] (mean over them) and @train|@test.

The study is kept in OUT.search.db: run the same command with more --trials to go on.
At the end the best trial is merged to the recipe's output and its recipe saved next to it
(OUT.recipe.yaml); with several objectives the first of the Pareto front is used (--pick N)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "search",
        help="search a method's coefficients on data (Optuna; local workers or a Ray cluster)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="the recipe whose parameters are searched")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=LO:HI", help="a range to search (repeatable)")
    parser.add_argument("--objective", action="append", default=[], metavar="KIND[:DATA][@SPLIT]",
                        help="what to optimise (repeatable; several give a Pareto front); default: accuracy")
    parser.add_argument("--trials", type=int, default=50, help="finished trials the study should hold (default 50)")
    parser.add_argument("--workers", type=int, default=None,
                        help="trials at once: local worker processes (default 2; 0 runs them in this process) "
                        "or, with --ray, Ray tasks (default: the cluster's CPUs)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run trials as Ray tasks: 'auto' (the cluster 'ray start' "
                        "made on this machine), 'ray://HOST:10001', or 'local' (a private one for this search)")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0, help="with --ray: GPUs each trial reserves")
    parser.add_argument("--sampler", choices=["tpe", "cmaes", "random"], default="tpe", help="Optuna sampler (default tpe)")
    parser.add_argument("--storage", metavar="DB", help="SQLite file of the study (default: OUT.search.db)")
    parser.add_argument("-o", "--output", help="where the best merge is written (overrides the recipe)")
    parser.add_argument("--device", default="cpu", help="device each trial merges and evaluates on (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--pick", type=int, default=0, metavar="N", help="merge the N-th best (Pareto) trial (default 0)")
    parser.add_argument("--no-merge", action="store_true", help="only search; write no model")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _format(values: tuple[float, ...] | None) -> str:
    return ", ".join(f"{v:.4f}" for v in values) if values else "failed"


def run(args: argparse.Namespace) -> int:
    from merge_studio.core.engine import run_merge
    from merge_studio.core.progress import drive
    from merge_studio.core.recipe import load_recipe
    from merge_studio.core.search import Objective, SearchError, SearchSpace, iter_search

    recipe = load_recipe(args.recipe)
    if args.output:
        recipe = recipe.model_copy(update={"output": str(Path(args.output).expanduser().absolute())})
    if args.trials < 1:
        raise SearchError(f"--trials {args.trials} must be at least 1")
    space = SearchSpace.parse(args.param)
    objectives = [Objective.parse(o) for o in (args.objective or ["accuracy"])]
    bar = ProgressBar(enabled=not args.quiet)
    try:
        result = drive(iter_search(recipe, space, objectives, trials=args.trials, workers=args.workers, ray=args.ray,
                                   storage=args.storage, sampler=args.sampler, seed=args.seed, device=args.device,
                                   gpus_per_trial=args.gpus_per_trial), on_progress=bar)
    finally:
        bar.close()
    out: dict[str, Any] = {
        "storage": str(result.storage),
        "trials": len(result.trials),
        "failed": result.failed,
        "seconds": round(result.seconds, 2),
        "objectives": [o.name for o in objectives],
        "best": [{"number": t.number, "values": list(t.values or ()), "params": t.params} for t in result.best],
    }
    if result.best and not args.no_merge:
        pick = min(max(args.pick, 0), len(result.best) - 1)
        best = result.best_recipe(pick)
        merged = run_merge(best)
        recipe_path = Path(str(merged.output).rstrip("/") + ".recipe.yaml")
        best.save(recipe_path)
        out.update(merged=str(merged.output), recipe=str(recipe_path))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(result.trials)} trials in {result.storage} ({result.failed} failed), {result.seconds:.1f} s")
    label = "Pareto front" if len(objectives) > 1 else "best"
    print(f"{label} ({'; '.join(o.name for o in objectives)}):")
    for t in result.best[:10]:
        params = ", ".join(f"{k}={v:.4g}" for k, v in t.params.items())
        print(f"  trial {t.number}: {_format(t.values)}  {params}")
    if "merged" in out:
        print(f"wrote {out['merged']} and {out['recipe']}")
    elif not result.best:
        print("no trial finished", file=sys.stderr)
        return 1
    return 0
