"""Start the window: ``merge-studio [FILE...] [--recipe R] [--screenshot OUT.png] [--size WxH] [--demo]``.

For pictures of a tab after its job: ``--demo --screenshot out.png --tab Permutations --run align``
(``--run`` takes ``align``, ``merge``, ``barrier``, ``evaluate``, comma-separated, run in order).

Start-up problems that would otherwise end in a Qt abort (no display, missing
Qt libraries) print a hint and return a non-zero code instead. Uncaught
exceptions, from the GUI thread or any other, open the error dialog.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from merge_studio.gui.main_window import MainWindow

APP_NAME = "merge-studio"
ORG_NAME = "MergeStudio"
LOAD_TIMEOUT_MS = 120_000
_hooks_bridge = None  # the QObject that carries exceptions from any thread to the GUI thread


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merge-studio", description="Open the Merge Studio window.")
    parser.add_argument("files", nargs="*", help="checkpoints or model folders to load (a .yaml opens as a recipe)")
    parser.add_argument("--recipe", help="open this recipe (or mergekit config)")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render the window to a PNG once the files are loaded, then exit")
    parser.add_argument("--size", default=None, metavar="WxH", help="window size, e.g. 1280x800 (default for screenshots)")
    parser.add_argument("--demo", action="store_true", help="load the demo models (trained once, then cached)")
    parser.add_argument("--select", type=int, default=0, help="row to select in the model list (screenshots)")
    parser.add_argument("--tab", default=None, help="central tab to show: Inspector, Graph, Barrier, Permutations")
    parser.add_argument("--data", default=None, metavar="SOURCE",
                        help="evaluation data for the Barrier tab: digits, a tensors file, or text for language "
                        "models (.txt, .jsonl, a folder of .txt)")
    parser.add_argument("--run", default="", metavar="JOBS",
                        help="screenshots: jobs to run first, comma-separated: align, merge, barrier, evaluate, test (a merge in memory)")
    return parser


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"merge-studio: --size wants WIDTHxHEIGHT, e.g. 1280x800 (got {text!r})") from None
    return w, h


def _display_problem() -> str | None:
    """Why Qt could not open a window here, before Qt itself aborts on it."""
    try:
        from merge_studio.gui.startup import check_gui_environment
    except ImportError:  # pragma: no cover - startup.py ships with the package
        return None
    return check_gui_environment()


def install_exception_hooks(window_getter) -> None:
    """Route uncaught exceptions (GUI thread and other threads) to the error dialog."""
    from PySide6.QtCore import QObject, Signal

    from merge_studio.gui.workers import JobError

    class _Bridge(QObject):
        sig_error = Signal(object)

    bridge = _Bridge()
    previous_hook = sys.excepthook

    def show(error: JobError) -> None:
        window = window_getter()
        if window is not None:
            window.log_panel.log(f"Unexpected error: {error.message}", "error")
            window.show_error(error, "Unexpected error")

    bridge.sig_error.connect(show)

    def excepthook(exc_type, exc, tb) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_hook(exc_type, exc, tb)
            return
        traceback.print_exception(exc_type, exc, tb)
        bridge.sig_error.emit(JobError.from_exception(exc.with_traceback(tb)))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    global _hooks_bridge
    _hooks_bridge = bridge  # keep it alive as long as the hooks are installed


def _wait_for_load(window: MainWindow, timeout_ms: int) -> bool:
    """Spin an event loop until no model is loading (or the timeout)."""
    from PySide6.QtCore import QEventLoop, QTimer

    if not window.is_loading():
        return True
    loop = QEventLoop()
    window.sig_models_loaded.connect(loop.quit)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(timeout_ms)
    loop.exec()
    window.sig_models_loaded.disconnect(loop.quit)
    return not window.is_loading()


def _wait_for_job(worker, timeout_ms: int) -> None:
    """Spin an event loop until a job is done (the demo, before a screenshot)."""
    from PySide6.QtCore import QEventLoop, QTimer

    if worker.finished:
        return
    loop = QEventLoop()
    worker.sig_done.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    loop.exec()
    _settle(100)  # let the result's slot open the models


def _settle(ms: int = 300) -> None:
    """Let queued layout and paint events run before grabbing."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _wait_idle(window: MainWindow, timeout_ms: int) -> None:
    """Spin the event loop until the window's jobs (merge, alignment, layout, overlays) are done."""
    import time

    from PySide6.QtCore import QCoreApplication, QEventLoop

    deadline = time.monotonic() + timeout_ms / 1000
    while (window.runner.running() or window.is_loading()) and time.monotonic() < deadline:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    _settle(100)


RUNNABLE = ("align", "merge", "barrier", "evaluate", "test")


def run_jobs(window: MainWindow, jobs: Sequence[str], timeout_ms: int = LOAD_TIMEOUT_MS) -> list[str]:
    """Run what a screenshot should show (an alignment, a merge, a barrier sweep, an evaluation, a test merge in
    memory); returns problems."""
    problems: list[str] = []
    for job in jobs:
        started = None
        if job not in RUNNABLE:
            problems.append(f"unknown job {job!r} (choose from {', '.join(RUNNABLE)})")
            continue
        if job == "align" and "Permutations" in window.extra_views:
            strip = window.extra_views["Permutations"].strip
            strip.refresh_models()
            started = strip.start()
        elif job == "merge":
            started = window.start_merge()
        elif job in ("barrier", "evaluate") and "Barrier" in window.extra_views:
            panel = window.extra_views["Barrier"]
            panel._refresh_models()  # noqa: SLF001 - pull the window's models now
            button = panel.run_button if job == "barrier" else panel.evaluate_button
            if button.isEnabled():
                button.click()
                started = panel.worker
        elif job == "test" and "Barrier" in window.extra_views:
            window.actions_by_name["test_merge"].trigger()
            started = window.extra_views["Barrier"].worker
        if started is None:
            problems.append(f"could not start {job}")
        _wait_idle(window, timeout_ms)
    return problems


def take_screenshot(window: MainWindow, out: str | Path) -> Path:
    """Render the main window to a PNG (works offscreen)."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    _settle()
    if "matplotlib" in sys.modules:  # plots draw on a helper thread: wait for their last frame
        from merge_studio.gui.plot_canvas import wait_for_plots

        wait_for_plots(30)
        _settle(50)
    pixmap = window.grab()
    if not pixmap.save(str(out), "PNG"):
        raise OSError(f"could not write {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window; returns the exit code."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    size = parse_size(args.size) or ((1280, 800) if args.screenshot else None)
    if args.screenshot and not os.environ.get("QT_QPA_PLATFORM") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no screen
    problem = _display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication  # importable: checked above

    from merge_studio.gui.main_window import MainWindow
    from merge_studio.gui.qt_compat import protect_none
    from merge_studio.gui.resources import apply_style, icon

    protect_none()

    app = QApplication.instance()
    owns_app = app is None
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else APP_NAME])
        app.setOrganizationName(ORG_NAME)
        app.setApplicationName(APP_NAME)
        app.setApplicationDisplayName("Merge Studio")
        app_icon = icon("app")
        if not app_icon.isNull():
            app.setWindowIcon(app_icon)
    apply_style(app)

    window = MainWindow(remember_layout=not args.screenshot, defer_startup=True)
    install_exception_hooks(lambda: window)
    if size is not None:
        window.resize(*size)
    files = [Path(f) for f in args.files]
    recipes = [f for f in files if f.suffix.lower() in (".yaml", ".yml")]
    recipe = args.recipe or (str(recipes[0]) if recipes else None)
    if recipe:
        window.open_recipe(recipe)
    models = [f for f in files if f not in recipes]
    if models:
        window.open_paths(models)
    if args.demo:
        demo = window.load_demo()
        if demo is not None and args.screenshot:
            _wait_for_job(demo, LOAD_TIMEOUT_MS)
    window.show()
    if args.data and not args.screenshot and "Barrier" in window.extra_views:
        window.extra_views["Barrier"].set_data_source(args.data)
    if args.screenshot:
        loaded = _wait_for_load(window, LOAD_TIMEOUT_MS)
        if window.session.models:
            window.model_list.select_id(window.session.models[min(args.select, len(window.session.models) - 1)].id)
        if args.data and "Barrier" in window.extra_views:
            window.extra_views["Barrier"].set_data_source(args.data)
        jobs = [j.strip().lower() for j in args.run.split(",") if j.strip()]
        for problem in run_jobs(window, jobs):
            print(f"merge-studio: {problem}", file=sys.stderr)
        if args.tab and not window.show_tab(args.tab):
            print(f"merge-studio: no tab called {args.tab!r}", file=sys.stderr)
        _wait_idle(window, LOAD_TIMEOUT_MS)  # a tab that draws on show (the graph) finishes first
        if size is not None:
            window.resize(*size)
        _settle(100)
        window.fit_panels()
        _wait_idle(window, LOAD_TIMEOUT_MS)  # the deferred views, built after the first paint, may have asked for work
        try:
            out = take_screenshot(window, args.screenshot)
        except OSError as exc:
            print(f"merge-studio: {exc}", file=sys.stderr)
            window.close()
            return 1
        print(f"wrote {out}" + ("" if loaded else " (some files were still loading)"))
        window.close()
        if owns_app:
            app.processEvents()
        return 0
    return app.exec() if owns_app else 0
