"""Merge Studio against mergekit on Hugging Face folders: tokenizers, vocabulary rows, chat templates, LLaVA.

The cases are the ones mergekit's own tests check (tests/test_tokenizer.py,
tests/test_chat_template.py, the LLaVA merge of tests/test_basic_merges.py), on
folders built the same way: tiny Llama models whose vocabularies differ by added
tokens (``chatml``: two chat markers with embedding rows; ``padded``: four tokenizer
entries past the end of its embedding), a model without a tokenizer, and a tiny LLaVA;
then a TIES merge of three folders of each family ``tests/hf_models.py`` builds
(Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-2).
Each config goes through ``mergekit-yaml`` and ``merge-studio merge``; the table says
whether the tokenizers agree (vocabulary, added tokens, chat template), whether the
config's vocabulary size agrees, the largest tensor difference, and whether
transformers loads our folder.

    python benchmarks/vs_mergekit_hf.py --mergekit /tmp/mkvenv/bin/mergekit-yaml [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = "models:\n" + "".join(f"  - model: {{{k}}}\n    parameters: {{{{weight: 1.0}}}}\n" for k in ("base", "padded", "chatml"))
CASES: dict[str, str] = {
    "no tokenizer_source (same rows)": "merge_method: linear\nbase_model: {base}\ndtype: float32\n"
    + MODELS.replace("  - model: {chatml}\n    parameters: {{weight: 1.0}}\n", ""),
    "no tokenizer_source (rows differ)": "merge_method: linear\nbase_model: {base}\ndtype: float32\n" + MODELS,
    "tokenizer_source: base": "merge_method: linear\nbase_model: {base}\ndtype: float32\ntokenizer_source: base\n" + MODELS,
    "tokenizer_source: union": "merge_method: linear\nbase_model: {base}\ndtype: float32\ntokenizer_source: union\n" + MODELS,
    "tokenizer_source: model (chatml)": "merge_method: linear\nbase_model: {base}\ndtype: float32\ntokenizer_source: {chatml}\n"
    + MODELS,
    "slerp, union": "merge_method: slerp\nbase_model: {base}\ndtype: float32\ntokenizer_source: union\nparameters: {{t: 0.5}}\n"
    "models:\n  - model: {base}\n  - model: {chatml}\n",
    "tokens forced from two models": "merge_method: linear\nbase_model: {base}\ndtype: float32\n"
    "tokenizer:\n  source: union\n  tokens:\n    _tok_10: {{source: {chatml}, force: true}}\n"
    "    _tok_11: {{source: {base}, force: true}}\n"
    "models:\n  - model: {base}\n    parameters: {{weight: 1.0}}\n  - model: {chatml}\n    parameters: {{weight: 1.0}}\n",
    "tokens from another token id": "merge_method: linear\nbase_model: {base}\ndtype: float32\n"
    "tokenizer:\n  source: base\n  tokens:\n"
    "    _tok_20: {{source: {{kind: model_token, model: {chatml}, token_id: 64}}, force: true}}\n"
    "    _tok_21: {{source: {{kind: model_token, model: {base}, token: <s>}}, force: true}}\n"
    "models:\n  - model: {base}\n    parameters: {{weight: 1.0}}\n  - model: {chatml}\n    parameters: {{weight: 1.0}}\n",
    "pad_to_multiple_of 16 (two models)": "merge_method: linear\nbase_model: {chatml}\ndtype: float32\n"
    "tokenizer:\n  source: base\n  pad_to_multiple_of: 16\n"
    "models:\n  - model: {chatml}\n    parameters: {{weight: 1.0}}\n  - model: {chatml2}\n    parameters: {{weight: 1.0}}\n",
    "pad_to_multiple_of 16 (one model)": "merge_method: linear\nbase_model: {chatml}\ndtype: float32\n"
    "tokenizer:\n  source: base\n  pad_to_multiple_of: 16\nmodels:\n  - model: {chatml}\n    parameters: {{weight: 1.0}}\n",
    "chat_template: chatml": "merge_method: linear\nbase_model: {base}\ndtype: bfloat16\nchat_template: chatml\n"
    "models:\n  - model: {base}\n    parameters: {{weight: 0.5}}\n  - model: {notok}\n    parameters: {{weight: 0.5}}\n",
    "chat_template: literal Jinja": "merge_method: linear\nbase_model: {base}\ndtype: bfloat16\n"
    "chat_template: \"{{{{messages[0]['content']}}}}\"\n"
    "models:\n  - model: {base}\n    parameters: {{weight: 0.5}}\n  - model: {notok}\n    parameters: {{weight: 0.5}}\n",
    "LLaVA, linear": "merge_method: linear\ndtype: float32\n"
    "models:\n  - model: {llava}\n    parameters: {{weight: 0.6}}\n  - model: {llava2}\n    parameters: {{weight: 0.4}}\n",
}


FAMILY_CASE = (
    "merge_method: ties\nbase_model: {{{f}0}}\ndtype: float32\nparameters: {{{{normalize: true}}}}\nmodels:\n"
    "  - model: {{{f}1}}\n    parameters: {{{{weight: 1.0, density: 0.5}}}}\n"
    "  - model: {{{f}2}}\n    parameters: {{{{weight: 0.5, density: 0.7}}}}\n"
)


def family_cases() -> dict[str, str]:
    """A TIES merge of three folders of each family tests/hf_models.py builds."""
    from tests.hf_models import FAMILIES

    return {f"{f}: ties, base + 2": FAMILY_CASE.format(f=f) for f in FAMILIES}


def _tokenizer(vocab_rows: int, added: list[str]):
    """A BPE tokenizer of ``vocab_rows`` plain tokens (<unk>, <s>, </s>, _tok_3, ...) plus ``added``."""
    import tokenizers
    from transformers import LlamaTokenizerFast

    names = ["<unk>", "<s>", "</s>"] + [f"_tok_{i}" for i in range(3, vocab_rows)]
    spec = {"version": "1.0", "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(names)}, "merges": []}, "added_tokens": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        tokenizers.Tokenizer.from_str(json.dumps(spec)).save(path)
        tok = LlamaTokenizerFast(tokenizer_file=path)
    tok.add_tokens(added)
    return tok


def _llama(folder: Path, rows: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=rows, hidden_size=32, intermediate_size=48, num_attention_heads=16, num_hidden_layers=2)
    LlamaForCausalLM(cfg).save_pretrained(folder)


def _llava(folder: Path, seed: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(image_size=32, patch_size=4, num_hidden_layers=2, num_attention_heads=2,
                              hidden_size=64, intermediate_size=128)
    text = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=16, num_hidden_layers=2)
    LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_seq_length=16)).save_pretrained(folder)


def build_fixtures(root: Path) -> dict[str, str]:
    """The folders mergekit's tokenizer tests use, built the same way (seeded)."""
    paths = {k: root / k for k in ("base", "chatml", "chatml2", "padded", "notok", "llava", "llava2")}
    _llama(paths["base"], 64, 1)
    _tokenizer(64, []).save_pretrained(paths["base"])
    for key, seed in (("chatml", 2), ("chatml2", 5)):
        _llama(paths[key], 66, seed)
        _tokenizer(64, ["<|im_start|>", "<|im_end|>"]).save_pretrained(paths[key])
    _llama(paths["padded"], 64, 3)
    _tokenizer(64, [f"<UNUSED_{i}>" for i in range(4)]).save_pretrained(paths["padded"])
    _llama(paths["notok"], 64, 4)
    _llava(paths["llava"], 6)
    _llava(paths["llava2"], 7)
    from tests.hf_models import FAMILIES, make_hf_folder

    for family in FAMILIES:
        for seed in range(3):
            paths[f"{family}{seed}"] = make_hf_folder(root / f"{family}{seed}", family, seed)
    return {k: str(v) for k, v in paths.items()}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _tokenizer_facts(folder: Path):
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").is_file():
        return None
    tok = AutoTokenizer.from_pretrained(str(folder))
    added = sorted((i, t.content) for i, t in tok.added_tokens_decoder.items())
    return tok.get_vocab(), added, tok.chat_template


def _loads(folder: Path) -> str:
    import transformers

    cfg = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, cfg["architectures"][0])
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - a row of the table, not a crash
        return f"fails: {type(exc).__name__}"
    missing = info.get("missing_keys") or []
    return f"{type(model).__name__}" + (f" ({len(missing)} missing)" if missing else "")


def compare(ours: Path, theirs: Path) -> dict[str, str]:
    a, b = _tensors(ours), _tensors(theirs)
    ta, tb = _tokenizer_facts(ours), _tokenizer_facts(theirs)
    shared = [n for n in a if n in b]
    diffs = [float((a[n].float() - b[n].float()).abs().max()) if a[n].shape == b[n].shape else float("inf") for n in shared]
    cfg_a = json.loads((ours / "config.json").read_text())
    cfg_b = json.loads((theirs / "config.json").read_text())
    vocab_a = cfg_a.get("vocab_size", cfg_a.get("text_config", {}).get("vocab_size"))
    vocab_b = cfg_b.get("vocab_size", cfg_b.get("text_config", {}).get("vocab_size"))
    if ta is None or tb is None:
        tok = "both none" if ta is None and tb is None else ("ours none" if ta is None else "theirs none")
    else:
        tok = "same" if ta[0] == tb[0] and ta[1] == tb[1] else f"differ ({len(ta[0])} vs {len(tb[0])} tokens)"
        tok += "" if ta[2] == tb[2] else ", template differs"
    return {
        "tokenizer": tok,
        "vocab_size": "same" if vocab_a == vocab_b else f"{vocab_a} vs {vocab_b}",
        "tensors": f"{len(shared)}/{len(a)} shared" + ("" if len(a) == len(b) else f" (mergekit {len(b)})"),
        "max diff": f"{max(diffs):.1e}" if diffs else "-",
        "ours loads": _loads(ours),
        "mergekit's loads": _loads(theirs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mergekit", default="/tmp/mkvenv/bin/mergekit-yaml")
    parser.add_argument("--keep", help="build the folders here and keep them")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="vs-mergekit-hf-"))
    root.mkdir(parents=True, exist_ok=True)
    paths = build_fixtures(root / "models")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    rows = []
    for i, (name, template) in enumerate({**CASES, **family_cases()}.items()):
        config = root / f"case{i}.yml"
        config.write_text(template.format(**paths))
        ours, theirs = root / f"ours{i}", root / f"theirs{i}"
        for out in (ours, theirs):
            shutil.rmtree(out, ignore_errors=True)
        mk = subprocess.run([args.mergekit, str(config), str(theirs)], capture_output=True, text=True, env=env)
        ms = subprocess.run([sys.executable, "-m", "merge_studio", "merge", str(config), "-o", str(ours), "-q"],
                            capture_output=True, text=True, env=env)
        if ms.returncode != 0:
            rows.append((name, {"result": "ours refused: " + (ms.stderr.strip().splitlines() or ["?"])[-1][:90]}))
        elif mk.returncode != 0:
            rows.append((name, {"result": "mergekit failed: " + (mk.stderr.strip().splitlines() or ["?"])[-1][:90],
                                "ours loads": _loads(ours)}))
        else:
            rows.append((name, compare(ours, theirs)))
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    columns = ["tokenizer", "vocab_size", "tensors", "max diff", "ours loads", "mergekit's loads"]
    print("| case | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for name, facts in rows:
        if "result" in facts:
            print(f"| {name} | {facts['result']} | | | | {facts.get('ours loads', '')} | |")
        else:
            print(f"| {name} | " + " | ".join(facts.values()) + " |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
