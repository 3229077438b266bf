"""``merge-studio moe`` against ``mergekit-moe`` on the same YAML, the same models, the same machine.

Each tool runs in a fresh process under GNU time (wall seconds, peak RSS). Both outputs
are then loaded with transformers (so mergekit's fused tensors and our per-expert ones
meet under the same in-memory names) and compared: experts and the rest (which both
copy, so they should be bit-identical), routers (largest difference and the cosine
between the two tools' vectors: mergekit runs the base in bfloat16 and left-pads
prompts, we run float32 and right-pad, see docs/moe.md) and the logits on a fixed input.

Models are tiny float32 Llama and Qwen2 folders from ``tests/hf_models.py`` (``--size
small`` makes them 512 wide and 8 layers deep, for timings). mergekit lives in its own
virtual environment:

    python -m venv /tmp/mkmoe && /tmp/mkmoe/bin/pip install torch==2.13.0 mergekit
    python benchmarks/vs_mergekit_moe.py --dir /tmp/moe-bench --mergekit /tmp/mkmoe/bin/mergekit-moe
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hf_models import make_hf_folder  # noqa: E402

SIZES = {
    "tiny": {},
    "small": {"hidden_size": 512, "intermediate_size": 1408, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 4},
}
PROMPTS = [
    (["def parse(text):", "import os\nimport sys"], []),
    (["Once upon a time", "The quick brown fox"], ["return None"]),
    (["1 + 1 = 2", "The integral of x"], []),
    (["<s>[INST] Hello", "Dear Sir or Madam,"], ["class Foo:"]),
]


def _yaml(base: Path, experts: list[Path], mode: str, shared: Path | None = None) -> str:
    lines = [f"base_model: {base}", f"gate_mode: {mode}", "dtype: float32", "experts_per_token: 2", "experts:"]
    for i, e in enumerate(experts):
        pos, neg = PROMPTS[i % len(PROMPTS)]
        lines += [f"  - source_model: {e}", f"    positive_prompts: {pos!r}"]
        if neg:
            lines.append(f"    negative_prompts: {neg!r}")
    if shared is not None:
        lines += ["shared_experts:", f"  - source_model: {shared}", "    positive_prompts: ['Hello there']"]
    return "\n".join(lines) + "\n"


def timed(cmd: list[str]) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        proc = subprocess.run(["/usr/bin/time", "-o", report.name, "-f", "%e %M", *cmd], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
        wall, kb = Path(report.name).read_text().split()[-2:]
    return float(wall), int(kb) * 1024 / 1e9


def compare(ours: Path, theirs: Path) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(ours).eval()
    b = AutoModelForCausalLM.from_pretrained(theirs).eval()
    sa, sb = a.state_dict(), b.state_dict()
    if set(sa) != set(sb):
        raise RuntimeError(f"different tensors: {sorted(set(sa) ^ set(sb))[:6]}")
    out = {"experts": 0.0, "rest": 0.0, "routers": 0.0, "cosine": 1.0}
    for name in sa:
        x, y = sa[name].float(), sb[name].float()
        diff = (x - y).abs().max().item() if x.numel() else 0.0
        if name.endswith((".gate.weight", "shared_expert_gate.weight")):
            out["routers"] = max(out["routers"], diff)
            cos = torch.nn.functional.cosine_similarity(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1), dim=-1)
            out["cosine"] = min(out["cosine"], cos.min().item())
        elif "experts" in name or "shared_expert." in name:
            out["experts"] = max(out["experts"], diff)
        else:
            out["rest"] = max(out["rest"], diff)
    ids = torch.tensor([[1, 17, 90, 200, 3, 45, 12]])
    with torch.no_grad():
        out["logits"] = (a(ids).logits - b(ids).logits).abs().max().item()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "moe-bench")
    parser.add_argument("--mergekit", default="/tmp/mkmoe/bin/mergekit-moe", help="the mergekit-moe executable")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--experts", type=int, default=4)
    args = parser.parse_args()
    root = args.dir / args.size
    models: dict[str, list[Path]] = {}
    for family in ("llama", "qwen2"):
        models[family] = [p if (p / "config.json").exists() else make_hf_folder(p, family, seed=i, **SIZES[args.size])
                          for i, p in enumerate(root / f"{family}-{i}" for i in range(args.experts + 1))]
    runs = [
        ("Mixtral, hidden", "llama", "hidden", False),
        ("Mixtral, cheap_embed", "llama", "cheap_embed", False),
        ("Mixtral, random", "llama", "random", False),
        ("Qwen2-MoE + shared, hidden", "qwen2", "hidden", True),
    ]
    print(f"{args.experts} experts, size {args.size}; times are whole processes (imports included)\n")
    print("| config | ours s | ours GB | mergekit s | mergekit GB | experts Δ | rest Δ | routers Δ | router cos | logits Δ |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, family, mode, shared in runs:
        base, *experts = models[family]
        cfg = root / f"{family}-{mode}{'-shared' if shared else ''}.yml"
        cfg.write_text(_yaml(base, experts, mode, base if shared else None))
        ours, theirs = root / "out-ours", root / "out-mergekit"
        for folder in (ours, theirs):
            shutil.rmtree(folder, ignore_errors=True)
        t_ours = timed([sys.executable, "-m", "merge_studio", "moe", str(cfg), "-o", str(ours), "-q", "--no-hash"])
        t_mk = timed([args.mergekit, str(cfg), str(theirs), "--device", "cpu"])
        d = compare(ours, theirs)
        print(f"| {label} | {t_ours[0]:.1f} | {t_ours[1]:.2f} | {t_mk[0]:.1f} | {t_mk[1]:.2f} | {d['experts']:.1e} | "
              f"{d['rest']:.1e} | {d['routers']:.1e} | {d['cosine']:.4f} | {d['logits']:.1e} |")
    print("\nrandom routers are seeded noise in both tools, so they differ by design (router and logit columns).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
