"""``merge-studio export-mergekit RECIPE``: the mergekit config equivalent to a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from merge_studio.core.mergekit_config import mergekit_yaml
from merge_studio.core.overwrite import refuse_existing
from merge_studio.core.recipe import load_recipe, write_text_atomic


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export-mergekit", help="write the mergekit config equivalent to a recipe")
    parser.add_argument("recipe", help="recipe YAML")
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.add_argument("-f", "--force", action="store_true", help="replace OUTPUT if it already exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.output:
        refuse_existing([args.output], force=args.force)
    text = mergekit_yaml(load_recipe(args.recipe))
    if args.output:
        write_text_atomic(Path(args.output), text)
    else:
        print(text, end="")
    return 0
