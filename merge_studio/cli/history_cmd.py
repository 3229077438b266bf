"""``merge-studio history``: the merges recorded from the window and the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from merge_studio.errors import MergeStudioError

HELP = "list recorded merges (newest first), or show one's recipe"
EPILOG = """examples:
  merge-studio history               newest first: number, date, method, models, output, duration, status
  merge-studio history show 1        the recipe of the newest merge (YAML, ready for 'merge-studio merge')
  merge-studio history show 3 -o again.yaml

Records live in $MERGE_STUDIO_DATA_DIR, else $XDG_DATA_HOME/merge-studio, else ~/.local/share/merge-studio
(history.jsonl, one JSON object a line)."""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("history", help=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show N")
    parser.add_argument("number", nargs="?", type=int, help="with show: the record's number in the list (1 = newest)")
    parser.add_argument("-n", "--limit", type=int, default=20, help="list at most this many (default 20; 0 = all)")
    parser.add_argument("-o", "--output", help="with show: save the recipe to this file instead of printing it")
    parser.add_argument("-f", "--force", action="store_true", help="with show -o: replace the file if it exists")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    parser.set_defaults(func=run)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def _models(names: list[str], width: int = 44) -> str:
    text = ", ".join(names)
    return text if len(text) <= width else text[: width - 1] + "…"


def run(args: argparse.Namespace) -> int:
    from merge_studio.core.history import history_file, load_history

    records = load_history()
    if args.action == "show":
        if args.number is None or not 1 <= args.number <= len(records):
            raise MergeStudioError(
                f"no merge number {args.number} in the history ({len(records)} recorded)",
                hint="run 'merge-studio history' to see the numbers",
            )
        record = records[args.number - 1]
        if args.json:
            print(json.dumps(asdict(record), indent=2))
        elif args.output:
            from pathlib import Path

            from merge_studio.core.overwrite import refuse_existing
            from merge_studio.core.recipe import write_text_atomic

            refuse_existing([args.output], force=args.force)
            print(f"wrote {write_text_atomic(Path(args.output), record.recipe)}")
        else:
            print(record.recipe, end="")
        return 0
    shown = records if args.limit <= 0 else records[: args.limit]
    if args.json:
        print(json.dumps([asdict(r) for r in shown], indent=2))
        return 0
    if not records:
        print(f"no merges recorded yet ({history_file()})")
        return 0
    print(f"{'#':>3}  {'date':16}  {'method':18}  {'models':44}  {'output':30}  {'time':>9}  status")
    for i, r in enumerate(shown, 1):
        out = r.output.rsplit("/", 1)[-1] if r.output else "-"
        print(f"{i:>3}  {r.when:16}  {r.method[:18]:18}  {_models(r.model_names):44}  {out[:30]:30}  "
              f"{_duration(r.seconds):>9}  {r.status}")
    if len(shown) < len(records):
        print(f"… {len(records) - len(shown)} older (use -n 0 to list all)")
    return 0
