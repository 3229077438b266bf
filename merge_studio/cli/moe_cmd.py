"""``merge-studio moe CONFIG -o OUT``: assemble a mixture-of-experts model from mergekit-moe's YAML."""

from __future__ import annotations

import argparse
import json

from merge_studio.cli.progress_bar import ProgressBar
from merge_studio.core.overwrite import refuse_existing

HELP = "assemble a mixture-of-experts model (Mixtral, Qwen2-MoE) from dense experts (mergekit-moe's YAML)"
EPILOG = """examples:
  merge-studio moe moe.yml -o my-moe/
  merge-studio moe moe.yml -o my-moe/ --gate-mode cheap_embed --dtype bfloat16
  merge-studio moe moe.yml my-moe/                      (mergekit-moe's order works too)

The YAML is mergekit-moe's:
  base_model: path/to/base            # attention, norms and embeddings come from it
  gate_mode: hidden                   # hidden | hidden_avg | cheap_embed | random | uniform_random
  dtype: bfloat16
  experts_per_token: 2
  experts:
    - source_model: path/to/expert_1  # its MLPs become expert 1 of every layer
      positive_prompts: ["def parse(text):"]
      negative_prompts: ["Once upon a time"]   # optional
  shared_experts:                     # optional, Qwen2-MoE only
    - source_model: path/to/base
      positive_prompts: ["..."]

Llama and Mistral bases give Mixtral, Qwen2 gives Qwen2-MoE (a shared expert also
makes a Llama or Mistral base into Qwen2-MoE), Qwen3 gives Qwen3-MoE.
'hidden' runs the base model on the prompts (on the CPU unless --device says otherwise)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("moe", help=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", metavar="CONFIG", help="mergekit-moe YAML file")
    parser.add_argument("out", nargs="?", metavar="OUT", help="the model folder to write (as mergekit-moe takes it)")
    parser.add_argument("-o", "--output", help="the model folder to write")
    parser.add_argument("-f", "--force", action="store_true", help="replace the output folder if it already exists")
    parser.add_argument("--gate-mode", choices=["hidden", "hidden_avg", "cheap_embed", "random", "uniform_random"],
                        help="override the YAML's gate_mode")
    parser.add_argument("--dtype", help="override the YAML's dtype: float32, float16, bfloat16")
    parser.add_argument("--experts-per-token", type=int, metavar="K", help="override the YAML's experts_per_token")
    parser.add_argument("--device", default="cpu", help="where 'hidden' runs the base model: cpu (default), auto, cuda")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts per forward pass (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random gate modes and of noise_scale")
    parser.add_argument("--shard-size", help="split the weights into shards above this size, e.g. 5GB")
    parser.add_argument("--allow-same-experts", "--i-understand-this-is-not-useful-without-training",
                        action="store_true", dest="allow_same",
                        help="allow every expert to be the same model with prompt-made routers")
    parser.add_argument("--no-hash", action="store_true", help="don't record the sources' SHA-256 in the model card")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from merge_studio.core.moe.build import iter_build_moe
    from merge_studio.core.moe.config import MoeConfig, load_moe_config
    from merge_studio.core.progress import drive
    from merge_studio.core.recipe import parse_size

    from merge_studio.errors import RecipeError

    output = args.output or args.out
    if not output or (args.output and args.out and args.output != args.out):
        raise RecipeError("give the output folder once, as -o OUT (or after the config, as mergekit-moe takes it)")
    refuse_existing([output], force=args.force)
    config = load_moe_config(args.config)
    overrides = {k: v for k, v in (("gate_mode", args.gate_mode), ("dtype", args.dtype),
                                   ("experts_per_token", args.experts_per_token)) if v is not None}
    if overrides:
        config = MoeConfig.model_validate({**config.model_dump(), **overrides})
    bar = ProgressBar(enabled=not args.quiet)
    try:
        result = drive(iter_build_moe(config, output, seed=args.seed, device=args.device,
                                      batch_size=args.batch_size, shard_size=parse_size(args.shard_size),
                                      allow_all_same=args.allow_same, hash_sources=not args.no_hash), bar)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"path": str(result.path), "architecture": result.architecture,
                          "model_type": result.model_type, "experts": result.experts,
                          "experts_per_token": result.experts_per_token, "layers": result.layers,
                          "tensors": result.tensors, "gate_mode": result.gate_mode, "notes": list(result.notes)},
                         indent=2))
        return 0
    print(f"wrote {result.path}: a {result.architecture} of {result.experts} experts ({result.experts_per_token} per "
          f"token), {result.layers} layers, routers from {result.gate_mode}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
