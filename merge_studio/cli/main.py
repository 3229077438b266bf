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

# Modules that add a subcommand, in the order ``--help`` lists them.
SUBCOMMAND_MODULES = (
    "merge_studio.cli.merge_cmd",
    "merge_studio.cli.inspect_cmd",
    "merge_studio.cli.methods_cmd",
    "merge_studio.cli.export_cmd",
    "merge_studio.cli.graph_cmd",
    "merge_studio.cli.evaluate_cmd",
    "merge_studio.cli.barrier_cmd",
    "merge_studio.cli.align_cmd",
)


def build_parser() -> argparse.ArgumentParser:
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
    for name in SUBCOMMAND_MODULES:
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
    parser = build_parser()
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
