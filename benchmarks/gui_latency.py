"""How responsive the window stays while a large merge runs.

Writes two float32 checkpoints of ``--size-gb`` each (default 2 GB), opens the
real main window offscreen, starts a merge from it and, with a 5 ms QTimer on
the GUI thread, records every gap between ticks. A gap is how long the event
loop could not react (to a click, a repaint, Cancel). Also measures Cancel:
the time from ``cancel`` to the worker's ``sig_done``.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_latency.py --size-gb 2

Prints a table; the goal is a worst gap under 100 ms.
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
    """Records the time between ticks of a fast QTimer on the GUI thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.clear()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return [(b - a) * 1000 for a, b in zip(self.ticks, self.ticks[1:])]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of each input model")
    parser.add_argument("--dir", type=Path, default=None, help="where to keep the models (default: a temp folder)")
    parser.add_argument("--no-hash", action="store_true", help="skip hashing the sources (recipe hash_sources: false)")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication

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

        meter.start()
        run_until(app, lambda: len(meter.ticks) > 200, 30)
        idle = meter.stop()

        meter.start()
        window.open_paths(paths)
        run_until(app, lambda: not window.is_loading(), 120)
        load_gaps = meter.stop()

        window.session.output.hash_sources = not args.no_hash
        out = folder / "merged.safetensors"
        window.method_panel.set_output_path(out)
        results: list[object] = []
        window.sig_merge_finished.connect(results.append)
        meter.start()
        t0 = time.perf_counter()
        window.start_merge()
        run_until(app, lambda: bool(results) and window.merge_worker is None, 1800)
        merge_s = time.perf_counter() - t0
        merge_gaps = meter.stop()
        result = results[0]
        if result is None:
            print("the merge failed:\n" + window.log_panel.text())
            return 1
        written = out.stat().st_size

        # cancel in the middle: time from cancel() to sig_done
        out2 = folder / "cancelled.safetensors"
        window.method_panel.set_output_path(out2)
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
        cancel_ms = (done_at[0] - cancel_at) * 1000
        leftovers = [p.name for p in folder.iterdir() if "cancelled" in p.name]
        window.close()

    def row(name: str, gaps: list[float]) -> str:
        gaps = gaps or [0.0]
        p99 = statistics.quantiles(gaps, n=100)[98] if len(gaps) > 100 else max(gaps)
        return f"| {name:<22} | {len(gaps):>7} | {statistics.median(gaps):>8.1f} | {p99:>8.1f} | {max(gaps):>8.1f} | {max(gaps) / 100:>9.2f} |"

    print()
    print(f"GUI latency, {size:.2f} GiB per model, 2 models, weighted average, {TICK_MS} ms timer, "
          f"{torch.get_num_threads()} torch threads, hash_sources={not args.no_hash}")
    print(f"merge: {merge_s:.1f} s, wrote {written / 2**30:.2f} GiB ({written / 2**20 / merge_s:.0f} MiB/s)")
    print(f"cancel: stopped {cancel_ms:.0f} ms after Cancel; files left behind: {leftovers or 'none'}")
    print()
    print("| phase                  |   ticks | median ms |  p99 ms |  worst ms | worst/100ms |")
    print("|------------------------|---------|----------|----------|----------|-----------|")
    print(row("idle window", idle))
    print(row("loading headers", load_gaps))
    print(row("merging", merge_gaps))
    print(row("merge, then cancel", cancel_gaps))
    worst = max(merge_gaps + cancel_gaps)
    print(f"\nworst gap while merging: {worst:.1f} ms ({'OK' if worst < 100 else 'over'} the 100 ms goal)")
    return 0 if worst < 100 and cancel_ms < 1000 and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
