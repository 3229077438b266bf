"""Merge throughput and memory against two baselines measured in the same run.

Generates synthetic Llama-shaped sharded checkpoints (default ~1.1B parameters in
bf16, like TinyLlama), then for 2 and 3 models and for simple_average and ties
measures, each in a fresh subprocess:

* plain read  — reading every input byte once (the floor for any merge's input);
* read + write — the same, plus writing one model's worth of bytes on a second
  thread as the engine writes (direct I/O where possible, fsync): a merge that
  computes nothing, the floor for any merge that writes its output;
* naive torch — ``torch.load``-style: all models in memory, averaged with torch;
* merge-studio — the streaming engine.

Prints wall time, CPU time (user + system, all threads), input GB/s, peak RSS and its
anonymous part (without mapped library code), and ratios to the plain read and to the
read + write floor. CPU seconds close to twice the wall time mean both cores were busy:
the job was compute-bound. Every run starts with its inputs read once (in page cache),
and the floor is measured before and after a group's merges; the faster is used.

    python benchmarks/merge_throughput.py                 # full size (needs ~16 GB disk)
    python benchmarks/merge_throughput.py --params 0.1    # quick
    python benchmarks/merge_throughput.py --repeat 3      # each row the fastest of three runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

LAYOUT = dict(hidden=2048, intermediate=5632, kv=256, vocab=32000)


def llama_shapes(params_b: float) -> dict[str, tuple[int, ...]]:
    h, i, kv, v = LAYOUT["hidden"], LAYOUT["intermediate"], LAYOUT["kv"], LAYOUT["vocab"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    fixed = 2 * v * h + h
    layers = max(1, round((params_b * 1e9 - fixed) / per_layer))
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i), p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    shapes |= {"model.norm.weight": (h,), "lm_head.weight": (v, h)}
    return shapes


def generate(
    folder: Path, shapes: dict[str, tuple[int, ...]], seed: int, shard_bytes: int = 1 << 30, dtype: torch.dtype = torch.bfloat16
) -> None:
    """A sharded HF-layout folder of random tensors (bf16 unless asked)."""
    from merge_studio.core.writer import write_state_dict

    g = torch.Generator().manual_seed(seed)
    tensors = {n: (torch.randn(s, generator=g) * 0.02).to(dtype) for n, s in shapes.items()}
    write_state_dict(folder, tensors, {"format": "pt"}, shard_bytes=shard_bytes)


# --- measured jobs (run in a child process) ----------------------------------------------------
def job_plain_read(folders: list[str]) -> None:
    buf = bytearray(16 << 20)
    for f in folders:
        for p in sorted(Path(f).glob("*.safetensors")):
            with p.open("rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def job_read_write(folders: list[str], out: str) -> None:
    """Read every input byte and write one model's worth of bytes: a merge that computes nothing.

    Written the way the engine writes (direct I/O where the file system allows it, from a
    second thread while the reading goes on, fsync at the end), so this is the floor for
    any merge that writes its output here.
    """
    import queue
    import threading

    from merge_studio.core.direct_io import AppendOnlyFile

    out_bytes = sum(p.stat().st_size for p in Path(folders[0]).glob("*.safetensors"))
    Path(out).write_bytes(b"")
    sink = AppendOnlyFile(Path(out), 0)
    pending: queue.Queue[memoryview | None] = queue.Queue(maxsize=8)
    ring = [bytearray(16 << 20) for _ in range(10)]  # more than can be queued or in the writer's hands

    def drain() -> None:
        while (block := pending.get()) is not None:
            sink.write(block)

    writer = threading.Thread(target=drain)
    writer.start()
    turn = 0
    for f in folders:
        for p in sorted(Path(f).glob("*.safetensors")):
            with p.open("rb", buffering=0) as fh:
                while n := fh.readinto(ring[turn % len(ring)]):
                    if out_bytes > 0:
                        pending.put(memoryview(ring[turn % len(ring)])[: min(n, out_bytes)])
                        out_bytes -= min(n, out_bytes)
                        turn += 1
    pending.put(None)
    writer.join()
    sink.close()
    with open(out, "rb+") as fh:
        os.fsync(fh.fileno())
    os.remove(out)


def job_naive(folders: list[str], out: str) -> None:
    from safetensors.torch import load_file, save_file

    states = []
    for f in folders:
        sd: dict[str, torch.Tensor] = {}
        for p in sorted(Path(f).glob("*.safetensors")):
            sd.update(load_file(p))
        states.append(sd)
    merged = {k: (sum(s[k].float() for s in states) / len(states)).to(torch.bfloat16) for k in states[0]}
    save_file(merged, out)


TASK_METHODS = {"ties": {"weight": 1.0, "density": 0.5}, "dare_ties": {"weight": 1.0, "density": 0.5},
                "task_arithmetic": {"weight": 0.8}, "dare_linear": {"weight": 1.0, "density": 0.5}}


def job_engine(folders: list[str], out: str, method: str, threads: int | None = None) -> None:
    from merge_studio.core.engine import run_merge
    from merge_studio.core.recipe import Recipe

    if method in TASK_METHODS:
        recipe = Recipe(method=method, base=folders[0], models=[{"path": f, "params": TASK_METHODS[method]} for f in folders[1:]],
                        output=out, hash_sources=False)
    else:
        recipe = Recipe(method=method, models=[{"path": f} for f in folders], output=out, hash_sources=False)
    run_merge(recipe, threads=threads)


def child(argv: list[str]) -> None:
    kind, payload = argv[0], json.loads(argv[1])
    anon = AnonymousPeak()
    start = time.perf_counter()
    if kind == "plain":
        job_plain_read(payload["folders"])
    elif kind == "readwrite":
        job_read_write(payload["folders"], payload["out"])
    elif kind == "naive":
        job_naive(payload["folders"], payload["out"])
    else:
        job_engine(payload["folders"], payload["out"], payload["method"], payload.get("threads"))
    seconds = time.perf_counter() - start
    rss = peak_rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "peak_rss": rss, "peak_anon": anon.stop(), "cpu": usage.ru_utime + usage.ru_stime}))


class AnonymousPeak:
    """The largest anonymous resident set seen, sampled every 10 ms on a thread.

    Peak RSS also counts file-backed pages, such as the code of a loaded library (numba's
    LLVM maps ~0.12 GB), which other processes share and the kernel can drop; the
    anonymous part is the memory the merge itself holds. Linux keeps no high-water mark
    for it, so it is sampled (a peak shorter than 10 ms can be missed): resident minus
    shared pages from ``/proc/self/statm``, one positional read of a kept descriptor,
    because parsing ``/proc/self/status`` a hundred times a second slowed a TIES merge
    measurably on two cores.
    """

    def __init__(self) -> None:
        import threading

        self.peak = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        fields = os.pread(self._fd, 256, 0).split()
        self.peak = max(self.peak, (int(fields[1]) - int(fields[2])) * self._page)

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            self._sample()

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self._sample()
        os.close(self._fd)
        return self.peak


def peak_rss_bytes() -> int:
    """This process's high-water resident set (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


REPEAT = 1  # --repeat: each row is the fastest of this many runs


def measure(kind: str, env: dict[str, str] | None = None, **payload) -> dict[str, float]:
    """The fastest of REPEAT fresh runs of ``kind`` (the machine's noise only ever adds time)."""
    return min((measure_once(kind, env, **payload) for _ in range(REPEAT)), key=lambda r: r["seconds"])


def measure_once(kind: str, env: dict[str, str] | None = None, **payload) -> dict[str, float]:
    if "folders" in payload:  # every run starts with its inputs in page cache (this VM reclaims cached pages)
        job_plain_read(payload["folders"])
    if "out" in payload:  # a repeat starts from nothing, as the first run did
        out = Path(payload["out"])
        if out.is_dir():
            shutil.rmtree(out, ignore_errors=True)
        else:
            out.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(payload)], capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, default=1.1, help="billions of parameters per model (default 1.1)")
    parser.add_argument("--models", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--methods", nargs="+", default=["simple_average", "task_arithmetic", "ties"])
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="merge-studio worker threads to measure; 0 = every core (default: 0 and 1)")
    parser.add_argument("--dir", type=Path, help="where to generate (default: a temporary folder)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the in-memory baseline")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every row this many times and keep the fastest (default 1)")
    parser.add_argument("--kernels", nargs="+", choices=["on", "off"], default=["on"],
                        help="merge with the compiled kernels (numba), without them (torch only), or both")
    args = parser.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)

    load_before = os.getloadavg()[0]  # other work on the machine skews every row
    root = args.dir or Path(tempfile.mkdtemp(prefix="ms-bench-"))
    shapes = llama_shapes(args.params)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    need = max(args.models)
    print(f"# {n_params / 1e9:.2f}B parameters per model, bf16, {n_params * 2 / 1e9:.2f} GB each; folder {root}")
    folders = []
    for k in range(need):
        folder = root / f"model{k}"
        if not (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists():
            t = time.perf_counter()
            generate(folder, shapes, seed=k)
            print(f"# generated {folder.name} in {time.perf_counter() - t:.1f} s")
        folders.append(str(folder))
    rows = []
    try:
        for n in args.models:
            ins = folders[:n]
            in_bytes = sum(p.stat().st_size for f in ins for p in Path(f).glob("*.safetensors"))
            job_plain_read(ins)  # warm the page cache so every contender starts equal
            base = measure("plain", folders=ins)
            rows.append((f"{n} models", "plain read", base, in_bytes, base))
            copy = measure("readwrite", folders=ins, out=str(root / "copy.bin"))
            rows.append((f"{n} models", "plain read + write one model", copy, in_bytes, base))
            if not args.skip_naive:
                out = str(root / "naive.safetensors")
                r = measure("naive", folders=ins, out=out)
                Path(out).unlink(missing_ok=True)
                rows.append((f"{n} models", "naive torch average", r, in_bytes, base))
            for method in args.methods:
                for kernels in args.kernels:
                    for threads in args.threads:
                        out = str(root / f"out-{method}")
                        r = measure("engine", env={"MERGE_STUDIO_KERNELS": "1" if kernels == "on" else "0"},
                                    folders=ins, out=out, method=method, threads=threads or None)
                        shutil.rmtree(out, ignore_errors=True)
                        label = "all cores" if not threads else f"{threads} thread{'s' * (threads != 1)}"
                        if args.kernels != ["on"]:
                            label += f", kernels {kernels}"
                        rows.append((f"{n} models", f"merge-studio {method} ({label})", r, in_bytes, base))
            # the floor again after the merges: the faster of the two is kept, so a slow moment of the
            # machine at the start cannot make every ratio look better than it is
            again = measure("readwrite", folders=ins, out=str(root / "copy.bin"))
            floor_row = next(i for i, row in enumerate(rows) if row[0] == f"{n} models" and row[1].startswith("plain read + write"))
            if again["seconds"] < rows[floor_row][2]["seconds"]:
                rows[floor_row] = (*rows[floor_row][:2], again, *rows[floor_row][3:])
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    from merge_studio.core.device import resolve_device

    from merge_studio.core import kernels

    print(f"\n{os.cpu_count()} CPUs; merge device: {resolve_device('auto')}; compiled kernels: "
          f"{'numba' if kernels.available() else 'none (torch only)'}; load average at the start: "
          f"{load_before:.2f}, at the end: {os.getloadavg()[0]:.2f}")
    print("\n| inputs | job | wall s | CPU s | input GB/s | peak RSS GB | peak anonymous GB | speed vs plain read | × read + write floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    copies = {group: r for group, job, r, _, _ in rows if job.startswith("plain read + write")}
    for group, job, r, in_bytes, base in rows:
        gbps = in_bytes / r["seconds"] / 1e9
        ratio = base["seconds"] / r["seconds"]
        vs_floor = r["seconds"] / copies[group]["seconds"]
        print(f"| {group} | {job} | {r['seconds']:.2f} | {r.get('cpu', 0.0):.2f} | {gbps:.2f} | {r['peak_rss'] / 1e9:.2f} | {r.get('peak_anon', 0) / 1e9:.2f} | {ratio:.0%} | {vs_floor:.2f}× |")


if __name__ == "__main__":
    main()
