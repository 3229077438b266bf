"""The demo set: small models trained on digits from different seeds, cached per user.

``merge-studio --demo`` needs something to merge and look at without any download:
three MLPs (the zoo's default 64-512-512-512-10, so re-basin can align them) and two
ResNet-20s (BatchNorm, so the BN-reset curve has something to show), each trained
from its own seed. The ResNets are trained with SGD and weight decay, as in Git
Re-Basin: weight matching compares weights, and after a short Adam run without decay
a ResNet's conv weights are still mostly its random initialisation, so two seeds'
weights share too little for the matching to find (see :class:`DemoRecipe`).
Training happens once: about 25 s on an idle two-core machine, several times that
on a busy one (measured 241 s at a load average of 14); its progress is weighted by
each model's measured cost, so the time left is meaningful. The files live in the
user data folder under a version key, so a newer demo recipe retrains instead of
reusing stale files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from merge_studio.core.user_dirs import user_data_dir
from merge_studio.core.progress import CancelToken, Progress, check_cancel, drive
from merge_studio.errors import OutputError

DEMO_VERSION = "digits-v2"  # v2: ResNets trained with SGD + weight decay
MANIFEST = "demo.json"


@dataclass(frozen=True)
class DemoRecipe:
    """How one demo model is trained (one-cycle schedule to ``lr``).

    ``optimizer`` is ``"adam"``, ``"adamw"`` (decoupled decay) or ``"sgd"`` (Nesterov
    momentum 0.9); ``weight_decay`` applies to every parameter. Decay matters for re-basin on BatchNorm networks: a
    conv followed by BN computes the same function at any scale, so decay shrinks the
    random initial weights away while training rewrites them. Measured on the demo
    ResNet-20 after 8 Adam epochs without decay, ‖W − W_init‖/‖W‖ was only 0.3-0.5 and
    weight matching agreed with activation matching on ~5% of units (barrier 62% of
    naive, while activation matching reached 19%: the width was not the limit); with
    SGD and decay it is ~1.2 and the weight-matched barrier is 7% of naive.
    """

    name: str
    arch: str
    seed: int
    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    cost: float = 1.0  # time an epoch takes, relative to an MLP epoch (measured: a ResNet-20 epoch ≈ 4.5)


DEMO_RECIPES: tuple[DemoRecipe, ...] = (
    DemoRecipe("mlp_seed0", "zoo:mlp", 0, epochs=12, lr=1e-3),
    DemoRecipe("mlp_seed1", "zoo:mlp", 1, epochs=12, lr=1e-3),
    DemoRecipe("mlp_seed2", "zoo:mlp", 2, epochs=12, lr=1e-3),
    DemoRecipe("resnet20_seed0", "zoo:resnet20?width=1", 0, epochs=12, lr=0.1,
               optimizer="sgd", weight_decay=1e-2, cost=4.5),
    DemoRecipe("resnet20_seed1", "zoo:resnet20?width=1", 1, epochs=12, lr=0.1,
               optimizer="sgd", weight_decay=1e-2, cost=4.5),
)


@dataclass(frozen=True)
class DemoModel:
    name: str
    path: Path
    arch: str
    seed: int
    test_accuracy: float


@dataclass(frozen=True)
class DemoSet:
    """The demo's models, where they are, and whether they came from the cache."""

    folder: Path
    models: tuple[DemoModel, ...]
    from_cache: bool
    seconds: float

    def paths(self, arch_prefix: str | None = None) -> list[Path]:
        """Paths of all models, or of those whose arch starts with ``arch_prefix`` (``zoo:mlp``)."""
        return [m.path for m in self.models if arch_prefix is None or m.arch.startswith(arch_prefix)]


def demo_folder() -> Path:
    return user_data_dir() / "demo" / DEMO_VERSION


def _read_manifest(folder: Path) -> tuple[DemoModel, ...] | None:
    """The cached models, or ``None`` when the cache is absent, stale or incomplete."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if data.get("version") != DEMO_VERSION:
            return None
        models = tuple(
            DemoModel(m["name"], folder / m["file"], m["arch"], int(m["seed"]), float(m["test_accuracy"]))
            for m in data["models"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if [m.name for m in models] != [r.name for r in DEMO_RECIPES] or not all(m.path.is_file() for m in models):
        return None
    return models


def train_demo_model(recipe: DemoRecipe, cancel: CancelToken | None = None) -> Generator[Progress, None, tuple[nn.Module, float]]:
    from merge_studio.core.arch import build_module
    from merge_studio.core.evaluate.data import load_data
    from merge_studio.core.evaluate.loop import evaluate

    torch.manual_seed(recipe.seed)
    module = build_module(recipe.arch)
    data = load_data({"source": "digits"}, for_module=module)  # same split for every model
    gen = torch.Generator().manual_seed(1000 + recipe.seed)
    steps_per_epoch = -(-len(data.train) // recipe.batch_size)
    opt = _optimizer(module, recipe)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    for epoch in range(recipe.epochs):
        module.train()
        order = torch.randperm(len(data.train), generator=gen)
        for start in range(0, len(order), recipe.batch_size):
            check_cancel(cancel)
            idx = order[start : start + recipe.batch_size]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(module(data.train.inputs[idx]), data.train.targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        yield Progress("train", epoch + 1, recipe.epochs, current=recipe.name, unit="epochs")
    module.eval()
    return module, evaluate(module, data.test, device="cpu").accuracy or 0.0


def _optimizer(module: nn.Module, recipe: DemoRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (expected 'adam', 'adamw' or 'sgd')")


def _save(module: nn.Module, path: Path, recipe: DemoRecipe, accuracy: float) -> None:
    from safetensors.torch import save_file

    from merge_studio.core.arch import arch_metadata

    metadata = {
        **arch_metadata(recipe.arch),
        "merge_studio.demo": DEMO_VERSION,
        "merge_studio.seed": str(recipe.seed),
        "merge_studio.test_accuracy": f"{accuracy:.4f}",
        "merge_studio.data": "digits",
    }
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the demo model {path}: {exc.strerror or exc}",
                          hint="set MERGE_STUDIO_DATA_DIR to a folder you can write to") from exc


def iter_demo_models(
    folder: Path | None = None, *, cancel: CancelToken | None = None, force: bool = False, threads: int | None = 1
) -> Generator[Progress, None, DemoSet]:
    """Train the demo models (or find them cached) and return where they are.

    Training uses ``threads`` intra-op CPU threads (restored afterwards). One is the
    default: these models are small, so a second thread gains little on an idle
    machine, while on a busy one oversubscribed threads made training ten times
    slower in our measurements (30 s with one thread against 265 s with two).
    """
    start = time.perf_counter()
    folder = Path(folder) if folder is not None else demo_folder()
    cached = None if force else _read_manifest(folder)
    if cached is not None:
        return DemoSet(folder, cached, from_cache=True, seconds=time.perf_counter() - start)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        models = yield from _train_all(folder, cancel)
    finally:
        torch.set_num_threads(saved_threads)
    manifest = {
        "version": DEMO_VERSION,
        "models": [{"name": m.name, "file": m.path.name, "arch": m.arch, "seed": m.seed, "test_accuracy": m.test_accuracy}
                   for m in models],
        "seconds": round(time.perf_counter() - start, 2),
    }
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(folder / MANIFEST)  # written last: a half-trained set is never mistaken for a cache
    return DemoSet(folder, tuple(models), from_cache=False, seconds=time.perf_counter() - start)


def _train_all(folder: Path, cancel: CancelToken | None) -> Generator[Progress, None, list[DemoModel]]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the demo folder {folder}: {exc.strerror or exc}",
                          hint="set MERGE_STUDIO_DATA_DIR to a folder you can write to") from exc
    # progress in tenths of an MLP epoch's time, so the fraction done tracks the time spent
    total = sum(round(10 * r.epochs * r.cost) for r in DEMO_RECIPES)
    done = 0
    models: list[DemoModel] = []
    for recipe in DEMO_RECIPES:
        job = train_demo_model(recipe, cancel)
        try:
            while True:
                p = next(job)
                yield Progress("demo", done + round(10 * p.done * recipe.cost), total, current=recipe.name,
                               unit="work", message=f"training {recipe.name} ({recipe.arch})")
        except StopIteration as stop:
            module, accuracy = stop.value
        finally:
            job.close()
        done += round(10 * recipe.epochs * recipe.cost)
        path = folder / f"{recipe.name}.safetensors"
        _save(module, path, recipe, accuracy)
        models.append(DemoModel(recipe.name, path, recipe.arch, recipe.seed, accuracy))
    return models


def ensure_demo_models(
    folder: Path | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
    force: bool = False,
    threads: int | None = 1,
) -> DemoSet:
    """Callback variant of :func:`iter_demo_models` for front ends that just want the set."""
    return drive(iter_demo_models(folder, cancel=cancel, force=force, threads=threads), on_progress)
