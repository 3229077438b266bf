"""``merge-studio graph``: draw a model (or a checkpoint's module tree) to SVG or PNG, headless.

    merge-studio graph model.safetensors -o model.svg
    merge-studio graph --arch zoo:resnet20?width=2 --depth 2 -o resnet.png
    merge-studio graph merged.safetensors --overlay relative-change --against a.safetensors -o change.png
    merge-studio graph path/to/llama_folder -o llama.svg            # 32 decoder layers drawn once, ×32
    merge-studio graph --arch hf:path/to/config.json --expand model.layers -o all_layers.svg
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from merge_studio.core.progress import drive
from merge_studio.core.overwrite import refuse_existing
from merge_studio.errors import MergeStudioError

OVERLAYS = ("relative-change", "cosine", "kept-fraction")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="draw a model graph (or a checkpoint's module tree) to .svg or .png",
        description="Draw the layer graph of a checkpoint's architecture, or of --arch alone. "
        "A checkpoint whose architecture is unknown is drawn as the module tree of its tensor names.",
    )
    parser.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="checkpoint file or folder")
    parser.add_argument(
        "--arch",
        metavar="SPEC",
        help="architecture: zoo:NAME[?k=v], path/to/file.py:function, package.module:function, model.pt2, "
        "or hf:FOLDER (a Hugging Face config.json; found by itself for model folders)",
    )
    parser.add_argument("--depth", type=int, default=3, metavar="N", help="levels of submodules to open (default 3)")
    parser.add_argument("--expand-nested", action="store_true", help="draw opened modules as boxes around their layers")
    parser.add_argument("--expand", action="append", default=[], metavar="BLOCK",
                        help="draw this block of repeated layers layer by layer (e.g. model.layers); "
                        "by default identical layers are drawn once, marked ×N")
    parser.add_argument("--no-collapse", action="store_true", help="draw every repeated layer")
    parser.add_argument(
        "--overlay",
        choices=OVERLAYS,
        help="colour layers by relative change against --against, cosine similarity with --against, "
        "or the task-vector mass TIES/DARE kept (from the merged file's metadata)",
    )
    parser.add_argument("--against", metavar="CHECKPOINT", help="the other model for --overlay relative-change/cosine")
    parser.add_argument("--dpi", type=int, default=110, help="PNG resolution (default 110)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write: OUT.svg or OUT.png")
    parser.add_argument("-f", "--force", action="store_true", help="replace output files that already exist")
    parser.set_defaults(func=run)


def _overlay(args: argparse.Namespace, checkpoint, stack: ExitStack):  # noqa: ANN001, ANN202
    from merge_studio.core import analysis
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.graph.jobs import Overlay

    if args.overlay is None:
        return None
    if checkpoint is None:
        raise MergeStudioError(f"--overlay {args.overlay} needs a CHECKPOINT", hint="give the merged checkpoint")
    title = analysis.OVERLAY_TITLES[args.overlay]
    if args.overlay == "kept-fraction":
        values = analysis.layer_kept_fraction(checkpoint)
        if not values:
            raise MergeStudioError(
                f"{checkpoint.name} records no kept task-vector mass",
                hint="only TIES/DARE merges made by Merge Studio record it",
            )
        return Overlay(title, values)
    if not args.against:
        raise MergeStudioError(f"--overlay {args.overlay} needs --against CHECKPOINT", hint="name the model to compare with")
    other = stack.enter_context(open_checkpoint(args.against))
    if args.overlay == "relative-change":
        return Overlay(title, analysis.layer_relative_change(other, checkpoint))
    return Overlay(title, analysis.layer_cosine(other, checkpoint), cmap="RdYlBu")


def run(args: argparse.Namespace) -> int:
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.graph.jobs import iter_arch_picture, iter_checkpoint_picture
    from merge_studio.graph.render import GraphvizUnavailable, dot_available, render

    out = Path(args.output)
    fmt = out.suffix.lower().lstrip(".")
    try:
        if fmt not in ("svg", "png"):
            raise MergeStudioError(f"cannot write a graph to {out.name}", hint="name the output .svg or .png")
        if args.checkpoint is None and args.arch is None:
            raise MergeStudioError("nothing to draw", hint="give a CHECKPOINT, --arch SPEC, or both")
        refuse_existing([out], force=args.force)
        if not dot_available():
            raise GraphvizUnavailable()
        with ExitStack() as stack:
            checkpoint = stack.enter_context(open_checkpoint(args.checkpoint)) if args.checkpoint else None
            overlay = _overlay(args, checkpoint, stack)
            if checkpoint is not None:
                picture = drive(iter_checkpoint_picture(
                    checkpoint, arch=args.arch, depth=args.depth, expand_nested=args.expand_nested, overlay=overlay,
                    expand=args.expand, collapse_repeats=not args.no_collapse,
                ))
            else:
                picture = drive(iter_arch_picture(
                    args.arch, depth=args.depth, expand_nested=args.expand_nested, overlay=overlay, title=args.arch,
                    expand=args.expand, collapse_repeats=not args.no_collapse,
                ))
        for note in picture.notes:
            print(f"note: {note}", file=sys.stderr)
        data = picture.svg if fmt == "svg" and picture.svg else render(picture.graph.dot, fmt, dpi=args.dpi)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except MergeStudioError as exc:
        print(f"merge-studio graph: {exc}", file=sys.stderr)
        return 1
    what = f"architecture {picture.arch}" if picture.arch else "module tree"
    print(f"wrote {out} ({what}, {len(picture.graph.nodes)} nodes)")
    for block in picture.graph.repeats:
        print(f"{block.span}: {block.count} identical {block.module_type} drawn once "
              f"(--expand {block.path} draws each)")
    return 0
