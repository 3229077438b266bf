"""``merge-studio evaluate MODEL...``: loss and accuracy of each model on the same data."""

from __future__ import annotations

import argparse
import json
import sys

from merge_studio.cli.barrier_cmd import add_data_arguments, data_spec, parse_splits, save_figure, torch_threads
from merge_studio.core.overwrite import refuse_existing
from merge_studio.errors import MergeStudioError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="evaluate checkpoints (e.g. the inputs and the merged model) on data",
                            description="Loss and accuracy of each checkpoint on the same train/test data, "
                            "so you see at once whether a merge beats its parents.")
    parser.add_argument("models", nargs="*", metavar="MODEL", help="checkpoints of the same architecture")
    parser.add_argument("--recipe", metavar="RECIPE",
                        help="also merge this recipe (or mergekit config) in memory and evaluate the result last, "
                        "writing nothing; without MODEL its input models are evaluated beside it")
    add_data_arguments(parser)
    parser.add_argument("--reset-bn", choices=("auto", "on", "off"), default="auto",
                        help="re-estimate BatchNorm statistics on training data first (auto: for models with BatchNorm)")
    parser.add_argument("--highlight", metavar="NAME", help="model to stand out in the plot (default: the last)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--plot", metavar="PATH", help="save a bar chart (.png, .svg or .pdf)")
    parser.add_argument("-f", "--force", action="store_true", help="replace output files that already exist")
    parser.set_defaults(func=run)


def _table(scores) -> str:
    if scores.task == "language_modeling":
        return _perplexity_table(scores)
    splits = list(scores.results)
    head = f"{'model':<28}" + "".join(f" {s + ' loss':>11} {s + ' acc':>10}" for s in splits)
    lines = [head]
    for i, name in enumerate(scores.names):
        cells = []
        for s in splits:
            r = scores.results[s][i]
            acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
            cells.append(f" {r.loss:>11.4f} {acc:>10}")
        lines.append(f"{name:<28}" + "".join(cells))
    return "\n".join(lines)


def _perplexity_table(scores) -> str:
    """Language models: mean token loss, perplexity and next-token accuracy on the text."""
    lines = [f"{'model':<28} {'loss':>8} {'perplexity':>11} {'next-token acc':>15} {'tokens':>9}"]
    split = "test" if "test" in scores.results else next(iter(scores.results))
    for i, name in enumerate(scores.names):
        r = scores.results[split][i]
        acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
        lines.append(f"{name:<28} {r.loss:>8.4f} {r.perplexity or float('nan'):>11.3f} {acc:>15} {r.tokens or 0:>9,}")
    return "\n".join(lines)


def _record_in_history(paths: list[str], scores, data: str | None) -> None:  # noqa: ANN001 - ModelScores
    """Add each merged model's scores to the merge that wrote it (see ``merge-studio history``)."""
    from merge_studio.core.history import add_evaluation, evaluation_results

    for i, path in enumerate(paths):
        add_evaluation(path, evaluation_results(scores, i, data))


def run(args: argparse.Namespace) -> int:
    from merge_studio.cli.progress_bar import ProgressBar
    from merge_studio.core.evaluate.jobs import EvaluateRequest
    from merge_studio.core.progress import drive

    bar = ProgressBar(enabled=not args.quiet)
    try:
        refuse_existing([args.plot] if args.plot else [], force=args.force)
        recipe = None
        models = tuple(args.models)
        if args.recipe:
            from merge_studio.core.recipe import load_recipe

            recipe = load_recipe(args.recipe)
            models = models or tuple(str(m.path) for m in recipe.models)
        if not models:
            raise MergeStudioError("nothing to evaluate", hint="give checkpoints, or --recipe R.yaml")
        request = EvaluateRequest(models=models, arch=args.arch or (recipe.arch if recipe else None), data=data_spec(args),
                                  splits=parse_splits(args.splits), reset_bn=args.reset_bn, device=args.device,
                                  merged_recipe=recipe)
        with torch_threads(args):
            scores = drive(request.job(), bar)
        bar.close()
        if args.plot:
            from matplotlib.figure import Figure

            from merge_studio.plots.evaluation import draw_model_scores

            fig = Figure(figsize=(9, 3.6))
            highlight = args.highlight or (scores.names[-1] if len(scores.names) > 1 else None)
            draw_model_scores(fig, scores.names, scores.results, highlight=highlight, title=f"on {args.data}")
            save_figure(fig, args.plot)
        print(json.dumps(scores.to_json(), indent=2) if args.json else _table(scores))
        _record_in_history(list(models), scores, args.data)
        return 0
    except MergeStudioError as exc:
        bar.close()
        print(f"merge-studio evaluate: error: {exc}", file=sys.stderr)
        return 1
