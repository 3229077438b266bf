"""Router weights of an assembled MoE: one vector per expert and layer, from prompts or noise.

A router scores each token against every expert's vector; the vectors come from the
base model's view of the prompts that should reach that expert, so a token like those
prompts is sent there (mergekit-moe's idea; its gate modes are kept):

* ``hidden``: per layer, the base model's hidden state entering that layer, at each
  prompt's last token, averaged over the prompts; ``hidden_avg`` averages over every
  token instead. Negative prompts are subtracted; the result is normalised.
* ``cheap_embed``: the normalised sum of the prompts' token embeddings, the same for
  every layer (no forward pass, so it runs where the model does not fit in memory).
* ``random`` / ``uniform_random``: seeded noise, for an MoE that will be trained.

Prompts are run on the CPU (or the device given) in batches, right-padded so padding
never changes a real token's hidden state, in float32 for models up to
:data:`FLOAT32_LIMIT` bytes. The job yields :class:`Progress` per batch and stops
between batches when cancelled.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from merge_studio.core.checkpoints.base import Checkpoint
from merge_studio.core.moe.config import ExpertEntry
from merge_studio.core.progress import CancelToken, Progress, check_cancel
from merge_studio.errors import ArchitectureError, MergeStudioError

FLOAT32_LIMIT = 16 * 2**30  # bytes of a float32 copy of the base above which it runs in its own dtype
STAGE = "routers"


@dataclass(frozen=True)
class GateBase:
    """What the router maths needs of the base model."""

    folder: Path
    checkpoint: Checkpoint
    num_layers: int
    hidden_size: int
    embedding: str  # name of the input embedding tensor


def normalised(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def iter_gate_vectors(
    mode: str,
    base: GateBase,
    entries: Sequence[ExpertEntry],
    *,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 8,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, torch.Tensor]:
    """Router vectors, shaped (layers, len(entries), hidden), float32; an entry without prompts gets zeros."""
    shape = (base.num_layers, len(entries), base.hidden_size)
    if mode in ("random", "uniform_random"):
        gen = torch.Generator().manual_seed(seed)
        if mode == "random":
            return torch.randn(shape, generator=gen)
        bound = 1.0 / math.sqrt(base.hidden_size)
        return torch.rand(shape, generator=gen) * (2 * bound) - bound
    tokenizer = _tokenizer(base.folder)
    groups = [(i, sign, e.positive_prompts if sign > 0 else e.negative_prompts)
              for i, e in enumerate(entries) if e.positive_prompts for sign in (1, -1)]
    groups = [(i, sign, list(p)) for i, sign, p in groups if p]
    total = sum(len(p) for _, _, p in groups)
    done = 0
    yield Progress(STAGE, 0, total, "", "prompts", f"setting routers from prompts ({mode})")
    if mode == "cheap_embed":
        embed = base.checkpoint.get_tensor(base.embedding).float()
        run = _EmbeddingRun(embed)
    else:
        run = _HiddenRun(base, device, last_token=mode != "hidden_avg")
    try:
        vectors = torch.zeros(shape)
        for index, sign, prompts in groups:
            acc = None
            for start in range(0, len(prompts), batch_size):
                check_cancel(cancel)
                batch = [_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
                part = run.sum(batch)
                acc = part if acc is None else acc + part
                done += len(batch)
                yield Progress(STAGE, done, total, entries[index].source_model, "prompts")
            assert acc is not None
            vec = normalised(acc) if mode == "cheap_embed" else acc / len(prompts)
            vectors[:, index] += sign * vec.expand(base.num_layers, -1)
        for i, e in enumerate(entries):
            if e.positive_prompts:
                vectors[:, i] = normalised(vectors[:, i])
        return vectors
    finally:
        run.close()


def _tokenizer(folder: Path) -> Any:
    from merge_studio.core.arch.hf import require_transformers

    transformers = require_transformers("setting MoE routers from prompts")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - transformers' words on a folder without a usable tokenizer
        raise MergeStudioError(
            f"cannot load the base model's tokenizer from {folder}: {type(exc).__name__}: {exc}",
            hint="the hidden and cheap_embed gate modes tokenize the prompts; give a base folder with a "
            "tokenizer, or use gate_mode: random",
        ) from exc


def _ids(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's token ids, after the beginning-of-sequence token (as mergekit-moe tokenizes)."""
    ids = list(tokenizer((tokenizer.bos_token or "") + prompt, add_special_tokens=False)["input_ids"])
    if not ids:
        raise MergeStudioError(f"the prompt {prompt!r} has no tokens", hint="remove empty prompts")
    return ids


class _EmbeddingRun:
    def __init__(self, embed: torch.Tensor) -> None:
        self.embed = embed

    def sum(self, batch: list[list[int]]) -> torch.Tensor:
        ids = torch.tensor([i for ids in batch for i in ids])
        if int(ids.max()) >= self.embed.shape[0]:
            raise MergeStudioError("the tokenizer gives ids beyond the base model's embedding rows")
        return self.embed[ids].sum(0)

    def close(self) -> None:
        self.embed = torch.empty(0)


class _HiddenRun:
    """The base model in memory; sums per layer of the chosen token states of a batch of prompts."""

    def __init__(self, base: GateBase, device: str, *, last_token: bool) -> None:
        from merge_studio.core.arch.bind import bind_state_dict
        from merge_studio.core.arch.hf import build_hf_module
        from merge_studio.core.arch.spec import ArchSpec
        from merge_studio.core.device import resolve_device

        self.device = resolve_device(device)
        self.last_token = last_token
        ck = base.checkpoint
        floats = [i for i in ck.infos.values() if i.dtype.is_floating_point]
        own = max({i.dtype for i in floats}, key=lambda d: sum(x.numel for x in floats if x.dtype == d))
        dtype = torch.float32 if sum(i.numel for i in floats) * 4 <= FLOAT32_LIMIT else own
        # Built uninitialised on the CPU (untouched pages cost no memory), so the rotary
        # buffers are computed; the weights are then assigned, never copied.
        module = build_hf_module(ArchSpec("hf", str(base.folder)), device="cpu", initialise=False)
        state = {n: ck.get_tensor(n).to(dtype=dtype if ck.info(n).is_float else None) for n in ck.keys()}
        try:
            self.model = bind_state_dict(module, state, arch=f"hf:{base.folder}", assign=True).to(self.device)
        except ArchitectureError as exc:
            raise ArchitectureError(f"cannot run the base model to set the routers: {exc.message}",
                                    hint="use gate_mode: cheap_embed or random") from exc
        self.model.eval()

    def sum(self, batch: list[list[int]]) -> torch.Tensor:
        longest = max(len(ids) for ids in batch)
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             output_hidden_states=True, use_cache=False)
        # hidden_states[l] enters layer l (the last one is after the final norm: not a router's input)
        states = torch.stack(out.hidden_states[:-1]).float().cpu()  # (layers, batch, tokens, hidden)
        if self.last_token:
            last = mask.sum(1) - 1
            picked = states[:, torch.arange(len(batch)), last]  # (layers, batch, hidden)
        else:
            m = mask.to(states.dtype)[None, :, :, None]
            picked = (states * m).sum(2) / m.sum(2)
        return picked.sum(1)

    def close(self) -> None:
        self.model = None
