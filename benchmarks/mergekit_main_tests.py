"""``vs_mergekit.py --suite main-tests``: the merges of mergekit's own ``tests/test_basic_merges.py``
(its main branch) on the same kinds of models the tests build: pico Llamas (three random
initialisations), pico Granites, pico LLaVAs (a CLIP vision tower and a Llama text model) and a
GPT-2-sized model, each config through both tools, compared tensor by tensor.

mergekit's tests compute in bfloat16; here both tools compute in float32 (``dtype: float32``) so
that rounding is not what differs. LLaVA outputs keep merge-studio's tensor names (mergekit
renames them), so those rows compare the two folders as loaded by transformers.
"""

from __future__ import annotations

import sys
from pathlib import Path

F32 = "dtype: float32\n"


def build_models(folder: Path) -> dict[str, Path]:
    """Write the test models once (the recipes of mergekit's ``tests/common.py``, seeded)."""
    import torch
    from transformers import (
        CLIPVisionConfig, GPT2Config, GPT2LMHeadModel, GraniteConfig, GraniteForCausalLM, LlamaConfig,
        LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration,
    )

    def llama_cfg() -> LlamaConfig:
        return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=16, num_hidden_layers=2)

    builders = {
        **{f"ll{k}": lambda: LlamaForCausalLM(llama_cfg()) for k in "abc"},
        **{f"gr{k}": lambda: GraniteForCausalLM(GraniteConfig(
            vocab_size=64, hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=2,
            num_hidden_layers=2)) for k in "ab"},
        **{f"vl{k}": lambda: LlavaForConditionalGeneration(LlavaConfig(
            vision_config=CLIPVisionConfig(image_size=32, patch_size=4, num_hidden_layers=2, num_attention_heads=2,
                                           hidden_size=64, intermediate_size=128),
            text_config=llama_cfg(), image_seq_length=16)) for k in "abc"},
        "gpt2": lambda: GPT2LMHeadModel(GPT2Config(n_ctx=1024, n_embd=768, n_head=12, n_layer=12, n_positions=1024,
                                                    vocab_size=50257)),
    }
    paths = {}
    for seed, (name, build) in enumerate(builders.items()):
        path = folder / name
        paths[name] = path
        if not (path / "config.json").exists():
            torch.manual_seed(1000 + seed)
            build().save_pretrained(path, safe_serialization=True)
    return paths


def _two(method: str, a: str, b: str, base: str | None = None, params: str = "", wa: str = "0.6", wb: str = "0.4") -> str:
    """The tests' ``two_model_config``: weights 0.6 and 0.4, the base and global parameters given."""
    text = f"merge_method: {method}\n" + (f"base_model: {base}\n" if base else "")
    text += f"models:\n  - model: {a}\n    parameters: {{weight: {wa}}}\n  - model: {b}\n    parameters: {{weight: {wb}}}\n"
    return text + (f"parameters: {params}\n" if params else "") + F32


def _family(prefix: str, group: str) -> list[tuple[str, str, str, str]]:
    """Every two-model test of ``TestBasicMerges`` on one family's three models."""
    a, b, c = (f"{{{prefix}{k}}}" for k in "abc")
    rows = [
        ("linear", "same", _two("linear", a, b)),
        ("slerp t=0.35", "same", _two("slerp", a, b, a, "{t: 0.35}")),
        *[(f"nuslerp base={'c' if base else 'none'} row_wise={rw} flatten={fl}", "same",
           _two("nuslerp", a, b, base, f"{{nuslerp_row_wise: {str(rw).lower()}, nuslerp_flatten: {str(fl).lower()}}}"))
          for base in (None, c) for rw in (False, True) for fl in (False, True)],
        ("nuslerp weights summing to zero", "same",
         _two("nuslerp", a, b, c, "{nuslerp_row_wise: false, nuslerp_flatten: false}", "-0.5", "0.5")),
        ("task_arithmetic", "same", _two("task_arithmetic", a, b, c)),
        ("breadcrumbs", "same", _two("breadcrumbs", a, b, c)),
        ("ties density=0.3", "same", _two("ties", a, b, c, "{density: 0.3}")),
        ("dare_ties density=0.66", "random", _two("dare_ties", a, b, c, "{density: 0.66}")),
        ("model_stock", "same", _two("model_stock", b, c, a)),
        ("model_stock filter_wise", "same", _two("model_stock", b, c, a, "{filter_wise: true}")),
    ]
    if prefix == "ll":
        rows += [
            ("sce select_topk=0.5", "same", _two("sce", a, b, c, "{select_topk: 0.5}")),
            ("ram", "same", _two("ram", a, b, c)),
            ("ramplus_tl", "same", _two("ramplus_tl", a, b, c, "{r: 0.05, alpha: 1.0}")),
            ("multislerp", "same", _two("multislerp", a, b, c)),
            ("arcee_fusion", "same", _two("arcee_fusion", a, b, a)),
            ("nearswap t=0.0001", "same", _two("nearswap", a, b, a, "{t: 0.0001}")),
            ("della", "random", _two("della", a, b, c, "{density: 0.66, epsilon: 0.05, lambda: 0.5}")),
            ("della epsilon=1.35 (invalid)", "refused", _two("della", a, b, c, "{density: 0.66, epsilon: 1.35, lambda: 0.5}")),
            ("karcher", "same", _two("karcher", a, b, c, "{max_iter: 5, tol: 1.0e-5}")),
            ("passthrough scale (o_proj → 0)", "same",
             "merge_method: passthrough\nmodels:\n  - model: {lla}\n    parameters:\n      scale:\n"
             "        - {filter: o_proj, value: 0}\n        - {value: 1}\n" + F32),
        ]
    return [(label, group, kind, text) for label, kind, text in rows]


SUITE: list[tuple[str, str, str, str]] = [
    ("granite passthrough copy", "Granite", "same", "merge_method: passthrough\nmodels:\n  - model: {gra}\n" + F32),
    ("granite linear", "Granite", "same", _two("linear", "{gra}", "{grb}")),
    ("granite slerp t=0.5", "Granite", "same",
     "merge_method: slerp\nbase_model: {gra}\nmodels:\n  - model: {gra}\n  - model: {grb}\nparameters: {t: 0.5}\n" + F32),
    ("gpt2 passthrough copy", "GPT-2", "same", "merge_method: passthrough\nmodels:\n  - model: {gpt2}\n" + F32),
    ("gpt2 stack 2 × layers 0–12", "GPT-2", "same",
     "merge_method: passthrough\nslices:\n" + "  - sources:\n      - {model: {gpt2}, layer_range: [0, 12]}\n" * 2 + F32),
    *_family("ll", "Llama"),
    *_family("vl", "LLaVA"),
]


def main() -> None:  # pragma: no cover - run through vs_mergekit.py
    sys.exit("run: python benchmarks/vs_mergekit.py --suite main-tests --dir DIR --mergekit /tmp/mkvenv/bin/mergekit-yaml")


if __name__ == "__main__":
    main()
