"""``merge-studio lora info|apply|merge|extract``: LoRA adapters from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from merge_studio.cli.progress_bar import ProgressBar
from merge_studio.core.overwrite import refuse_existing
from merge_studio.core.progress import drive

EPILOG = """examples:
  merge-studio lora info adapter/ style.safetensors
  merge-studio lora apply base/ adapter/ -o merged.safetensors
  merge-studio lora merge a/ b/ --weights 1,0.5 -o ab/                 (concatenation: exact)
  merge-studio lora merge a/ b/ --svd --rank 16 -o ab16/               (re-factorised to rank 16)
  merge-studio lora extract --base base/ --tuned finetune/ --rank 32 -o lora/

An adapter applied onto its base is also an input to any merge: 'BASE+ADAPTER'
(mergekit's syntax), e.g. merge-studio merge --method lerp a/ base/+adapter/ -o out/."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("lora", help="LoRA adapters: list, apply onto a base, merge, extract",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    lora = parser.add_subparsers(dest="lora_command", metavar="ACTION", required=True)

    info = lora.add_parser("info", help="base, rank, alpha and target modules of adapters")
    info.add_argument("paths", nargs="+", metavar="ADAPTER", help="PEFT adapter folders or kohya LoRA files")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)

    apply = lora.add_parser("apply", help="write a model with an adapter merged into its base")
    apply.add_argument("base", help="the base model the adapter was trained on")
    apply.add_argument("adapters", nargs="+", metavar="ADAPTER", help="one or more adapters, applied in order")
    apply.add_argument("-o", "--output", required=True, help="output .safetensors file or folder")
    apply.add_argument("-f", "--force", action="store_true", help="replace the output if it already exists")
    apply.add_argument("--strength", type=float, default=1.0, help="multiply every adapter's change (default 1)")
    apply.add_argument("--allow-non-finite", action="store_true",
                       help="write the model even if NaN or infinite values appear in it")
    apply.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    apply.set_defaults(func=run_apply)

    merge = lora.add_parser("merge", help="merge adapters of one base into one adapter")
    merge.add_argument("adapters", nargs="+", metavar="ADAPTER")
    merge.add_argument("-o", "--output", required=True, help="a folder (PEFT) or a .safetensors file (kohya)")
    merge.add_argument("-f", "--force", action="store_true", help="replace the output if it already exists")
    merge.add_argument("--weights", help="comma-separated weight per adapter (default 1 each)")
    merge.add_argument("--svd", action="store_true", help="re-factorise to --rank instead of concatenating")
    merge.add_argument("--rank", type=int, help="rank of the merged adapter (with --svd)")
    merge.add_argument("--json", action="store_true", help="print the result as JSON")
    merge.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=run_merge_adapters)

    extract = lora.add_parser("extract", help="extract a LoRA from a fine-tuned model and its base")
    extract.add_argument("--tuned", required=True, help="the fine-tuned model")
    extract.add_argument("--base", required=True, help="the model it was fine-tuned from")
    extract.add_argument("--rank", type=int, required=True, help="rank of every layer's factors")
    extract.add_argument("-o", "--output", required=True, help="a folder (PEFT) or a .safetensors file (kohya)")
    extract.add_argument("-f", "--force", action="store_true", help="replace the output if it already exists")
    extract.add_argument("--format", choices=["auto", "peft", "kohya"], default="auto",
                         help="auto: kohya for Stable Diffusion checkpoints, PEFT otherwise")
    extract.add_argument("--include", metavar="REGEX", help="only tensors whose name matches")
    extract.add_argument("--exclude", metavar="REGEX", help="leave out tensors whose name matches")
    extract.add_argument("--embeddings", action="store_true", help="also factor embedding tables (PEFT)")
    extract.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N")
    extract.add_argument("--json", action="store_true", help="print the per-layer errors as JSON")
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(func=run_extract)


def _open_adapter(path: str):  # noqa: ANN202 - an AdapterCheckpoint
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.errors import MergeStudioError

    ck = open_checkpoint(path)
    if getattr(ck, "adapter", None) is None:
        ck.close()
        raise MergeStudioError(f"{Path(path).name} is not a LoRA adapter",
                               hint="give a PEFT adapter folder (adapter_config.json) or a kohya LoRA file")
    return ck


def run_info(args: argparse.Namespace) -> int:
    docs = []
    for path in args.paths:
        with _open_adapter(path) as ck:
            a = ck.adapter
            docs.append({"path": str(a.path), "format": a.format, "kind": a.kind_label, "base_model": a.base_model,
                         "ranks": a.ranks, "alphas": a.alphas, "targets": a.target_names(),
                         "modules": len(a.modules), "replaced": sorted(a.replacements)})
    if args.json:
        print(json.dumps(docs, indent=2))
        return 0
    for d in docs:
        print(f"{Path(d['path']).name}  [{d['kind']}]")
        print(f"  base      {d['base_model'] or '(not named)'}")
        print(f"  rank      {', '.join(map(str, d['ranks']))}")
        print(f"  alpha     {', '.join(f'{x:g}' for x in d['alphas'])}")
        print(f"  targets   {', '.join(d['targets'])} ({d['modules']} modules)")
        if d["replaced"]:
            print(f"  whole     {', '.join(d['replaced'])}")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    refuse_existing([args.output], force=args.force)
    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.lora.apply import AdaptedCheckpoint
    from merge_studio.core.lora.bake import iter_write_checkpoint

    base = open_checkpoint(args.base)
    adapters = []
    try:
        for path in args.adapters:
            adapters.append(_open_adapter(path))
        adapted = AdaptedCheckpoint(base, [(ck.adapter, args.strength) for ck in adapters], owns=[base, *adapters])
    except BaseException:
        base.close()
        for ck in adapters:
            ck.close()
        raise
    with adapted:
        path = drive(iter_write_checkpoint(adapted, args.output, allow_non_finite=args.allow_non_finite), ProgressBar(enabled=not args.quiet))
    print(f"wrote {path} ({len(adapted.adapted_names())} tensors changed by the adapter)")
    return 0


def run_merge_adapters(args: argparse.Namespace) -> int:
    refuse_existing([args.output], force=args.force)
    from merge_studio.core.lora.combine import iter_merge_adapters, relative_error

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    result = drive(
        iter_merge_adapters(args.adapters, args.output, weights=weights, mode="svd" if args.svd else "concat",
                            rank=args.rank),
        ProgressBar(enabled=not args.quiet),
    )
    if args.json:
        print(json.dumps({"path": str(result.path), "mode": result.mode, "format": result.format, "ranks": result.ranks,
                          "kept_energy": result.kept_energy,
                          "modules": {k: {"rank": m.rank, "kept_energy": m.kept_energy} for k, m in result.modules.items()},
                          "notes": list(result.notes)}, indent=2))
        return 0
    print(f"wrote {result.path} ({result.format}, {len(result.modules)} modules, rank {', '.join(map(str, result.ranks))})")
    if result.mode == "svd":
        print(f"kept energy {result.kept_energy:.4%} (relative error {relative_error(result.kept_energy):.4f})")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    refuse_existing([args.output], force=args.force)
    from merge_studio.core.lora.extract import iter_extract_lora

    result = drive(
        iter_extract_lora(args.tuned, args.base, args.output, rank=args.rank, fmt=args.format, include=args.include,
                          exclude=args.exclude, embeddings=args.embeddings, device=args.device),
        ProgressBar(enabled=not args.quiet),
    )
    if args.json:
        print(json.dumps({"path": str(result.path), "format": result.format, "rank": result.rank,
                          "relative_error": result.relative_error, "unchanged": result.unchanged,
                          "not_captured": list(result.not_captured),
                          "layers": [{"module": l.module, "rank": l.rank, "relative_error": l.relative_error}
                                     for l in result.layers]}, indent=2))
        return 0
    print(result.table())
    print(f"wrote {result.path} ({result.format}, {len(result.layers)} layers; {result.unchanged} unchanged)")
    if result.not_captured:
        shown = ", ".join(result.not_captured[:6]) + (" …" if len(result.not_captured) > 6 else "")
        print(f"note: {len(result.not_captured)} changed tensors are not in the adapter (biases, norms, embeddings): {shown}")
    return 0
