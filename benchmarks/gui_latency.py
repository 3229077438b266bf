"""How responsive the window stays while a job runs.

Opens the real main window offscreen and, with a 5 ms QTimer on the GUI thread,
records every gap between ticks while a job runs. A gap is how long the event
loop could not react (to a click, a repaint, Cancel).

``--job merge`` (the default) writes two float32 checkpoints of ``--size-gb``
each (default 2 GB), merges them from the window and also measures Cancel: the
time from ``cancel`` to the worker's ``sig_done``; ``--cold`` first drops the inputs
from the page cache, so the merge reads them from the disk. ``--job barrier``, ``align``,
``evaluate`` and ``graph`` load the demo models (trained once and cached, as
``merge-studio --demo`` does) and run that job from its tab, from the click
until the job is done and its plots are drawn.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_latency.py --job barrier

Prints a table and, as its last line, ``worst gap ms: N``; the goal is under 50 ms
for every job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

TICK_MS = 5
TENSOR_ROWS = 4096  # 4096 x 4096 float32 = 64 MiB a tensor, like a large transformer's MLP


def evict_from_page_cache(paths: list[Path]) -> None:
    """Ask the kernel to drop these files' cached pages (``--cold``), so reading them goes to the disk."""
    if not hasattr(os, "posix_fadvise"):
        sys.exit("--cold needs posix_fadvise (Linux)")
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def write_models(folder: Path, size_gb: float) -> list[Path]:
    per_tensor = TENSOR_ROWS * TENSOR_ROWS * 4
    count = max(1, round(size_gb * 2**30 / per_tensor))
    paths = []
    for seed in range(2):
        path = folder / f"big_{seed}.safetensors"
        if not path.exists():
            g = torch.Generator().manual_seed(seed)
            sd = {f"layers.{i}.mlp.weight": torch.randn(TENSOR_ROWS, TENSOR_ROWS, generator=g) for i in range(count)}
            save_file(sd, str(path))
            del sd
        paths.append(path)
    return paths


class GapMeter:
    """Records the time between ticks of a fast QTimer on the GUI thread.

    On Linux each tick also reads the GUI thread's scheduler counters, so the worst gap
    can be split into time on a CPU, time runnable but waiting for one, and time asleep.
    """

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.sched: list[tuple[int, int]] = []
        self._schedstat = _open_schedstat()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        if self._schedstat is not None:
            running, waiting = os.pread(self._schedstat, 100, 0).split()[:2]
            self.sched.append((int(running), int(waiting)))

    def start(self) -> None:
        self.ticks.clear()
        self.sched.clear()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return [(b - a) * 1000 for a, b in zip(self.ticks, self.ticks[1:])]

    def worst_split(self) -> str:
        """Where the GUI thread was during the worst gap of the last measurement."""
        gaps = [(b - a) * 1000 for a, b in zip(self.ticks, self.ticks[1:])]
        if not gaps or len(self.sched) != len(self.ticks):
            return ""
        i = max(range(len(gaps)), key=gaps.__getitem__)
        running = (self.sched[i + 1][0] - self.sched[i][0]) / 1e6
        waiting = (self.sched[i + 1][1] - self.sched[i][1]) / 1e6
        asleep = max(0.0, gaps[i] - running - waiting)
        return (f"worst gap {gaps[i]:.0f} ms, {self.ticks[i] - self.ticks[0]:.2f} s in: GUI thread on a CPU {running:.0f} ms, "
                f"runnable but waiting for a CPU {waiting:.0f} ms, asleep {asleep:.0f} ms")


def _open_schedstat() -> int | None:
    """The GUI thread's ``schedstat`` (ns on a CPU, ns waiting on a run queue), where there is one."""
    try:
        return os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return None


class GapWatch:
    """Where the time goes during long gaps: a helper thread samples every thread's stack while the
    GUI thread has not ticked for ``threshold_ms`` (``--why``)."""

    def __init__(self, meter: GapMeter, threshold_ms: float = 40.0) -> None:
        import threading

        self.meter = meter
        self.threshold = threshold_ms / 1000
        self.samples: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import threading
        import traceback

        main_id = threading.main_thread().ident
        while not self._stop.wait(0.01):
            ticks = self.meter.ticks
            if not ticks or time.perf_counter() - ticks[-1] < self.threshold:
                continue
            for ident, frame in sys._current_frames().items():  # noqa: SLF001 - a profiler's tool
                if ident == threading.get_ident():
                    continue
                where = traceback.extract_stack(frame)[-6:]
                name = "GUI" if ident == main_id else "worker"
                key = name + ": " + " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(where))
                self.samples[key] = self.samples.get(key, 0) + 1

    def report(self, top: int = 12) -> str:
        lines = [f"{n:>5} × {k}" for k, n in sorted(self.samples.items(), key=lambda kv: -kv[1])[:top]]
        return "stacks sampled during gaps (10 ms each):\n" + "\n".join(lines)


def run_until(app, predicate, timeout_s: float) -> None:
    """Run the real event loop (as ``app.exec`` would) until ``predicate()`` holds."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    end = time.monotonic() + timeout_s
    timed_out: list[bool] = []

    def poll() -> None:
        if predicate():
            loop.quit()
        elif time.monotonic() > end:
            timed_out.append(True)
            loop.quit()

    poller = QTimer()
    poller.setInterval(20)
    poller.timeout.connect(poll)
    poller.start()
    loop.exec()
    poller.stop()
    if timed_out:
        raise TimeoutError("benchmark step took too long")


GOAL_MS = 50
DEMO_JOBS = ("barrier", "align", "evaluate", "graph")


def gap_row(name: str, gaps: list[float]) -> str:
    gaps = gaps or [0.0]
    p99 = statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else max(gaps)
    return f"| {name:<22} | {len(gaps):>7} | {statistics.median(gaps):>9.1f} | {p99:>8.1f} | {max(gaps):>8.1f} |"


def demo_window(app):  # noqa: ANN001, ANN201 - the QApplication; returns the MainWindow
    """The window with two demo MLPs loaded (and the demo ResNet-20 for the graph), idle."""
    from merge_studio.core.demo import ensure_demo_models
    from merge_studio.gui.main_window import MainWindow

    demo = ensure_demo_models()
    window = MainWindow(remember_layout=False)
    window.resize(1280, 800)
    window.show()
    window.extra_views  # noqa: B018 - build the tabs before measuring
    paths = demo.paths("zoo:mlp")[:2]
    window.open_paths(paths)
    run_until(app, lambda: not window.is_loading(), 120)
    for model in window.session.models:
        window.session.set_arch(model.id, "zoo:mlp")
    return window, demo


def run_demo_job(app, window, demo, job: str, why: bool = False) -> tuple[list[float], float]:  # noqa: ANN001
    """Run one job from its tab while measuring gaps; returns (gaps, seconds)."""
    from merge_studio.gui.plot_canvas import plots_idle

    views = window.extra_views
    meter = GapMeter()
    watch = GapWatch(meter) if why else None
    if watch is not None:
        watch.start()
    if job in ("barrier", "evaluate"):
        panel = views["Barrier"]
        window.show_tab("Barrier")
        run_until(app, lambda: panel.model_b.count() >= 2, 10)
        meter.start()
        t0 = time.perf_counter()
        (panel.run_button if job == "barrier" else panel.evaluate_button).click()
        run_until(app, lambda: panel.worker is None, 600)
    elif job == "align":
        strip = views["Permutations"].strip
        window.show_tab("Permutations")
        strip.refresh_models()
        meter.start()
        t0 = time.perf_counter()
        strip.start()
        run_until(app, lambda: not strip.running, 600)
    else:  # graph: lay out the ResNet-20, the demo's largest graph
        graph = views["Graph"]
        window.show_tab("Graph")
        done: list[bool] = []
        graph.sig_graph_ready.connect(lambda: done.append(True))
        graph.sig_failed.connect(lambda _m: done.append(False))
        resnet = demo.paths("zoo:resnet20?width=1")[:1] or demo.paths()[:1]
        meter.start()
        t0 = time.perf_counter()
        window.open_paths(resnet)
        run_until(app, lambda: not window.is_loading(), 60)
        model = window.session.find_path(resnet[0])
        window.model_list.select_id(model.id)
        run_until(app, lambda: bool(done), 600)
    # the job is done when its result is on screen: the last plots drawn, the events handled
    # (watched without blocking: the event loop runs as it would for a user, throttle included)
    run_until(app, lambda: plots_idle() and not window.runner.running(), 60)
    seconds = time.perf_counter() - t0
    gaps = meter.stop()
    if watch is not None:
        watch.stop()
        print(watch.report())
    return gaps, seconds


def main_demo_job(job: str, why: bool = False) -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName("MergeStudioBenchmarks")
    window, demo = demo_window(app)
    meter = GapMeter()
    meter.start()
    run_until(app, lambda: len(meter.ticks) > 100, 30)
    idle = meter.stop()
    gaps, seconds = run_demo_job(app, window, demo, job, why)
    window.close()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"GUI latency, job {job} on the demo models, {TICK_MS} ms timer, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} CPUs, load average {' '.join(load)}")
    print(f"{job}: {seconds:.1f} s from the click to the result on screen")
    print()
    print("| phase                  |   ticks | median ms |  p99 ms |  worst ms |")
    print("|------------------------|---------|-----------|---------|-----------|")
    print(gap_row("idle window", idle))
    print(gap_row(job, gaps))
    worst = max(gaps or [0.0])
    print(f"\nworst gap ms: {worst:.0f}")
    return 0 if worst < GOAL_MS else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=("merge", *DEMO_JOBS), default="merge", help="the job to run while measuring")
    parser.add_argument("--size-gb", type=float, default=2.0, help="merge: size of each input model")
    parser.add_argument("--dir", type=Path, default=None, help="merge: where to keep the models (default: a temp folder)")
    parser.add_argument("--no-hash", action="store_true", help="merge: skip hashing the sources (recipe hash_sources: false)")
    parser.add_argument("--why", action="store_true", help="sample the threads' stacks during long gaps")
    parser.add_argument("--cold", action="store_true",
                        help="merge: drop the input models from the page cache first, so the merge reads the disk")
    args = parser.parse_args(argv)
    if args.job != "merge":
        return main_demo_job(args.job, args.why)

    from PySide6.QtWidgets import QApplication

    from merge_studio.core import merge_process
    from merge_studio.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName("MergeStudioBenchmarks")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = write_models(folder, args.size_gb)
        size = sum(p.stat().st_size for p in paths) / 2 / 2**30  # before the folder goes
        print(f"models ready in {time.perf_counter() - t0:.1f} s: {', '.join(p.name for p in paths)}")
        window = MainWindow(remember_layout=False)
        window.resize(1280, 800)
        window.show()
        meter = GapMeter()
        watch = GapWatch(meter) if args.why else None
        if watch is not None:
            watch.start()

        meter.start()
        run_until(app, lambda: len(meter.ticks) > 200, 30)
        idle = meter.stop()

        meter.start()
        window.open_paths(paths)
        run_until(app, lambda: not window.is_loading(), 120)
        load_gaps = meter.stop()

        window.session.output.hash_sources = not args.no_hash
        if args.cold:
            evict_from_page_cache(paths)
        out = folder / "merged.safetensors"
        window.method_panel.set_output_path(out)
        results: list[object] = []
        window.sig_merge_finished.connect(results.append)
        meter.start()
        t0 = time.perf_counter()
        first_chunk: list[float] = []
        window.start_merge().sig_progress.connect(
            lambda p: first_chunk or p.stage != "merge" or first_chunk.append(time.perf_counter() - t0))
        run_until(app, lambda: bool(results) and window.merge_worker is None, 1800)
        merge_s = time.perf_counter() - t0
        merge_gaps = meter.stop()
        merge_split = meter.worst_split()
        result = results[0]
        if result is None:
            print("the merge failed:\n" + window.log_panel.text())
            return 1
        written = out.stat().st_size

        # cancel in the middle: time from cancel() to sig_done
        out2 = folder / "cancelled.safetensors"
        window.method_panel.set_output_path(out2)
        if args.cold:
            evict_from_page_cache(paths)
        results.clear()
        meter.start()
        worker = window.start_merge()
        done_at: list[float] = []
        worker.sig_done.connect(lambda: done_at.append(time.perf_counter()))
        run_until(app, lambda: worker.started_at is not None and time.monotonic() - worker.started_at > 1.5, 60)
        cancel_at = time.perf_counter()
        window.cancel_jobs()
        run_until(app, lambda: bool(done_at) and window.merge_worker is None, 60)
        cancel_gaps = meter.stop()
        cancel_split = meter.worst_split()
        cancel_ms = (done_at[0] - cancel_at) * 1000
        leftovers = [p.name for p in folder.iterdir() if "cancelled" in p.name]
        window.close()

    print()
    print(f"GUI latency, {size:.2f} GiB per model, 2 models, weighted average, {TICK_MS} ms timer, "
          f"{torch.get_num_threads()} torch threads, hash_sources={not args.no_hash}, "
          f"inputs read from {'the disk (--cold)' if args.cold else 'the page cache'}, "
          f"merged in {'a process of its own' if merge_process.enabled() else 'the window process'}")
    print(f"merge: {merge_s:.1f} s, wrote {written / 2**30:.2f} GiB ({written / 2**20 / merge_s:.0f} MiB/s); "
          f"first chunk merged after {first_chunk[0] if first_chunk else float('nan'):.2f} s")
    print(f"cancel: stopped {cancel_ms:.0f} ms after Cancel; files left behind: {leftovers or 'none'}")
    print()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    print(f"load average {' '.join(load)}, {os.cpu_count()} CPUs")
    print()
    print("| phase                  |   ticks | median ms |  p99 ms |  worst ms |")
    print("|------------------------|---------|-----------|---------|-----------|")
    print(gap_row("idle window", idle))
    print(gap_row("loading headers", load_gaps))
    print(gap_row("merging", merge_gaps))
    print(gap_row("merge, then cancel", cancel_gaps))
    for phase, split in (("merging", merge_split), ("merge, then cancel", cancel_split)):
        if split:
            print(f"{phase}: {split}")
    if watch is not None:
        watch.stop()
        print(watch.report())
    worst = max(merge_gaps + cancel_gaps)
    print(f"\nworst gap ms: {worst:.0f}")
    return 0 if worst < GOAL_MS and cancel_ms < 1000 and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
