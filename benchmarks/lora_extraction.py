"""LoRA extraction: error against rank, in the weights and in what the model computes.

A small Llama-shaped model (built from a config by transformers, never downloaded)
is fine-tuned for real — every weight, AdamW, next-token loss on a few kB of
standard-library source — and a LoRA is extracted from the fine-tune at each rank
with ``extract_lora``. For each rank the table gives:

* the relative Frobenius error of the weight change over every decomposed layer,
  ‖ΔW − BA‖ / ‖ΔW‖ (what ``merge-studio lora extract`` reports);
* the adapter's size against the full change;
* how much of the fine-tune's drop in held-out loss the base + LoRA keeps
  (100% = the fine-tuned model, 0% = the base), and the mean KL divergence of its
  next-token distribution from the fine-tuned model's;
* the extraction time, against the time to read both models once (the floor).

The fine-tune also changes norms and embeddings, which a LoRA of linear layers does
not carry; the last row ("full change") applies those too, to separate the two losses.

    python benchmarks/lora_extraction.py [--hidden 128 --layers 4 --steps 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _batches(tokenizer, text: str, seq: int, batch: int):
    ids = torch.tensor(tokenizer(text)["input_ids"])
    n = (len(ids) - 1) // seq
    rows = ids[: n * seq + 1]
    x = torch.stack([rows[i * seq:(i + 1) * seq] for i in range(n)])
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def _loss_and_logits(model, batches):
    total, count, logits = 0.0, 0, []
    with torch.no_grad():
        for x in batches:
            out = model(input_ids=x, labels=x)
            total += float(out.loss) * x.numel()
            count += x.numel()
            logits.append(out.logits.float())
    return total / count, torch.cat(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ranks", default="1,2,4,8,16,32,64")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    from tests.hf_models import make_hf_folder, make_hf_model, make_tokenizer, training_text

    from merge_studio.core.checkpoints import open_checkpoint
    from merge_studio.core.lora.extract import extract_lora

    work = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    config = dict(hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=4, num_key_value_heads=2)
    model = make_hf_model("llama", seed=0, **config)
    base = make_hf_folder(work / "base", "llama", model=model, tokenizer=False)
    tok = make_tokenizer()
    text = training_text()
    cut = int(len(text) * 0.85)
    train, held = _batches(tok, text[:cut], 64, 8), _batches(tok, text[cut:], 64, 8)
    base_loss, _ = _loss_and_logits(model.eval(), held)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for step in range(args.steps):
        x = train[step % len(train)]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tuned = make_hf_folder(work / "tuned", "llama", model=model, tokenizer=False)
    tuned_loss, tuned_logits = _loss_and_logits(model, held)
    tuned_logp = torch.log_softmax(tuned_logits, -1)

    start = time.perf_counter()
    for path in (base, tuned):
        with open_checkpoint(path) as ck:
            for name in ck.keys():
                ck.get_tensor(name)
    read_s = time.perf_counter() - start

    def evaluate(path: str) -> tuple[float, float]:
        probe = make_hf_model("llama", seed=0, **config)
        with open_checkpoint(path) as ck:
            probe.load_state_dict({n: ck.get_tensor(n) for n in ck.keys()}, strict=False)
        loss, logits = _loss_and_logits(probe.eval(), held)
        kl = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), tuned_logp, log_target=True,
                                        reduction="none").sum(-1).mean()
        kept = (base_loss - loss) / (base_loss - tuned_loss) if base_loss != tuned_loss else float("nan")
        return kept, float(kl)

    full = sum(i.numel for i in open_checkpoint(base).infos.values())
    load = os.getloadavg()
    print(f"model: Llama hidden {args.hidden}, {args.layers} layers, {full / 1e6:.2f} M parameters; fine-tuned "
          f"{args.steps} steps: held-out loss {base_loss:.3f} -> {tuned_loss:.3f}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; reading both models once: {read_s * 1000:.0f} ms")
    print()
    print("| rank | weight rel. error | adapter / full change | loss drop kept | KL to fine-tune | time | × read |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rank in (int(r) for r in args.ranks.split(",")):
        start = time.perf_counter()
        result = extract_lora(tuned, base, work / f"r{rank}", rank=rank)
        seconds = time.perf_counter() - start
        with open_checkpoint(result.path) as ck:
            adapter_params = sum(i.numel for i in ck.infos.values())
        decomposed = sum(open_checkpoint(base).info(l.module + ".weight").numel for l in result.layers)
        kept, kl = evaluate(f"{base}+{result.path}")
        print(f"| {rank} | {result.relative_error:.4f} | {adapter_params / decomposed:.1%} | {kept:.1%} | "
              f"{kl:.4f} | {seconds:.2f} s | {seconds / read_s:.1f} |")
    kept, kl = evaluate(str(tuned))
    print(f"| full change | 0 | 100% | {kept:.1%} | {kl:.4f} | – | – |")
    not_captured = extract_lora(tuned, base, work / "probe", rank=1).not_captured
    print(f"\nnot in the adapter (changed, not linear): {len(not_captured)} tensors, e.g. {', '.join(not_captured[:3])}")
    kept_lin, kl_lin = _linear_only(base, tuned, config, held, tuned_logp, base_loss, tuned_loss)
    print(f"linear layers' full change only (what a LoRA of every rank converges to): loss drop kept {kept_lin:.1%}, "
          f"KL {kl_lin:.4f}")


def _linear_only(base, tuned, config, held, tuned_logp, base_loss, tuned_loss):
    from tests.hf_models import make_hf_model

    from merge_studio.core.checkpoints import open_checkpoint

    probe = make_hf_model("llama", seed=0, **config)
    with open_checkpoint(base) as b, open_checkpoint(tuned) as t:
        state = {}
        for name in b.keys():
            linear = name.endswith("proj.weight") or name == "lm_head.weight"
            state[name] = t.get_tensor(name) if linear else b.get_tensor(name)
    probe.load_state_dict(state, strict=False)
    loss, logits = _loss_and_logits(probe.eval(), held)
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), tuned_logp, log_target=True,
                                    reduction="none").sum(-1).mean()
    return (base_loss - loss) / (base_loss - tuned_loss), float(kl)


if __name__ == "__main__":
    main()
