"""Alignment benchmark: time and loss/accuracy barriers before and after weight matching.

For the digits demo models (MLP 64-512-512-512-10 and ResNet-20, two seeds each,
trained once and cached by ``merge_studio.core.demo``) and a VGG trained here
briefly from two seeds (with the demo ResNets' optimiser), it prints per model:

* the time to align B to A (spec + matching + function check) on the CPU,
* the test loss and accuracy barriers of the naive path A→B, of A→B with BatchNorm
  statistics re-estimated (BN models), and of A→π(B) after weight matching
  (BN statistics re-estimated for BN models),
* with ``--restarts N``, the same after the best of N descents ("ours ×N"; "ours" uses
  the automatic choice: 8 descents for models of at most 1024 units, else 1),
* the largest output difference between B and π(B) (float64),
* the same for the ``rebasin`` package (snimu/rebasin, a benchmark-only dependency)
  measured in the same run, where it runs.

    python benchmarks/alignment.py [--steps 11] [--restarts 8] [--skip-rebasin] [--models mlp,vgg,resnet]

The rebasin package is installed only for this script (pip install --no-deps rebasin tqdm).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merge_studio.core.arch import build_module, example_input  # noqa: E402
from merge_studio.core.demo import DEMO_RECIPES, ensure_demo_models, train_demo_model  # noqa: E402
from merge_studio.core.evaluate import evaluate, iter_barrier_comparison, load_data  # noqa: E402
from merge_studio.core.progress import drive  # noqa: E402
from merge_studio.core.rebasin.align import iter_align  # noqa: E402
from merge_studio.core.rebasin.apply import verify_function  # noqa: E402

VGG_ARCH = "zoo:vgg"


def train_vgg(seed: int, epochs: int = 6) -> dict[str, torch.Tensor]:
    """A short run on digits with the demo trainer and the demo ResNets' optimiser (SGD + weight decay).

    Like the ResNets, a BatchNorm net trained briefly with Adam and no decay keeps mostly
    its random initial weights, which weight matching cannot see past (measured: loss
    barrier after matching 0.21 with Adam, 0.08 with SGD + decay).
    """
    resnet = next(r for r in DEMO_RECIPES if r.arch.startswith("zoo:resnet20"))
    recipe = replace(resnet, name=f"vgg_seed{seed}", arch=VGG_ARCH, seed=seed, epochs=epochs)
    module, _accuracy = drive(train_demo_model(recipe))
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def model_pairs(names: list[str]) -> list[tuple[str, str, dict, dict]]:
    demo = ensure_demo_models()
    by_name = {m.name: m for m in demo.models}
    from safetensors.torch import load_file

    pairs = []
    if "mlp" in names:
        pairs.append(("MLP 64-512³-10", by_name["mlp_seed0"].arch, load_file(by_name["mlp_seed0"].path), load_file(by_name["mlp_seed1"].path)))
    if "vgg" in names:
        pairs.append(("VGG (BN)", VGG_ARCH, train_vgg(0), train_vgg(1)))
    if "resnet" in names:
        pairs.append(("ResNet-20 (BN)", by_name["resnet20_seed0"].arch, load_file(by_name["resnet20_seed0"].path), load_file(by_name["resnet20_seed1"].path)))
    return pairs


def time_alignment(arch: str, a: dict, b: dict, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall-clock and CPU seconds (all threads of this process) of each alignment run.

    On a shared machine the wall clock includes waiting for other processes; CPU time
    does not (with one thread busy it is what the wall clock would be on an idle machine).
    """
    times, cpu, result = [], [], None
    for _ in range(repeats):
        module = build_module(arch)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = drive(iter_align(module, a, b, example_input(arch), arch=arch, device="cpu"))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times, cpu, result


def run_rebasin_package(arch: str, a: dict, b: dict) -> tuple[float | None, dict | None, str]:
    """Align with snimu/rebasin (PermutationCoordinateDescent); returns time, B′ and a note."""
    try:
        from rebasin import PermutationCoordinateDescent
    except Exception as exc:  # noqa: BLE001
        return None, None, f"not installed ({type(exc).__name__})"
    model_a, model_b = build_module(arch, a).eval(), build_module(arch, b).eval()
    x = example_input(arch)
    start = time.perf_counter()
    try:
        PermutationCoordinateDescent(model_a, model_b, x, device_a="cpu", device_b="cpu").rebasin()
    except Exception as exc:  # noqa: BLE001
        return None, None, f"failed: {type(exc).__name__}: {str(exc)[:80]}"
    seconds = time.perf_counter() - start
    return seconds, {k: v.detach().clone() for k, v in model_b.state_dict().items()}, "ok"


def barriers(arch: str, a: dict, b: dict, aligned: dict | None, extra: dict[str, dict], steps: int) -> dict[str, tuple[float, float]]:
    module = build_module(arch)
    data = load_data({"source": "digits"}, for_module=module)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    curves = ["naive", "bn_reset"] if has_bn else ["naive"]
    report = drive(iter_barrier_comparison(module, a, b, data, curves=curves, steps=steps, splits=("test",), device="cpu"))
    out = {c.label: (c.loss_barrier["test"], c.accuracy_barrier["test"]) for c in report.curves}
    for label, state in [("ours", aligned), *extra.items()]:
        if state is None:
            continue
        rep = drive(iter_barrier_comparison(
            module, a, b, data, curves=["aligned"], aligned_b=state, steps=steps, splits=("test",),
            reset_bn="auto", device="cpu",
        ))
        c = rep.curves[0]
        out[label] = (c.loss_barrier["test"], c.accuracy_barrier["test"])
    return out


def endpoint_accuracy(arch: str, state: dict) -> float:
    module = build_module(arch, state)
    data = load_data({"source": "digits"}, for_module=module)
    return evaluate(module, data.test, device="cpu").accuracy or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=11, help="interpolation points per curve (default 11)")
    parser.add_argument("--repeats", type=int, default=3, help="timed alignments per model (default 3)")
    parser.add_argument("--restarts", type=int, default=0,
                        help="also align from this many seeds, keeping the best (default: no extra row; "
                        "'ours' already uses the automatic choice, 8 for models of at most 1024 units)")
    parser.add_argument("--skip-rebasin", action="store_true", help="do not run the rebasin package")
    parser.add_argument("--models", default="mlp,vgg,resnet")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for label, arch, a, b in model_pairs(args.models.split(",")):
        times, cpu, result = time_alignment(arch, a, b, args.repeats)
        print(f"{label}: aligned in {min(times):.2f} s wall, {min(cpu):.2f} s CPU", flush=True)
        extra: dict[str, dict] = {}
        rb_time, rb_note = None, "skipped"
        if not args.skip_rebasin:
            rb_time, rb_state, rb_note = run_rebasin_package(arch, a, b)
            print(f"{label}: rebasin package {rb_note}" + (f" in {rb_time:.1f} s" if rb_time else ""), flush=True)
            if rb_state is not None:
                extra["rebasin pkg"] = rb_state
        if args.restarts > 1:
            best = drive(iter_align(build_module(arch), a, b, example_input(arch), arch=arch, device="cpu", restarts=args.restarts))
            extra[f"ours ×{args.restarts}"] = best.aligned
        bars = barriers(arch, a, b, result.aligned, extra, args.steps)
        rb_diff = None
        if "rebasin pkg" in extra:
            try:
                rb_diff = verify_function(build_module(arch), b, extra["rebasin pkg"], example_input(arch), tol=1e9)
            except Exception:  # noqa: BLE001
                rb_diff = float("nan")
        rows.append((label, arch, times, cpu, result, bars, rb_time, rb_note, rb_diff,
                     endpoint_accuracy(arch, a), endpoint_accuracy(arch, b)))
    print()
    header = f"{'model':<16} {'curve':<12} {'loss barrier':>12} {'acc barrier':>12} {'time s':>10} {'max |Δout|':>11}"
    print(header)
    print("-" * len(header))
    for label, arch, times, cpu, result, bars, rb_time, rb_note, rb_diff, acc_a, acc_b in rows:
        print(f"{label:<16} endpoints: test accuracy A {acc_a:.3f}, B {acc_b:.3f}; groups {len(result.spec.groups)}, "
              f"unpermuted {len(result.spec.unpermuted)}, sweeps {result.matching.sweeps}, "
              f"descents {result.matching.restarts}; "
              f"CPU time of our alignment {min(cpu):.2f} s (min of {len(cpu)})")
        naive_loss = bars.get("naive", (float("nan"),))[0]
        for curve, (loss_b, acc_b_) in bars.items():
            t = diff = ""
            if curve == "ours":
                t = f"{min(times):.2f}/{statistics.median(times):.2f}"
                diff = f"{result.max_output_difference:.1e}"
            elif curve == "rebasin pkg":
                t = f"{rb_time:.2f}" if rb_time is not None else ""
                diff = f"{rb_diff:.1e}" if rb_diff is not None else ""
            ratio = f" ({loss_b / naive_loss:.0%} of naive)" if curve not in ("naive",) and naive_loss > 0 else ""
            print(f"{'':<16} {curve:<12} {loss_b:>12.4f} {100 * acc_b_:>10.1f}pt {t:>10} {diff:>11}{ratio}")
        if rb_note != "ok":
            print(f"{'':<16} rebasin pkg: {rb_note}")
    print(f"\ntime: wall-clock min/median of the timed runs (spec + matching + float64 check) on the CPU; "
          f"load average at the end {os.getloadavg()[0]:.1f}.")
    print("aligned curves re-estimate BatchNorm statistics at every point for BN models (reset_bn=auto).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
