"""How fast a coefficient search runs: the same 50-trial search in-process, with worker processes, and on Ray.

The search is the multi-task benchmark's (task arithmetic over six digit tasks: λ and
one weight per model, mean training accuracy as the objective), so each trial merges
seven 256-wide MLPs and scores the result on six data files. Each configuration runs
a fresh study with the same sampler seed, so the best values should agree.

    python benchmarks/search_speed.py                   # inline, 2 workers, local Ray
    python benchmarks/search_speed.py --trials 100 --workers 4
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from merge_studio.core.evaluate.multitask import build_suite  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from multitask import recipe_for

    from merge_studio.core.search import Objective, SearchSpace, run_search

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip", action="append", default=[], choices=["inline", "workers", "ray"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="merge-studio-search-speed-") as tmp:
        suite = build_suite(Path(tmp) / "suite")
        space = SearchSpace.parse(["lambda=0.2:1.5", "weight=0:1"])
        objective = Objective("accuracy", tuple(str(p) for p in suite.data), "train")
        configs = [("inline (this process)", 0, None), (f"{args.workers} worker processes", args.workers, None),
                   (f"local Ray cluster, {args.workers} CPUs", args.workers, "local")]
        keys = ["inline", "workers", "ray"]
        rows = []
        for key, (label, workers, ray) in zip(keys, configs, strict=True):
            if key in args.skip:
                continue
            out = Path(tmp) / key
            out.mkdir()
            recipe = recipe_for(suite, "task_arithmetic", out / "m.safetensors", {"lambda": 1.0}, {"weight": 0.3})
            start = time.perf_counter()
            result = run_search(recipe, space, [objective], trials=args.trials, workers=workers, ray=ray)
            seconds = time.perf_counter() - start
            rows.append((label, seconds, len(result.trials), result.failed, result.best[0].values[0]))
            print(f"  {label}: {seconds:.1f} s", flush=True)
    print(f"\n{args.trials} trials, {len(space.dimensions('task_arithmetic', len(suite.models)))} numbers searched")
    print(f"{'configuration':34}{'seconds':>9}{'trials/s':>10}{'failed':>8}{'best accuracy':>15}")
    for label, seconds, n, failed, best in rows:
        print(f"{label:34}{seconds:9.1f}{n / seconds:10.2f}{failed:8d}{best:15.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
