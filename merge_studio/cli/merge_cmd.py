"""``merge-studio merge``: run a recipe (ours or a mergekit config), or a quick merge from flags."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from merge_studio.cli.inspect_cmd import human_bytes
from merge_studio.cli.params import parse_assignments, parse_model_params
from merge_studio.cli.progress_bar import ProgressBar
from merge_studio.errors import RecipeError

if TYPE_CHECKING:
    from merge_studio.core.recipe import Recipe

EPILOG = """examples:
  merge-studio merge recipe.yaml
  merge-studio merge mergekit-config.yml -o merged/
  merge-studio merge --method slerp a.safetensors b.safetensors --param t=0.3 -o out.safetensors
  merge-studio merge --method ties --base base.safetensors ft1.safetensors ft2.safetensors \\
      --model-param weight=1,0.5 --model-param density=0.5 --param lambda=1.0 -o out/
  merge-studio merge --method simple_average llama-a/ llama-chat/ --tokenizer-source union -o merged/
  merge-studio merge recipe.yaml --dry-run          size, free space, memory and time; writes nothing

An existing output is never replaced unless --force is given. Every merge is recorded
(see 'merge-studio history').

Hugging Face folders in give a model folder out (config, tokenizer, README model card).

per-layer values: --param "t=[0, 0.5, 1]" fades t from the first to the last layer;
--param 't=[{filter: attn, value: 0.3}, {value: 0.7}]' sets it by tensor name."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "merge",
        help="merge checkpoints from a recipe or from flags",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="RECIPE|MODEL", help="a recipe YAML, or the models (with --method)")
    parser.add_argument("-o", "--output", help="output .safetensors file or folder (overrides the recipe)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the estimate (output size, free space, peak memory, time) and write nothing")
    parser.add_argument("-f", "--force", action="store_true", help="replace the output if it already exists")
    parser.add_argument("--method", help="merge method for a quick merge (see 'merge-studio methods list')")
    parser.add_argument("--base", help="base model path")
    parser.add_argument("--model", action="append", default=[], help="add a model (repeatable)")
    parser.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    parser.add_argument("--model-param", action="append", metavar="NAME=V1,V2,...", help="per-model parameter, one value per model in order")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", help="output dtype: float32, float16, bfloat16 (default: the inputs')")
    parser.add_argument("--shard-size", help="split output into shards above this size, e.g. 5GB (output must be a folder)")
    parser.add_argument("--on-mismatch", choices=["error", "copy_base", "skip"], help="what to do with tensors not shared by all models")
    parser.add_argument("--arch", help="architecture spec (needed by data-aware and re-basin methods)")
    parser.add_argument("--seed", type=int, help="random seed for randomised methods")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="worker threads (default: every core, or $MERGE_STUDIO_THREADS); the output is the same for any N")
    parser.add_argument("--tokenizer-source", metavar="base|union|MODEL",
                        help="Hugging Face folders: the output's vocabulary and tokenizer (default: base)")
    parser.add_argument("--chat-template", metavar="NAME|JINJA",
                        help="chat template for the output tokenizer: chatml, llama3, mistral, alpaca, auto, or Jinja text")
    parser.add_argument("--no-hash", action="store_true", help="don't record the sources' SHA-256 in the output")
    parser.add_argument("--allow-non-finite", action="store_true",
                        help="merge inputs holding NaN or infinite values (default: stop, naming the tensor)")
    parser.add_argument("--save-recipe", metavar="PATH", help="also save the recipe that was run (with any coefficients the method learned)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def build_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe a command line describes (a file with overrides, or flags alone)."""
    from merge_studio.core.recipe import Recipe, load_recipe  # pydantic: not needed for --help
    overrides: dict[str, Any] = {}
    for key, value in (
        ("output", args.output and str(Path(args.output).expanduser().absolute())),
        ("device", args.device),
        ("dtype", args.dtype),
        ("shard_size", args.shard_size),
        ("on_mismatch", args.on_mismatch),
        ("arch", args.arch),
        ("seed", args.seed),
    ):
        if value is not None:
            overrides[key] = value
    if args.no_hash:
        overrides["hash_sources"] = False
    if args.allow_non_finite:
        overrides["allow_non_finite"] = True
    tokenizer: dict[str, Any] = {}
    if args.tokenizer_source:
        source = args.tokenizer_source
        tokenizer["source"] = source if source in ("base", "union") else str(Path(source).resolve())
    if args.chat_template:
        tokenizer["chat_template"] = args.chat_template
    if args.method:
        paths = [*args.inputs, *args.model]
        if not paths:
            raise RecipeError("no models given", hint="list the model paths after --method NAME")
        per_model = parse_model_params(args.model_param, len(paths))
        data: dict[str, Any] = {
            "method": args.method,
            "models": [{"path": str(Path(p).expanduser().absolute()), "params": mp} for p, mp in zip(paths, per_model, strict=True)],
            "params": parse_assignments(args.param),
            **overrides,
        }
        if tokenizer:
            data["tokenizer"] = tokenizer
        if args.base:
            data["base"] = str(Path(args.base).expanduser().absolute())
        return Recipe.from_mapping(data, source="command line")
    if len(args.inputs) != 1 or args.model:
        raise RecipeError("give one recipe file, or --method NAME with the models")
    recipe = load_recipe(args.inputs[0])
    data = recipe.model_dump()
    data.update(overrides)
    if tokenizer:
        data["tokenizer"] = {**(data.get("tokenizer") or {}), **tokenizer}
    if args.base:
        data["base"] = str(Path(args.base).expanduser().absolute())
    if args.param:
        data["params"] = {**data["params"], **parse_assignments(args.param)}
    return Recipe.from_mapping(data, source=args.inputs[0])


def run(args: argparse.Namespace) -> int:
    from merge_studio.core.estimate import estimate_merge, iter_checked_merge  # torch; --help must not wait
    from merge_studio.core.progress import drive

    recipe = build_recipe(args)
    from merge_studio.core.param_scopes import parameter_warnings

    for warning in parameter_warnings(recipe):
        print(f"warning: {warning}", file=sys.stderr)
    from merge_studio.core.overwrite import merge_targets, refuse_existing

    if args.dry_run:
        if not recipe.output:
            raise RecipeError("the recipe names no output", hint="pass -o OUTPUT")
        estimate = estimate_merge(recipe, threads=args.threads)
        print("\n".join(["dry run: nothing written", *estimate.lines()]))
        if not estimate.fits:
            print("the merge would be refused: not enough disk space")
        return 0
    refuse_existing(merge_targets(recipe), force=args.force)
    if args.save_recipe:
        recipe.save(args.save_recipe)
    if args.threads is not None and args.threads < 1:
        raise RecipeError(f"--threads {args.threads} must be at least 1")
    from merge_studio.core.history import record_merge
    from merge_studio.errors import Cancelled

    bar = ProgressBar(enabled=not args.quiet)
    started = time.perf_counter()
    try:
        result = drive(iter_checked_merge(recipe, threads=args.threads), bar)
    except (Cancelled, KeyboardInterrupt):
        record_merge(recipe, status="cancelled", seconds=time.perf_counter() - started, source="cli")
        raise
    except Exception as exc:
        record_merge(recipe, status="failed", seconds=time.perf_counter() - started, error=str(exc), source="cli")
        raise
    finally:
        bar.close()
    learned = recipe.with_learned(result.report)
    if learned is not recipe:
        names = ", ".join(result.report["learned_params"])
        if args.save_recipe:
            learned.save(args.save_recipe)
            print(f"saved the learned {names} in {args.save_recipe}", file=sys.stderr)
        elif not args.quiet:
            print(f"the learned {names} are in the output's report; --save-recipe PATH keeps them in a recipe "
                  "that re-runs this merge without data", file=sys.stderr)
    record_merge(recipe, result=result, source="cli")
    if args.json:
        print(json.dumps({
            "outputs": [str(p) for p in result.outputs],
            "method": result.method,
            "tensors": result.tensor_count,
            "merged": result.merged,
            "copied": list(result.copied),
            "skipped": list(result.skipped),
            "seconds": round(result.seconds, 3),
            "bytes_read": result.bytes_read,
            "bytes_written": result.bytes_written,
        }, indent=2))
        return 0
    rate = result.bytes_read / result.seconds if result.seconds > 0 else 0
    for out in result.outputs:
        print(f"wrote {out}")
    print(
        f"{result.tensor_count} tensors ({result.merged} merged, {len(result.copied)} copied, "
        f"{len(result.skipped)} left out), {human_bytes(result.bytes_written)} in {result.seconds:.1f} s "
        f"({human_bytes(rate)}/s read)",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    return 0
