"""Alignment benchmark: time and loss barriers of weight matching, activation matching and REPAIR.

Pairs of small models trained on digits from two seeds, each architecture trained
two ways: with Adam and no weight decay (weights stay close to their random
start, which weight matching cannot see past) and with weight decay (SGD, or
AdamW for the transformer). The demo's MLPs (Adam) and ResNet-20s (SGD + decay)
come from ``merge_studio.core.demo``; the other pairs are trained here once with
the demo trainer and cached (``--cache``). For each pair it prints the test loss
barrier of:

* the naive path A→B, and A→B with BatchNorm statistics re-estimated (BN models),
* A→π(B) after weight matching (WM) and after activation matching (AM) on 2000
  training images, each plain (BN statistics re-estimated for BN models) and with
  REPAIR (every hidden unit's mean and spread reset to the interpolated endpoints';
  BN re-estimated too),
* what ``auto`` keeps (the lower midpoint loss on training data, REPAIR on), as
  the method the app recommends,
* the ``rebasin`` package (snimu/rebasin, benchmark-only dependency) where it runs,

with each barrier as a share of the naive one, the CPU seconds of each alignment
(spec + matching + float64 check) and the largest output change of π(B) vs B.

    python benchmarks/alignment.py [--steps 11] [--models mlp,vgg,resnet,vit] [--skip-rebasin]

The rebasin package is installed only for this script (pip install --no-deps rebasin tqdm).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from merge_studio.core.arch import build_module, example_input  # noqa: E402
from merge_studio.core.demo import DemoRecipe, ensure_demo_models, train_demo_model, user_data_dir  # noqa: E402
from merge_studio.core.evaluate import evaluate, iter_barrier_comparison, load_data  # noqa: E402
from merge_studio.core.progress import drive  # noqa: E402
from merge_studio.core.rebasin.align import iter_align  # noqa: E402
from merge_studio.core.rebasin.apply import verify_function  # noqa: E402
from merge_studio.core.rebasin.choose import DEFAULT_EXAMPLES, iter_chosen_alignment  # noqa: E402
from merge_studio.core.rebasin.repair import calibration_batches  # noqa: E402

SGD_DECAY = dict(optimizer="sgd", lr=0.1, weight_decay=1e-2)
ADAM = dict(optimizer="adam", lr=3e-3, weight_decay=0.0)


@dataclass(frozen=True)
class PairRecipe:
    label: str
    arch: str
    training: str
    demo: str | None = None  # a demo model name prefix: use the cached demo pair
    epochs: int = 8
    optimizer: dict | None = None


PAIRS = (
    PairRecipe("MLP 64-512³-10", "zoo:mlp", "Adam, no decay", demo="mlp"),
    PairRecipe("MLP 64-512³-10", "zoo:mlp", "SGD + decay", epochs=12, optimizer=dict(optimizer="sgd", lr=0.05, weight_decay=5e-4)),
    PairRecipe("VGG (BN)", "zoo:vgg", "Adam, no decay", epochs=6, optimizer=dict(optimizer="adam", lr=1e-3, weight_decay=0.0)),
    PairRecipe("VGG (BN)", "zoo:vgg", "SGD + decay", epochs=6, optimizer=SGD_DECAY),
    PairRecipe("ResNet-20 (BN)", "zoo:resnet20?width=1", "Adam, no decay", epochs=8, optimizer=ADAM),
    PairRecipe("ResNet-20 (BN)", "zoo:resnet20?width=1", "SGD + decay", demo="resnet20"),
    PairRecipe("ViT d128 (LN)", "zoo:vit?dim=128&n_heads=4", "Adam, no decay", epochs=30,
               optimizer=dict(optimizer="adam", lr=1e-3, weight_decay=0.0)),
    PairRecipe("ViT d128 (LN)", "zoo:vit?dim=128&n_heads=4", "AdamW + decay", epochs=30,
               optimizer=dict(optimizer="adamw", lr=1e-3, weight_decay=0.1)),
)
FAMILY = {"mlp": "MLP", "vgg": "VGG", "resnet": "ResNet", "vit": "ViT"}


def _trained_pair(recipe: PairRecipe, cache: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file, save_file

    if recipe.demo:
        by_name = {m.name: m for m in ensure_demo_models().models}
        return load_file(by_name[f"{recipe.demo}_seed0"].path), load_file(by_name[f"{recipe.demo}_seed1"].path)
    states = []
    for seed in (0, 1):
        key = "".join(c if c.isalnum() else "_" for c in f"{recipe.arch}_{recipe.training}_{recipe.epochs}_{seed}")
        path = cache / f"{key}.safetensors"
        if not path.exists():
            demo = DemoRecipe(key, recipe.arch, seed, epochs=recipe.epochs, **(recipe.optimizer or {}))
            start = time.perf_counter()
            module, accuracy = drive(train_demo_model(demo))
            cache.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(path))
            print(f"  trained {recipe.label}, {recipe.training}, seed {seed}: test accuracy {accuracy:.3f} "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
        states.append(load_file(str(path)))
    return states[0], states[1]


def _timed(job) -> tuple[object, float]:  # noqa: ANN001 - a generator
    start = time.process_time()
    result = drive(job)
    return result, time.process_time() - start


def run_rebasin_package(arch: str, a: dict, b: dict) -> tuple[dict | None, str]:
    """Align with snimu/rebasin (PermutationCoordinateDescent); returns B′ and a note."""
    try:
        from rebasin import PermutationCoordinateDescent
    except Exception as exc:  # noqa: BLE001
        return None, f"not installed ({type(exc).__name__})"
    model_a, model_b = build_module(arch, a).eval(), build_module(arch, b).eval()
    try:
        PermutationCoordinateDescent(model_a, model_b, example_input(arch), device_a="cpu", device_b="cpu").rebasin()
    except Exception as exc:  # noqa: BLE001
        return None, f"failed: {type(exc).__name__}"
    return {k: v.detach().clone() for k, v in model_b.state_dict().items()}, "ok"


def barrier_row(recipe: PairRecipe, a: dict, b: dict, steps: int, with_rebasin: bool) -> dict:
    arch = recipe.arch
    module = build_module(arch)
    data = load_data({"source": "digits"}, for_module=module)
    batches = calibration_batches(data.train.inputs[:DEFAULT_EXAMPLES])
    row: dict = {"label": recipe.label, "training": recipe.training}
    row["acc"] = [evaluate(build_module(arch, s), data.test, device="cpu").accuracy for s in (a, b)]

    def curves(kinds: list[str], aligned: dict | None = None) -> dict[str, float]:
        report = drive(iter_barrier_comparison(build_module(arch), a, b, data, curves=kinds, aligned_b=aligned, steps=steps,
                                               splits=("test",), device="cpu"))
        return {c.label: c.loss_barrier["test"] for c in report.curves}

    base = curves(["naive", "bn_reset"])
    row["naive"], row["bn reset"] = base["naive"], base.get("BN reset")
    for method, tag in (("weight", "WM"), ("activation", "AM")):
        result, cpu = _timed(iter_align(build_module(arch), a, b, example_input(arch), arch=arch, method=method,
                                        batches=batches, device="cpu"))
        got = curves(["aligned", "repaired"], result.aligned)
        row[tag], row[f"{tag}+REPAIR"] = got["aligned"], got["aligned + REPAIR"]
        row[f"{tag} s"], row[f"{tag} diff"] = cpu, result.max_output_difference
    auto = drive(iter_chosen_alignment(build_module(arch), a, b, example_input(arch), data, choose="auto", arch=arch,
                                       device="cpu"))
    tag = "WM" if auto.report["method"] == "weight" else "AM"
    row["auto"], row["auto kept"] = row[f"{tag}+REPAIR"], tag
    if with_rebasin:
        aligned, note = run_rebasin_package(arch, a, b)
        row["rebasin pkg"] = curves(["aligned"], aligned)["aligned"] if aligned is not None else None
        row["rebasin note"] = note
        if aligned is not None:
            row["rebasin diff"] = verify_function(build_module(arch), b, aligned, example_input(arch), tol=1e9)
    return row


def _share(value: float | None, naive: float) -> str:
    if value is None:
        return f"{'—':>13}"
    return f"{value:6.3f} ({value / naive:4.0%})" if naive > 0 else f"{value:6.3f}       "


def print_table(rows: list[dict], with_rebasin: bool) -> None:
    cols = ["naive", "bn reset", "WM", "WM+REPAIR", "AM", "AM+REPAIR", "auto"] + (["rebasin pkg"] if with_rebasin else [])
    header = f"{'model':<15} {'training':<15} " + " ".join(f"{c:>13}" for c in cols) + f" {'WM s':>6} {'AM s':>6} {'max|Δout|':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        naive = r["naive"]
        cells = " ".join(_share(r.get(c), naive) if c != "naive" else f"{naive:13.3f}" for c in cols)
        diff = max(r["WM diff"], r["AM diff"])
        print(f"{r['label']:<15} {r['training']:<15} {cells} {r['WM s']:6.2f} {r['AM s']:6.2f} {diff:9.1e}"
              f"   auto kept {r['auto kept']}; accuracy A {r['acc'][0]:.3f} B {r['acc'][1]:.3f}")
        if with_rebasin and r.get("rebasin note") != "ok":
            print(f"{'':<31} rebasin package: {r.get('rebasin note')}")


def speed(repeats: int = 3) -> None:
    """The two timing goals: weight matching of the demo MLP pair, activation matching of ResNet-20 on 1000 images."""
    from safetensors.torch import load_file

    by_name = {m.name: m for m in ensure_demo_models().models}
    print("speed (one thread; wall-clock and CPU seconds, best of "
          f"{repeats}; spec + matching + float64 check):")
    for label, name, method, examples in (("weight matching, MLP 64-512³-10", "mlp", "weight", 0),
                                          ("activation matching, ResNet-20, 1000 images", "resnet20", "activation", 1000)):
        model = by_name[f"{name}_seed0"]
        a, b = load_file(model.path), load_file(by_name[f"{name}_seed1"].path)
        module = build_module(model.arch)
        inputs = load_data({"source": "digits"}, for_module=module).train.inputs[:examples] if examples else None
        batches = calibration_batches(inputs) if inputs is not None else None
        wall, cpu = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            drive(iter_align(build_module(model.arch), a, b, example_input(model.arch), arch=model.arch, method=method,
                             batches=batches, device="cpu"))
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        print(f"  {label:<45} {min(wall):5.2f} s wall, {min(cpu):5.2f} s CPU", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=11, help="interpolation points per curve (default 11)")
    parser.add_argument("--models", default="mlp,vgg,resnet,vit", help="families to run: mlp, vgg, resnet, vit")
    parser.add_argument("--skip-rebasin", action="store_true", help="do not run the rebasin package")
    parser.add_argument("--speed-only", action="store_true", help="only time the two speed goals")
    parser.add_argument("--cache", type=Path, default=user_data_dir() / "bench" / "alignment",
                        help="where the pairs trained here are kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    wanted = {FAMILY[m.strip()] for m in args.models.split(",") if m.strip() in FAMILY}
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}", flush=True)
    speed()
    if args.speed_only:
        return 0
    rows = []
    for recipe in PAIRS:
        if not any(recipe.label.startswith(f) for f in wanted):
            continue
        a, b = _trained_pair(recipe, args.cache)
        rows.append(barrier_row(recipe, a, b, args.steps, not args.skip_rebasin))
        print(f"  {recipe.label}, {recipe.training}: done", flush=True)
    print()
    print_table(rows, not args.skip_rebasin)
    print(f"\nTest loss barriers (share of the naive barrier); BN models re-estimate BN statistics on every aligned point. "
          f"WM s / AM s: CPU seconds of one alignment (spec + matching + float64 check). Load average at the end "
          f"{os.getloadavg()[0]:.1f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
