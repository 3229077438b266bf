"""``merge-studio align``: permute B's hidden units to match A (Git Re-Basin).

    merge-studio align a.safetensors b.safetensors --arch zoo:resnet20?width=1 -o b_aligned.safetensors
    merge-studio align a.safetensors b.safetensors -o b_aligned.safetensors --data digits --method auto
    merge-studio align a.safetensors b.safetensors -o b_aligned.safetensors --report perm.json --seed 3

``--method weight`` matches weights (no data needed); ``activation`` matches the
models' activations on ``--data``; ``auto`` (the default) tries both when data is
given and keeps the one whose midpoint merge has the lower loss, and without data
falls back to weight matching. The output is B, permuted: the same function as B
(checked in float64 before anything is written). Its metadata records the
permutation of every group and the architecture.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from merge_studio.core.progress import drive
from merge_studio.errors import MergeStudioError, OutputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="permute model B's hidden units to match model A (weight or activation matching)",
        description="Align B to A by Git Re-Basin weight matching, activation matching on data, or whichever merges "
        "better (--method auto). The output computes the same function as B; groups the architecture does not "
        "allow to permute keep their order and are listed.",
    )
    parser.add_argument("a", metavar="A", help="the reference checkpoint")
    parser.add_argument("b", metavar="B", help="the checkpoint to permute")
    parser.add_argument(
        "--arch", metavar="SPEC",
        help="architecture: zoo:NAME[?k=v], file.py:function, package.module:function or model.pt2 "
        "(default: the one recorded in A, or recognised from its tensors)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="aligned B, written as OUT.safetensors")
    parser.add_argument("--report", metavar="JSON", help="also write the permutation report here")
    parser.add_argument("-f", "--force", action="store_true", help="replace OUT (and the report) if they already exist")
    parser.add_argument("--seed", type=int, default=0, help="order in which groups are visited (default 0)")
    parser.add_argument("--restarts", type=int, default=0, metavar="N",
                        help="descend from N seeds and keep the best match (default 0: 8 for small models, else 1)")
    parser.add_argument("--max-sweeps", type=int, default=100, metavar="N", help="coordinate-descent passes at most (default 100)")
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest relative output change allowed (default 1e-6)")
    parser.add_argument("--method", choices=("auto", "weight", "activation"), default="auto",
                        help="how to find the permutation: weight matching, activation matching on --data, or auto "
                        "(both when --data is given, keeping the better merge; default)")
    parser.add_argument("--data", metavar="SOURCE", default=None,
                        help="data the models are run on for activation matching and for choosing (digits, a tensor "
                        "file, or file.py:function); without it only weight matching runs")
    parser.add_argument("--task", choices=("classification", "regression", "language_modeling"), default="classification",
                        help="what the data's targets are (used to score the merges --method auto compares)")
    parser.add_argument("--examples", type=int, default=2000, metavar="N",
                        help="training examples run through both models (default 2000)")
    parser.add_argument("--no-repair", action="store_true",
                        help="--method auto compares plain midpoints (BatchNorm re-estimated) instead of REPAIRed ones")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _check_output(out: Path, inputs: list[Path]) -> None:
    if out.suffix != ".safetensors":
        raise OutputError(f"cannot write the aligned model to {out.name}", hint="name the output .safetensors")
    for path in inputs:
        if out.exists() and path.exists() and out.resolve() == path.resolve():
            raise OutputError(f"the output {out} is one of the inputs", hint="write the aligned model to a new file")


def save_aligned(state: dict, path: Path, metadata: dict[str, str]) -> Path:
    """Write safetensors atomically: a temporary file in the same folder, then ``os.replace``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a folder you can write to") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def align_files(
    a: str | Path, b: str | Path, output: str | Path, *, arch: str | None = None, report_path: str | Path | None = None,
    seed: int = 0, restarts: int = 0, max_sweeps: int = 100, tolerance: float = 1e-6, device: str = "auto", on_progress=None,  # noqa: ANN001
    method: str = "auto", data: Any = None, examples: int = 2000, repair: bool = True,
) -> dict:
    """Align checkpoint B to A and write the result (and the report); returns the report.

    ``data`` is a :class:`DataSpec` (or its dict / source string) for activation matching and ``auto``.
    """
    from merge_studio.core.arch import detect_arch, example_input
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.evaluate.data import DataSpec, load_data
    from merge_studio.core.rebasin.align import module_for_alignment
    from merge_studio.core.rebasin.choose import iter_chosen_alignment
    from merge_studio.core.rebasin.report import permutation_metadata, write_report
    from merge_studio.errors import ArchitectureError

    out = Path(output)
    _check_output(out, [Path(a), Path(b)])
    with open_checkpoint(a) as ck_a, open_checkpoint(b) as ck_b:
        spec = arch or detect_arch(ck_a) or detect_arch(ck_b)
        if spec is None:
            raise ArchitectureError(
                f"cannot tell the architecture of {ck_a.name}", hint="give --arch, e.g. --arch zoo:mlp"
            )
        state_a, state_b = ck_a.state_dict(), ck_b.state_dict()
        metadata_b = dict(ck_b.metadata)
        names = (ck_a.name, ck_b.name)
    module = module_for_alignment(spec)
    loaded = None
    if data is not None:
        data_spec = DataSpec(source=data) if isinstance(data, str) else DataSpec.model_validate(data)
        loaded = load_data(data_spec, for_module=module)
    result = drive(
        iter_chosen_alignment(module, state_a, state_b, example_input(spec), loaded, choose=method, repair=repair,
                              examples=examples, arch=str(spec), max_sweeps=max_sweeps, seed=seed, restarts=restarts,
                              device=device, tolerance=tolerance, models=names),
        on_progress,
    )
    metadata = {k: v for k, v in metadata_b.items() if not k.startswith("merge_studio.permutation")}
    metadata.update(permutation_metadata(result.report))
    metadata["merge_studio.aligned_to"] = names[0]
    save_aligned(result.aligned, out, metadata)
    if report_path is not None:
        write_report(result.report, report_path)
    return result.report


def run(args: argparse.Namespace) -> int:
    from merge_studio.cli.progress_bar import ProgressBar

    from merge_studio.core.overwrite import refuse_existing

    _check_output(Path(args.output), [Path(args.a), Path(args.b)])  # "one of the inputs" says more than "exists"
    refuse_existing([args.output, *([args.report] if args.report else [])], force=args.force)
    bar = ProgressBar(enabled=not args.quiet)
    try:
        data = {"source": args.data, "task": args.task} if args.data else None
        report = align_files(
            args.a, args.b, args.output, arch=args.arch, report_path=args.report, seed=args.seed, restarts=args.restarts,
            max_sweeps=args.max_sweeps, tolerance=args.tolerance, device=args.device, on_progress=bar,
            method=args.method, data=data, examples=args.examples, repair=not args.no_repair,
        )
    except MergeStudioError as exc:
        bar.close()
        print(f"merge-studio align: {exc}", file=sys.stderr)
        return 1
    bar.close()
    moved = sum(g["moved_fraction"] * g["size"] for g in report["groups"])
    units = sum(g["size"] for g in report["groups"]) or 1
    how = "weight matching" if report.get("method") == "weight" else "activation matching"
    print(
        f"wrote {args.output}: {how}, {len(report['groups'])} groups, {moved / units:.0%} of units moved, "
        f"max output difference {report['max_output_difference']:.2g}"
    )
    for method, facts in report.get("candidates", {}).items():
        if "midpoint_loss" in facts:
            kept = " (kept)" if method == report.get("method") else ""
            print(f"  {method} matching: loss at the midpoint {facts['midpoint_loss']:.4g}{kept}")
    if report.get("agreement"):
        agree = report["agreement"]
        print(f"  weight and activation matching agree on {sum(agree.values()) / len(agree):.0%} of units (mean over groups)")
    if args.method != "weight" and not args.data:
        print("  no --data: only weight matching ran (give --data to also try activation matching)", file=sys.stderr)
    for point in report["unpermuted"]:
        print(f"not permuted at {point['node']}: {point['reason']}", file=sys.stderr)
    if args.report:
        print(f"report: {args.report}")
    return 0
