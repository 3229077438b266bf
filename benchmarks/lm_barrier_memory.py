"""Peak memory of a perplexity barrier between two language models: one model, not three.

Two random Llama-shaped folders of ~100M parameters (~400 MB each in float32) are
written to a temporary folder; a 3-point barrier on a short text runs in a fresh
process, once as shipped (checkpoints this big are read tensor by tensor at every
point and interpolated into the one module) and once with both endpoints kept in
memory (what small models do, the baseline). The peak RSS above the process's RSS
just before the job, divided by the model size, says how many models' worth of
memory each way holds (the module itself is one).

    python benchmarks/lm_barrier_memory.py [--hidden 1024 --layers 8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import resource, sys, time
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from merge_studio.core.evaluate import streaming
if {keep}:
    streaming.KEEP_IN_MEMORY_BYTES = 10**15
from merge_studio.core.evaluate.data import DataSpec
from merge_studio.core.evaluate.jobs import BarrierRequest
from merge_studio.core.progress import drive
import gc
gc.collect()
before = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
start = time.perf_counter()
request = BarrierRequest(model_a={a!r}, model_b={b!r}, steps=3, device="cpu",
                         data=DataSpec(source={text!r}, seq_len=64, max_tokens=256))
drive(request.job())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before / 1024, peak / 1024, time.perf_counter() - start)
"""


def _make(folder: Path, hidden: int, layers: int, seed: int) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.hf_models import make_hf_folder, make_hf_model

    model = make_hf_model("llama", seed=seed, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                          num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=16)
    make_hf_folder(folder, model=model)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = _make(root / "a", args.hidden, args.layers, 1)
        _make(root / "b", args.hidden, args.layers, 2)
        from tests.hf_models import training_text

        (root / "text.txt").write_text(training_text()[:4000])
        model_mb = params * 4 / 2**20
        rows = []
        for name, keep in (("streamed (as shipped)", False), ("both endpoints in memory (baseline)", True)):
            code = RUN.format(root=str(ROOT), keep=keep, a=str(root / "a"), b=str(root / "b"), text=str(root / "text.txt"))
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
            before, peak, seconds = map(float, out[-3:])
            rows.append((name, before, peak, seconds))
    load = open("/proc/loadavg").read().split()[0]
    print(f"3-point perplexity barrier between two {params / 1e6:.0f}M-parameter Llama folders "
          f"({model_mb:.0f} MB each in float32; load average {load})\n")
    print(f"{'endpoints':<38} {'peak RSS MB':>12} {'added by job MB':>16} {'÷ model size':>13} {'time s':>7}")
    for name, before, peak, seconds in rows:
        print(f"{name:<38} {peak:>12.0f} {peak - before:>16.0f} {(peak - before) / model_mb:>12.2f}× {seconds:>7.1f}")


if __name__ == "__main__":
    main()
