"""Merge Studio against mergekit on the same mergekit config, the same models, the same machine.

Both tools get one mergekit YAML file (``merge-studio merge`` reads mergekit configs);
each run is a fresh process timed with GNU time (wall seconds, peak RSS). The outputs
are then compared tensor by tensor: the largest absolute difference and how many
tensors are bit-identical. Both compute in float32 (``dtype: float32``) and write the
models' dtype (``out_dtype``), so differences come from the order of operations, or
from a documented difference between the tools' definitions.

The models are the throughput benchmark's synthetic TinyLlama-shaped checkpoints
(generated if missing) with a Llama ``config.json`` added, which mergekit needs.
mergekit lives in its own virtual environment (it pins transformers, peft, datasets…):

    python -m venv /tmp/mkvenv && /tmp/mkvenv/bin/pip install torch==2.13.0 mergekit
    python benchmarks/vs_mergekit.py --dir /tmp/bench-data --mergekit /tmp/mkvenv/bin/mergekit-yaml

``--suite tiny`` runs instead every config of ``benchmarks/mergekit_configs.py`` (mergekit's
own test and example configs, a row per method, gradients, filters, slices with parameters,
global per-model parameters, out_dtype) on tiny float32 Llama folders built with
``tests/hf_models.py``, and prints per-config agreement:

    python benchmarks/vs_mergekit.py --suite tiny --dir /tmp/mk-tiny --mergekit /tmp/mkvenv/bin/mergekit-yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))

from merge_throughput import LAYOUT, generate, llama_shapes  # noqa: E402

CONFIGS = {
    "linear (average of 2)": """
merge_method: linear
models:
  - model: {m0}
    parameters: {{weight: 1.0}}
  - model: {m1}
    parameters: {{weight: 1.0}}
""",
    "slerp (t = 0.3)": """
merge_method: slerp
base_model: {m0}
models:
  - model: {m0}
  - model: {m1}
parameters: {{t: 0.3}}
""",
    "task_arithmetic (base + 2, λ 0.8)": """
merge_method: task_arithmetic
base_model: {m0}
models:
  - model: {m1}
    parameters: {{weight: 0.5}}
  - model: {m2}
    parameters: {{weight: 0.7}}
parameters: {{lambda: 0.8}}
""",
    "ties (base + 2, density 0.5)": """
merge_method: ties
base_model: {m0}
models:
  - model: {m1}
    parameters: {{weight: 1.0, density: 0.5}}
  - model: {m2}
    parameters: {{weight: 1.0, density: 0.5}}
parameters: {{normalize: true}}
""",
    "breadcrumbs_ties (base + 2, density 0.5, γ 0.01)": """
merge_method: breadcrumbs_ties
base_model: {m0}
models:
  - model: {m1}
    parameters: {{weight: 1.0, density: 0.5, gamma: 0.01}}
  - model: {m2}
    parameters: {{weight: 1.0, density: 0.5, gamma: 0.01}}
""",
    "della (base + 2, density 0.5, ε 0.1; random)": """
merge_method: della
base_model: {m0}
models:
  - model: {m1}
    parameters: {{weight: 1.0, density: 0.5, epsilon: 0.1}}
  - model: {m2}
    parameters: {{weight: 1.0, density: 0.5, epsilon: 0.1}}
""",
    "sce (base + 2, select_topk 0.5)": """
merge_method: sce
base_model: {m0}
models: [{{model: {m1}}}, {{model: {m2}}}]
parameters: {{select_topk: 0.5}}
""",
    "ram (base + 2)": """
merge_method: ram
base_model: {m0}
models: [{{model: {m1}}}, {{model: {m2}}}]
""",
    "ramplus_tl (base + 2)": """
merge_method: ramplus_tl
base_model: {m0}
models: [{{model: {m1}}}, {{model: {m2}}}]
""",
    "karcher (3 models)": """
merge_method: karcher
models: [{{model: {m0}}}, {{model: {m1}}}, {{model: {m2}}}]
""",
    "multislerp (base + 2)": """
merge_method: multislerp
base_model: {m0}
models:
  - model: {m1}
    parameters: {{weight: 0.6}}
  - model: {m2}
    parameters: {{weight: 0.4}}
""",
    "nuslerp (2, row by row)": """
merge_method: nuslerp
models:
  - model: {m1}
    parameters: {{weight: 0.6}}
  - model: {m2}
    parameters: {{weight: 0.4}}
parameters: {{nuslerp_flatten: false}}
""",
    "nearswap (base + 1, t 0.001)": """
merge_method: nearswap
base_model: {m0}
models: [{{model: {m0}}}, {{model: {m1}}}]
parameters: {{t: 0.001}}
""",
    "arcee_fusion (base + 1)": """
merge_method: arcee_fusion
base_model: {m0}
models: [{{model: {m0}}}, {{model: {m1}}}]
""",
}
# Both tools compute in float32 and write the models' dtype.
DTYPES = "dtype: float32\nout_dtype: {out}\n"


def llama_config(layers: int) -> dict[str, object]:
    h = LAYOUT["hidden"]
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": LAYOUT["intermediate"], "num_attention_heads": h // 64,
        "num_key_value_heads": LAYOUT["kv"] // 64, "num_hidden_layers": layers,
        "vocab_size": LAYOUT["vocab"], "rms_norm_eps": 1e-5, "max_position_embeddings": 2048,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    }


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` under GNU time; returns (wall seconds, peak RSS in GB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%e %M", *cmd], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
        wall, kb = Path(report.name).read_text().split()[-2:]
    return float(wall), int(kb) * 1024 / 1e9


def tensor_files(folder: Path) -> dict[str, Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    files = sorted(folder.glob("*.safetensors"))
    out: dict[str, Path] = {}
    for f in files:
        with safe_open(f, "pt") as fh:
            out.update({k: f for k in fh.keys()})
    return out


def compare(a: Path, b: Path) -> tuple[float, int, int]:
    """(largest |a − b| over all tensors, tensors bit-identical, tensors compared)."""
    fa, fb = tensor_files(a), tensor_files(b)
    if set(fa) != set(fb):
        raise RuntimeError(f"different tensor names: {sorted(set(fa) ^ set(fb))[:5]}")
    worst, same = 0.0, 0
    for name in sorted(fa):
        with safe_open(fa[name], "pt") as x, safe_open(fb[name], "pt") as y:
            ta, tb = x.get_tensor(name), y.get_tensor(name)
        same += int(torch.equal(ta, tb))
        worst = max(worst, float((ta.float() - tb.float()).abs().max()))
    return worst, same, len(fa)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where the models are (or are generated)")
    parser.add_argument("--mergekit", default=shutil.which("mergekit-yaml"), help="the mergekit-yaml executable")
    parser.add_argument("--params", type=float, default=1.1, help="billions of parameters per model")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="the models' dtype (float32 models have almost no tied magnitudes)")
    parser.add_argument("--only", nargs="*", help="run only configs whose label starts with (tiny: contains) these words")
    parser.add_argument("--suite", choices=["large", "tiny", "main-tests"], default="large",
                        help="large: timing on TinyLlama-sized models; tiny: every config of mergekit_configs.py; "
                             "main-tests: mergekit's tests/test_basic_merges.py on its kinds of models (mergekit_main_tests.py)")
    args = parser.parse_args()
    if not args.mergekit or not Path(args.mergekit).exists():
        sys.exit("mergekit-yaml not found: install mergekit in its own venv and pass --mergekit (see --help)")
    if not Path("/usr/bin/time").exists():
        sys.exit("needs GNU time (/usr/bin/time; apt-get install time)")
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    if args.suite == "tiny":
        from mergekit_configs import SUITE
        from mergekit_suite import print_table, run_suite

        args.dir.mkdir(parents=True, exist_ok=True)
        print_table(run_suite(args.dir, args.mergekit, SUITE, args.only))
        print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
        return
    if args.suite == "main-tests":
        from mergekit_main_tests import SUITE as MAIN_TESTS
        from mergekit_main_tests import build_models
        from mergekit_suite import print_table, run_suite

        args.dir.mkdir(parents=True, exist_ok=True)
        print_table(run_suite(args.dir, args.mergekit, MAIN_TESTS, args.only, build=build_models))
        print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
        return
    ours = str(Path(sys.executable).with_name("merge-studio"))

    shapes = llama_shapes(args.params)
    layers = sum(1 for k in shapes if k.endswith("q_proj.weight"))
    folders = []
    for k in range(3):
        folder = args.dir / f"model{k}"
        if not (folder / "model.safetensors.index.json").exists():
            generate(folder, shapes, seed=k, dtype=getattr(torch, args.dtype))
        (folder / "config.json").write_text(json.dumps(llama_config(layers), indent=2))
        folders.append(folder)

    rows = []
    for label, template in CONFIGS.items():
        if args.only and not any(label.startswith(word) for word in args.only):
            continue
        config = args.dir / "vs_mergekit.yml"
        config.write_text(template.format(m0=folders[0], m1=folders[1], m2=folders[2]) + DTYPES.format(out=args.dtype))
        for f in folders:  # warm the page cache so both tools start equal
            for p in f.glob("*.safetensors"):
                with p.open("rb") as fh:
                    while fh.read(16 << 20):
                        pass
        out_mk, out_ms = args.dir / "out-mergekit", args.dir / "out-merge-studio"
        for out in (out_mk, out_ms):
            shutil.rmtree(out, ignore_errors=True)
        mk = timed([args.mergekit, str(config), str(out_mk), "--lazy-unpickle", "--no-copy-tokenizer", "--out-shard-size", "1B"])
        ms = timed([ours, "merge", str(config), "-o", str(out_ms), "--shard-size", "1GB"])
        worst, same, total = compare(out_mk, out_ms)
        rows.append((label, mk, ms, worst, same, total))
        for out in (out_mk, out_ms):
            shutil.rmtree(out, ignore_errors=True)

    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")
    print("\n| config | mergekit wall s | merge-studio wall s | speed-up | mergekit peak RSS GB | merge-studio peak RSS GB | max abs diff | bit-identical tensors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, (mk_s, mk_rss), (ms_s, ms_rss), worst, same, total in rows:
        print(f"| {label} | {mk_s:.1f} | {ms_s:.1f} | {mk_s / ms_s:.2f}× | {mk_rss:.2f} | {ms_rss:.2f} | {worst:.2e} | {same}/{total} |")


if __name__ == "__main__":
    main()
