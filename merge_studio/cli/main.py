"""``merge-studio``: with no subcommand it opens the window; subcommands run headless.

Each subcommand lives in its own module exposing ``register(subparsers)``; its
``run(args)`` returns the exit code. Qt is imported only when the window opens.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import merge_studio
from merge_studio.errors import Cancelled, MergeStudioError

# Each subcommand: the module that registers it, and the line ``--help`` shows for it.
# Only the module of the command being run is imported, so ``--help`` and light
# commands start at once (a test keeps these lines equal to the modules' own).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "merge": ("merge_studio.cli.merge_cmd", "merge checkpoints from a recipe or from flags"),
    "inspect": ("merge_studio.cli.inspect_cmd", "summarise checkpoints (and check that several are compatible)"),
    "methods": ("merge_studio.cli.methods_cmd", "list merge methods or describe one"),
    "export-mergekit": ("merge_studio.cli.export_cmd", "write the mergekit config equivalent to a recipe"),
    "graph": ("merge_studio.cli.graph_cmd", "draw a model graph (or a checkpoint's module tree) to .svg or .png"),
    "evaluate": ("merge_studio.cli.evaluate_cmd",
                 "evaluate checkpoints (e.g. the inputs and the merged model) on data"),
    "barrier": ("merge_studio.cli.barrier_cmd", "loss/accuracy barrier along the interpolation between two models"),
    "align": ("merge_studio.cli.align_cmd", "permute model B's hidden units to match model A (weight or activation matching)"),
    "lora": ("merge_studio.cli.lora_cmd", "LoRA adapters: list, apply onto a base, merge, extract"),
    "moe": ("merge_studio.cli.moe_cmd",
            "assemble a mixture-of-experts model (Mixtral, Qwen2-MoE) from dense experts (mergekit-moe's YAML)"),
    "search": ("merge_studio.cli.search_cmd", "search a method's coefficients on data (Optuna; local workers or a Ray cluster)"),
    "history": ("merge_studio.cli.history_cmd", "list recorded merges (newest first), or show one's recipe"),
}
SUBCOMMAND_MODULES = tuple(module for module, _ in SUBCOMMANDS.values())


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with ``only``, just that subcommand is fully registered
    (the others are listed by name and help line without importing their modules)."""
    parser = argparse.ArgumentParser(
        prog="merge-studio",
        description="Merge neural-network checkpoints and see whether the merge worked. "
        "Without a command, opens the window (optionally with FILEs loaded).",
        epilog="window: merge-studio [FILE ...] [--demo] [--screenshot OUT.png] "
        "(see 'merge-studio --gui-help').\n"
        "Run 'merge-studio COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"merge-studio {merge_studio.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command, (name, help_line) in SUBCOMMANDS.items():
        if only is not None and command != only:
            sub.add_parser(command, help=help_line)
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def _is_subcommand(parser: argparse.ArgumentParser, argv: Sequence[str]) -> bool:
    """A subcommand when the first word names one (or for --help/--version); else the window."""
    if not argv or argv[0] == "--gui-help":
        return False
    choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    return argv[0] in choices or argv[0] in ("-h", "--help", "--version")


def _terminated(signum: int, frame: object) -> None:
    raise Cancelled("terminated")


def _cancel_on_terminate() -> None:
    """``kill`` (SIGTERM) cancels like Ctrl+C does, so a job removes its temporary files."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``merge-studio`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered before any subcommand module is imported
        print(f"merge-studio {merge_studio.__version__}")
        return 0
    parser = build_parser(only=argv[0] if argv else "")
    if not _is_subcommand(parser, argv):
        from merge_studio.gui.app import main as gui_main  # Qt only here

        return gui_main(["--help" if a == "--gui-help" else a for a in argv])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    _cancel_on_terminate()
    try:
        return int(args.func(args) or 0)
    except MergeStudioError as exc:
        print(f"merge-studio: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:
        # The last resort for a file-system failure no command turned into words: one
        # line naming the path, never a traceback (symlink loops surface as RuntimeError).
        from merge_studio.core.fs_errors import user_facing

        error = user_facing(exc)
        if error is None:
            raise
        print(f"merge-studio: error: {error}", file=sys.stderr)
        return 1
    except (Cancelled, KeyboardInterrupt):
        print("merge-studio: cancelled; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
