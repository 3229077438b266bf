"""``merge-studio barrier A B``: loss and accuracy along the line between two models, headless."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from typing import TYPE_CHECKING

from merge_studio.core.evaluate.curve_kinds import CURVE_KINDS
from merge_studio.core.overwrite import refuse_existing
from merge_studio.errors import MergeStudioError

if TYPE_CHECKING:
    from merge_studio.core.evaluate.data import DataSpec


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``merge-studio evaluate``: which data, which architecture, where."""
    parser.add_argument("--arch", metavar="SPEC", help="architecture, e.g. zoo:mlp, my_model.py:build or hf:FOLDER "
                        "(default: what the first checkpoint declares or matches; Hugging Face folders by their config.json)")
    parser.add_argument("--data", default="digits", metavar="SOURCE",
                        help="'digits', a .safetensors/.pt/.npz file with inputs and targets, file.py:make_dataset, "
                        "or text for language models: a .txt file, a folder of .txt files, or a .jsonl with a 'text' field")
    parser.add_argument("--task", choices=("classification", "regression", "language_modeling"), default=None,
                        help="default: language_modeling for text, else classification")
    parser.add_argument("--layout", choices=("auto", "image", "flat"), default="auto")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="examples per batch (default 256; 8 token windows for text)")
    parser.add_argument("--tokenizer", metavar="FOLDER",
                        help="text: the folder whose tokenizer cuts it into tokens (default: the first model's folder)")
    parser.add_argument("--seq-len", type=int, default=512, metavar="N",
                        help="text: tokens per window (default 512, at most the model's context)")
    parser.add_argument("--max-tokens", type=int, default=200_000, metavar="N",
                        help="text: token budget; text past it is not read (default 200000)")
    parser.add_argument("--max-examples", type=int, default=None, metavar="N", help="at most N examples per split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--splits", default="train,test", help="comma-separated: train, test or both (default)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


@contextlib.contextmanager
def torch_threads(args: argparse.Namespace) -> Iterator[None]:
    """Use ``--threads`` for the command, then restore torch's setting (the CLI may run in-process)."""
    import torch

    wanted = getattr(args, "threads", None)
    if wanted is not None and wanted < 1:
        raise MergeStudioError(f"--threads {wanted} must be at least 1")
    previous = torch.get_num_threads()
    if wanted:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def data_spec(args: argparse.Namespace) -> DataSpec:
    from merge_studio.core.evaluate.data import DataSpec  # imports torch

    given = {"task": args.task, "batch_size": args.batch_size, "tokenizer": getattr(args, "tokenizer", None)}
    try:
        return DataSpec(source=args.data, layout=args.layout, max_examples=args.max_examples, seed=args.seed,
                        seq_len=getattr(args, "seq_len", 512), max_tokens=getattr(args, "max_tokens", 200_000),
                        **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        raise MergeStudioError(f"invalid data options: {exc}") from None


def parse_splits(text: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in splits if s not in ("train", "test")]
    if bad or not splits:
        raise MergeStudioError(f"unknown split {bad[0] if bad else text!r}", hint="use --splits train,test")
    return splits


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("barrier", help="loss/accuracy barrier along the interpolation between two models",
                            description="Evaluate θ(λ) = (1−λ)·A + λ·B at evenly spaced λ and report the barrier: "
                            "how far loss rises (accuracy drops) above the straight line between A and B.")
    parser.add_argument("model_a", metavar="A", help="first checkpoint")
    parser.add_argument("model_b", metavar="B", help="second checkpoint")
    add_data_arguments(parser)
    parser.add_argument("--steps", type=int, default=25, help="points along the line (default 25)")
    parser.add_argument("--merged", metavar="M", help="also draw the path A → M → B through this merged model")
    parser.add_argument("--aligned", metavar="B2", help="also draw A → B2, where B2 is B aligned (permuted) to A")
    parser.add_argument("--align", action="store_true",
                        help="align B to A first and also draw A → aligned B (and A → aligned B with REPAIR)")
    parser.add_argument("--align-method", choices=("auto", "weight", "activation"), default="auto",
                        help="how --align finds the permutation: weight matching, activation matching on the data, "
                        "or auto (both, keeping the one whose midpoint merge has the lower loss; default)")
    parser.add_argument("--curves", help=f"comma-separated subset of {', '.join(CURVE_KINDS)} (default: all that apply)")
    parser.add_argument("--reset-bn", choices=("auto", "on", "off"), default="auto",
                        help="re-estimate BatchNorm statistics at every point (auto: when the model has BatchNorm)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    parser.add_argument("--json-out", metavar="PATH", help="write the JSON report to a file")
    parser.add_argument("--csv", metavar="PATH", help="write every point as CSV")
    parser.add_argument("--plot", metavar="PATH", help="save the plot (.png, .svg or .pdf)")
    parser.add_argument("--save-models", metavar="DIR", help="keep every interpolated model as safetensors in DIR")
    parser.add_argument("-f", "--force", action="store_true", help="replace output files that already exist")
    parser.set_defaults(func=run)


def _table(report) -> str:
    rows = report.summary_rows()
    if report.task == "language_modeling":
        return _perplexity_table(rows)
    lines = [f"{'curve':<12} {'split':<6} {'loss A':>8} {'loss B':>8} {'loss max':>9} {'barrier':>8} {'acc drop':>9}"]
    for r in rows:
        drop = "-" if r["accuracy_barrier"] is None else f"{100 * r['accuracy_barrier']:.1f} pts"
        lines.append(f"{r['curve']:<12} {r['split']:<6} {r['loss_at_A']:>8.4f} {r['loss_at_B']:>8.4f} "
                     f"{r['loss_max']:>9.4f} {r['loss_barrier']:>8.4f} {drop:>9}")
    return "\n".join(lines)


def _perplexity_table(rows: list[dict]) -> str:
    """Language models: token loss and its perplexity at A, at B and at the worst point."""
    import math

    def ppl(loss: float) -> str:
        return f"{math.exp(min(loss, 700.0)):.2f}"

    lines = [f"{'curve':<12} {'ppl A':>9} {'ppl B':>9} {'ppl max':>9} {'loss A':>8} {'loss B':>8} {'barrier':>8} {'acc drop':>9}"]
    for r in rows:
        drop = "-" if r["accuracy_barrier"] is None else f"{100 * r['accuracy_barrier']:.1f} pts"
        lines.append(f"{r['curve']:<12} {ppl(r['loss_at_A']):>9} {ppl(r['loss_at_B']):>9} {ppl(r['loss_max']):>9} "
                     f"{r['loss_at_A']:>8.4f} {r['loss_at_B']:>8.4f} {r['loss_barrier']:>8.4f} {drop:>9}")
    return "\n".join(lines)


def save_figure(fig, path: str) -> None:
    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise MergeStudioError(f"cannot save a plot as {target.suffix or 'a file without suffix'}",
                               hint="use a .png, .svg or .pdf file name")
    try:
        fig.savefig(target, dpi=150)
    except OSError as exc:
        raise MergeStudioError(f"cannot write {target}: {exc.strerror or exc}", hint="choose a folder you can write to") from exc


def run(args: argparse.Namespace) -> int:
    from merge_studio.cli.progress_bar import ProgressBar
    from merge_studio.core.evaluate.jobs import BarrierRequest
    from merge_studio.core.progress import drive

    bar = ProgressBar(enabled=not args.quiet)
    try:
        if args.steps < 2:
            raise MergeStudioError(f"--steps {args.steps} is too few", hint="use at least 2 (25 is the default)")
        refuse_existing([p for p in (args.json_out, args.csv, args.plot) if p], force=args.force)
        curves = tuple(c.strip() for c in args.curves.split(",")) if args.curves else None
        request = BarrierRequest(
            model_a=args.model_a, model_b=args.model_b, arch=args.arch, data=data_spec(args), steps=args.steps,
            splits=parse_splits(args.splits), curves=curves, merged=args.merged, aligned_b=args.aligned,
            align=args.align, align_method=args.align_method, reset_bn=args.reset_bn, save_dir=args.save_models, device=args.device,
        )
        with torch_threads(args):
            report = drive(request.job(), bar)
        bar.close()
        report.save(json_path=args.json_out, csv_path=args.csv)
        if args.plot:
            from matplotlib.figure import Figure

            from merge_studio.plots.barrier import draw_barrier_report

            fig = Figure(figsize=(11, 4.2))
            draw_barrier_report(fig, report.curves, splits=report.splits[::-1], task=report.task,
                                title=f"{report.model_names[0]} ↔ {report.model_names[1]} on {report.data or args.data}")
            save_figure(fig, args.plot)
        if args.json:
            print(report.to_json())
        else:
            print(_table(report))
        return 0
    except MergeStudioError as exc:
        bar.close()
        print(f"merge-studio barrier: error: {exc}", file=sys.stderr)
        return 1
