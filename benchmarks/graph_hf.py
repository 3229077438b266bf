"""How long the Graph tab takes to draw Llama-2-7B from its config.json alone.

The 6.7-billion-parameter model is built by transformers on the meta device (no
weight exists on this machine; tests/fixtures/llama-2-7b holds only the published
config), traced by torchview with its 32 decoder layers collapsed into one ``×32``
block, and laid out by Graphviz. Rows:

* ``cold``: a fresh Python process, as `merge-studio graph` runs it: import
  transformers, build, trace, lay out (the number the 10 s budget is about);
* ``collapsed`` / ``expanded``: in a warm process, the default picture and the one
  with every layer drawn (``--expand model.layers``), the baseline the collapse is
  measured against.

    python benchmarks/graph_hf.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "tests" / "fixtures" / "llama-2-7b"
BUDGET_S = 10.0
COLD = f"""
import sys, time
start = time.perf_counter()
sys.path.insert(0, {str(ROOT)!r})
from merge_studio.core.progress import drive
from merge_studio.graph.jobs import iter_arch_picture
picture = drive(iter_arch_picture("hf:{CONFIG}"))
assert picture.svg and len(picture.graph.repeats) == 1
print(time.perf_counter() - start, len(picture.graph.nodes))
"""


def _cold(repeat: int) -> tuple[float, int]:
    times, nodes = [], 0
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True).stdout
        seconds, count = out.split()
        times.append(float(seconds))
        nodes = int(count)
    return statistics.median(times), nodes


def _warm(expand: tuple[str, ...], repeat: int) -> tuple[float, float, int]:
    from merge_studio.core.arch import build_module, example_input
    from merge_studio.graph.build import module_graph
    from merge_studio.graph.render import render_svg

    spec = f"hf:{CONFIG}"
    module = build_module(spec, device="meta")
    data = example_input(spec, batch_size=1)
    traces, layouts, nodes = [], [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        graph = module_graph(module, data, depth=3, expand=expand)
        traces.append(time.perf_counter() - start)
        start = time.perf_counter()
        render_svg(graph.dot, timeout=300)
        layouts.append(time.perf_counter() - start)
        nodes = len(graph.nodes)
    return statistics.median(traces), statistics.median(layouts), nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load = open("/proc/loadavg").read().split()[0]
    cold, cold_nodes = _cold(args.repeat)
    collapsed = _warm((), args.repeat)
    expanded = _warm(("model.layers",), args.repeat)
    print(f"Llama-2-7B graph from config.json (load average {load} at start, "
          f"{open('/proc/loadavg').read().split()[0]} at end; median of {args.repeat})\n")
    print(f"{'picture':<28} {'nodes':>6} {'trace s':>8} {'layout s':>9} {'total s':>8} {'vs expanded':>12} {'vs 10 s':>8}")
    base_total = expanded[0] + expanded[1]
    print(f"{'cold process (collapsed)':<28} {cold_nodes:>6} {'':>8} {'':>9} {cold:>8.2f} {'':>12} {cold / BUDGET_S:>7.2f}×")
    for name, (trace, layout, nodes) in (("collapsed ×32 (default)", collapsed), ("expanded (baseline)", expanded)):
        total = trace + layout
        print(f"{name:<28} {nodes:>6} {trace:>8.2f} {layout:>9.2f} {total:>8.2f} {total / base_total:>11.2f}× "
              f"{total / BUDGET_S:>7.2f}×")


if __name__ == "__main__":
    main()
