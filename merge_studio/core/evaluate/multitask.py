"""A multi-task merging benchmark built from scikit-learn's digits, with no downloads.

In the spirit of FusionBench's eight-task CLIP table: several classification tasks
(rotated, inverted, mirrored, shifted … digits; label subsets are offered too) share
one 10-way head; one base MLP is pre-trained on plain digits (like CLIP, it is weak on
the tasks: about 17% on average) and one copy is fine-tuned per task (about 95% on its
own task, the head frozen as FusionBench freezes CLIP's). A merge is judged by its accuracy on every task's test split.

Each task's data is written as a tensors file (``train_inputs`` … ``test_targets``)
that recipes can name as a model's own data, so RegMean, AdaMerging and a coefficient
search run on the task data through the ordinary engine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from merge_studio.core.evaluate.data import TensorSplit, load_data

DEFAULT_TASKS = ("rotated", "inverted", "mirrored", "shifted", "upside_down", "transposed")
DEFAULT_ARCH = "zoo:mlp?hidden=256,256"


@dataclass(frozen=True)
class DigitTask:
    """One task: its name, what it is, and its train/test splits (flat 64-feature inputs)."""

    name: str
    description: str
    train: TensorSplit
    test: TensorSplit


_TRANSFORMS: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor], tuple[int, ...] | None]] = {
    "digits_0_4": ("digits 0–4 only", lambda x: x, (0, 1, 2, 3, 4)),
    "digits_5_9": ("digits 5–9 only", lambda x: x, (5, 6, 7, 8, 9)),
    "rotated": ("images turned 90°", lambda x: torch.rot90(x, 1, dims=(-2, -1)), None),
    "inverted": ("ink and paper swapped (1 − x)", lambda x: 1.0 - x, None),
    "mirrored": ("images flipped left–right", lambda x: torch.flip(x, dims=(-1,)), None),
    "shifted": ("images moved 2 pixels right and down", lambda x: torch.roll(x, (2, 2), dims=(-2, -1)), None),
    "upside_down": ("images turned 180°", lambda x: torch.rot90(x, 2, dims=(-2, -1)), None),
    "transposed": ("images mirrored across the diagonal", lambda x: x.transpose(-2, -1), None),
}


def _task_split(split: TensorSplit, name: str) -> TensorSplit:
    _, transform, labels = _TRANSFORMS[name]
    x, y = split.inputs, split.targets
    if labels is not None:
        keep = torch.isin(y, torch.tensor(labels))
        x, y = x[keep], y[keep]
    images = transform(x.reshape(-1, 8, 8))
    return TensorSplit(images.reshape(len(images), 64).contiguous(), y.contiguous())


def make_digit_tasks(names: Sequence[str] = DEFAULT_TASKS, *, seed: int = 0) -> list[DigitTask]:
    """The named tasks from one shuffled digits split (every task's test images are unseen)."""
    unknown = [n for n in names if n not in _TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown digit tasks {unknown}; known: {', '.join(_TRANSFORMS)}")
    data = load_data({"source": "digits", "layout": "flat", "seed": seed})
    return [DigitTask(n, _TRANSFORMS[n][0], _task_split(data.train, n), _task_split(data.test, n)) for n in names]


def train_steps(module: nn.Module, split: TensorSplit, *, steps: int, lr: float = 1e-3, batch: int = 64,
                seed: int = 0, label_smoothing: float = 0.0) -> nn.Module:
    """A few Adam steps on random batches (one intra-op thread: tiny ops gain nothing from more)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module.train()
        for _ in range(steps):
            idx = torch.randint(0, len(split), (batch,), generator=gen)
            loss = nn.functional.cross_entropy(module(split.inputs[idx]), split.targets[idx],
                                               label_smoothing=label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
        module.eval()
    return module


@torch.no_grad()
def task_accuracies(model: nn.Module, tasks: Sequence[DigitTask]) -> dict[str, float]:
    """Test accuracy of ``model`` on every task, plus their mean under ``"average"``."""
    model.eval()
    acc = {t.name: float((model(t.test.inputs).argmax(1) == t.test.targets).float().mean()) for t in tasks}
    acc["average"] = sum(acc.values()) / len(tasks)
    return acc


@dataclass(frozen=True)
class MultiTaskSuite:
    """Checkpoints and data files of the benchmark, as written to a folder."""

    folder: Path
    arch: str
    base: Path
    models: tuple[Path, ...]
    data: tuple[Path, ...]
    tasks: tuple[DigitTask, ...]

    def module(self, state: Mapping[str, torch.Tensor] | Path) -> nn.Module:
        from safetensors.torch import load_file

        from merge_studio.core.arch import build_module

        sd = load_file(str(state)) if isinstance(state, Path) else dict(state)
        return build_module(self.arch, {k: v.float() for k, v in sd.items()}).eval()

    def accuracies(self, state: Mapping[str, torch.Tensor] | Path) -> dict[str, float]:
        return task_accuracies(self.module(state), self.tasks)


def _save(module: nn.Module, path: Path, arch: str, extra: dict[str, str]) -> None:
    from merge_studio.core.arch import arch_metadata

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp),
              metadata={**arch_metadata(arch), **extra})
    tmp.replace(path)


def build_suite(
    folder: Path,
    names: Sequence[str] = DEFAULT_TASKS,
    *,
    arch: str = DEFAULT_ARCH,
    base_steps: int = 200,
    finetune_steps: int = 300,
    lr: float = 1e-3,
    freeze_head: bool = True,
    seed: int = 0,
) -> MultiTaskSuite:
    """Pre-train the base on plain digits, fine-tune one copy per task, write all to ``folder``.

    As in FusionBench, where CLIP's classification heads stay frozen while the image
    encoder is fine-tuned, ``freeze_head`` keeps the shared head of the base: every
    fine-tune changes only the hidden layers.

    Written once per set of settings (a manifest remembers them); later calls reuse the files.
    """
    from merge_studio.core.arch import build_module

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = make_digit_tasks(names, seed=seed)
    settings = {"names": list(names), "arch": arch, "base_steps": base_steps, "finetune_steps": finetune_steps,
                "lr": lr, "freeze_head": freeze_head, "seed": seed, "version": 2}
    manifest = folder / "suite.json"
    base = folder / "base.safetensors"
    models = tuple(folder / f"{n}.safetensors" for n in names)
    data = tuple(folder / f"{n}.data.safetensors" for n in names)
    fresh = manifest.is_file() and json.loads(manifest.read_text()) == settings
    if not (fresh and all(p.is_file() for p in (base, *models, *data))):
        plain = load_data({"source": "digits", "layout": "flat", "seed": seed})
        torch.manual_seed(seed)
        base_module = train_steps(build_module(arch), plain.train, steps=base_steps, lr=lr, seed=seed)
        _save(base_module, base, arch, {"merge_studio.task": "base"})
        for i, task in enumerate(tasks):
            tuned = build_module(arch)
            tuned.load_state_dict(base_module.state_dict())
            if freeze_head:
                tuned.head.requires_grad_(False)
            train_steps(tuned, task.train, steps=finetune_steps, lr=lr, seed=seed + 1 + i)
            _save(tuned, models[i], arch, {"merge_studio.task": task.name})
            tensors = {"train_inputs": task.train.inputs, "train_targets": task.train.targets,
                       "test_inputs": task.test.inputs, "test_targets": task.test.targets}
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(data[i]))
        manifest.write_text(json.dumps(settings))
    return MultiTaskSuite(folder, arch, base, models, data, tuple(tasks))
