"""How long a 25-point interpolation sweep takes next to 25 plain evaluations of one model.

The sweep writes interpolated weights into one preallocated module and evaluates
train and test at each point; it should cost little more than the evaluations
themselves. Run: ``python benchmarks/barrier_sweep.py [--arch zoo:mlp] [--steps 25]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from merge_studio.core.arch import build_module
from merge_studio.core.evaluate import evaluate, iter_interpolation, load_data
from merge_studio.core.progress import drive


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="zoo:mlp")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reset-bn", default="auto", choices=("auto", "on", "off"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model_a = build_module(args.arch)
    model_b = build_module(args.arch)
    template = build_module(args.arch)
    data = load_data("digits", for_module=template)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    model_a.to(args.device)
    on_dev = data.to(args.device)
    batch = max(1024, data.batch_size)

    def plain_evaluations() -> None:
        for _ in range(args.steps):
            evaluate(model_a, on_dev.train, data.task, device=args.device, batch_size=batch)
            evaluate(model_a, on_dev.test, data.task, device=args.device, batch_size=batch)

    def sweep() -> None:
        drive(iter_interpolation(template, state_a, state_b, data, steps=args.steps, reset_bn=args.reset_bn,
                                 device=args.device))

    plain_evaluations()  # warm up kernels and thread pools once for both
    t_eval = best_of(args.repeats, plain_evaluations)
    t_sweep = best_of(args.repeats, sweep)
    params = sum(p.numel() for p in template.parameters())
    print(f"arch {args.arch} ({params:,} parameters), digits {len(data.train)} train + {len(data.test)} test, "
          f"device {args.device}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"{'job':<44} {'seconds':>8} {'ratio':>6}")
    print(f"{f'{args.steps} evaluations of one model (train+test)':<44} {t_eval:>8.3f} {1.0:>6.2f}")
    print(f"{f'{args.steps}-point sweep (train+test)':<44} {t_sweep:>8.3f} {t_sweep / t_eval:>6.2f}")


if __name__ == "__main__":
    main()
