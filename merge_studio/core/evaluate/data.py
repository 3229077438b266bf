"""Evaluation data: the built-in digits set, a tensors file, a user's dataset factory, or text.

Text (a ``.txt`` file, a folder of them, a JSONL with a ``text`` field) is for causal
language models: tokenised with the model folder's tokenizer and cut into token
windows (:mod:`merge_studio.core.evaluate.text`).

Everything is materialised as two tensors per split (inputs, targets) once, so an
interpolation sweep of 25 points evaluates the same on-device tensors 50 times
instead of re-creating data loaders. Files are read without running code
(``weights_only=True``, safetensors, ``allow_pickle=False``); only a factory the
user names explicitly (``file.py:make_dataset``) executes Python.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from merge_studio.errors import MergeStudioError

Task = Literal["classification", "regression", "language_modeling"]
Layout = Literal["auto", "image", "flat"]
SPLITS = ("train", "test")
TENSOR_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz")


class DataError(MergeStudioError):
    """Evaluation data cannot be loaded or does not fit the model."""


class DataSpec(BaseModel):
    """Which data to evaluate on, as chosen in the GUI or written in a recipe's ``data:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        "digits",
        description="'digits' (built in), a .safetensors/.pt/.npz file with inputs and targets, "
        "a Python file with a factory: 'my_data.py:make_dataset', or text for language models: "
        "a .txt file, a folder of .txt files or a .jsonl with a 'text' field.",
    )
    task: Task = "classification"
    layout: Layout = Field("auto", description="Images (N, C, H, W) or flat vectors; auto asks the model.")
    batch_size: int = Field(256, ge=1)
    max_examples: int | None = Field(None, ge=1, description="Keep at most this many examples per split.")
    seed: int = 0
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    tokenizer: str | None = Field(
        None, description="Text only: the folder whose tokenizer cuts the text into tokens (default: the model's)."
    )
    seq_len: int = Field(512, ge=2, le=1_000_000, description="Text only: tokens per window (at most the model's context).")
    max_tokens: int = Field(200_000, ge=2, description="Text only: the token budget; text past it is not read.")


TEXT_BATCH_SIZE = 8  # windows per batch for language models when the user sets none


class TensorSplit(Dataset):
    """One split held as two tensors; indexable like a ``TensorDataset``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if len(inputs) != len(targets):
            raise DataError(f"{len(inputs)} inputs but {len(targets)} targets", hint="give one target per input")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.targets[index]

    def to(self, device: torch.device | str) -> TensorSplit:
        """The same split on ``device`` (no copy when it is already there)."""
        return TensorSplit(self.inputs.to(device), self.targets.to(device))

    def head(self, n: int | None) -> TensorSplit:
        """The first ``n`` examples (the splits are shuffled once when made)."""
        return self if n is None or n >= len(self) else TensorSplit(self.inputs[:n], self.targets[:n])

    def batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views of consecutive batches (no copy)."""
        return [(self.inputs[i : i + batch_size], self.targets[i : i + batch_size]) for i in range(0, len(self), batch_size)]


@dataclass(frozen=True)
class EvalData:
    """Train and test splits, the task, and where they came from."""

    train: TensorSplit
    test: TensorSplit
    task: Task = "classification"
    source: str = "digits"
    layout: str = "flat"
    batch_size: int = 256
    num_classes: int | None = None
    tokens: int | None = None  # text: the tokens read (train and test are the same windows)
    _on_device: dict[str, EvalData] = field(default_factory=dict, compare=False, repr=False)

    def split(self, name: str) -> TensorSplit:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}", hint="use 'train' or 'test'")
        return self.train if name == "train" else self.test

    def to(self, device: torch.device | str) -> EvalData:
        """The data on ``device``, copied once and remembered."""
        key = str(torch.device(device))
        if str(self.train.inputs.device) == key:
            return self
        if key not in self._on_device:
            self._on_device[key] = replace(self, train=self.train.to(device), test=self.test.to(device), _on_device={})
        return self._on_device[key]

    @property
    def eval_batch_size(self) -> int:
        """Examples per forward pass when only evaluating: large for small inputs, as set for token windows."""
        return self.batch_size if self.task == "language_modeling" else max(1024, self.batch_size)

    def describe(self) -> str:
        if self.tokens is not None:
            width = self.test.inputs.shape[1] if self.test.inputs.ndim == 2 else 0
            return f"{Path(self.source).name}: {self.tokens:,} tokens in {len(self.test)} windows of {width}"
        return f"{self.source}: {len(self.train)} train / {len(self.test)} test examples ({self.task}, {self.layout})"


# --- layout -----------------------------------------------------------------------------
def module_input_layout(module: nn.Module) -> Literal["image", "flat"]:
    """Whether a module wants images or flat vectors, from its first weight layer."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d | nn.Conv1d):
            return "image"
        if isinstance(sub, nn.Linear | nn.Embedding):
            return "flat"
    return "flat"


def _apply_layout(inputs: torch.Tensor, layout: str, *, image_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if layout == "flat":
        return inputs.reshape(len(inputs), -1) if inputs.ndim > 2 else inputs
    if layout == "image":
        if inputs.ndim == 2 and image_shape is not None:
            return inputs.reshape(len(inputs), *image_shape)
        if inputs.ndim == 3:  # (N, H, W) -> one channel
            return inputs.unsqueeze(1)
        return inputs
    return inputs


# --- sources --------------------------------------------------------------------------
def _split_indices(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    n_test = max(1, int(round(n * test_fraction)))
    if n_test >= n:
        raise DataError(f"only {n} examples; cannot keep {n_test} for testing", hint="lower test_fraction or add data")
    return order[n_test:], order[:n_test]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8×8 digit images scaled to [0, 1], read once per process.

    The CSV that ships inside scikit-learn is read directly when it is where we
    expect it: importing ``sklearn.datasets`` costs seconds, the file milliseconds.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        csv = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            try:
                table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
            except (OSError, ValueError):
                break
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8) / 16.0, table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float32) / 16.0, np.asarray(bunch.target, dtype=np.int64)


def _digits(spec: DataSpec, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images_np, targets_np = _digits_arrays()
    images = torch.from_numpy(images_np.copy())  # (N, 8, 8)
    targets = torch.from_numpy(targets_np.copy())
    inputs = images.unsqueeze(1) if layout == "image" else images.reshape(len(images), 64)
    train, test = _split_indices(len(inputs), spec.test_fraction, spec.seed)
    return inputs[train], targets[train], inputs[test], targets[test]


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist", hint="choose another file") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile or corrupt file is the user's to see
        raise DataError(
            f"cannot read data file {path.name}: {exc}",
            hint="save a dict of tensors {'inputs': ..., 'targets': ...} with torch.save, safetensors or numpy.savez",
        ) from exc
    if isinstance(loaded, dict):
        return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if isinstance(loaded, list | tuple) and len(loaded) == 2 and all(isinstance(t, torch.Tensor) for t in loaded):
        return {"inputs": loaded[0], "targets": loaded[1]}
    raise DataError(f"{path.name} holds a {type(loaded).__name__}, not tensors", hint="save {'inputs': x, 'targets': y}")


def _tensor_file(spec: DataSpec, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    tensors = _read_tensor_file(path)
    if {"train_inputs", "test_inputs"} <= tensors.keys():
        parts = []
        for split in SPLITS:
            x = tensors[f"{split}_inputs"]
            y = tensors.get(f"{split}_targets")
            x, y = _lm_targets(spec, x, y, path)
            parts += [x, y]
        return parts[0], parts[1], parts[2], parts[3]
    if "inputs" not in tensors:
        raise DataError(
            f"{path.name} has no tensor named 'inputs' (it has: {', '.join(sorted(tensors)) or 'nothing'})",
            hint="name the tensors 'inputs' and 'targets', or 'train_inputs', 'train_targets', 'test_inputs', 'test_targets'",
        )
    x, y = _lm_targets(spec, tensors["inputs"], tensors.get("targets"), path)
    train, test = _split_indices(len(x), spec.test_fraction, spec.seed)
    return x[train], y[train], x[test], y[test]


def _lm_targets(spec: DataSpec, x: torch.Tensor, y: torch.Tensor | None, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets as given, or for language modelling the inputs shifted by one token."""
    if y is not None:
        return x, y
    if spec.task == "language_modeling" and x.ndim == 2:
        return x[:, :-1], x[:, 1:]
    raise DataError(f"{path.name} has inputs but no targets", hint="add a 'targets' tensor")


def _load_factory(source: str) -> Any:
    file_part, _, func_name = source.partition(":")
    func_name = func_name or "make_dataset"
    path = Path(file_part).expanduser()
    if not path.is_file():
        raise DataError(f"dataset factory file {path} does not exist", hint="write 'path/to/file.py:make_dataset'")
    module_name = f"_merge_studio_data_{abs(hash(str(path.resolve())))}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise DataError(f"cannot import {path}", hint="give a Python file")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code; report it with the file name
        sys.modules.pop(module_name, None)
        raise DataError(f"importing {path.name} failed: {type(exc).__name__}: {exc}", hint="fix the file and try again") from exc
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise DataError(f"{path.name} has no function {func_name!r}", hint=f"define {func_name}() returning a Dataset")
    try:
        return factory()
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path.name}:{func_name}() failed: {type(exc).__name__}: {exc}", hint="fix the factory") from exc


def _materialise(dataset: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, TensorSplit):
        return dataset.inputs, dataset.targets
    if not isinstance(dataset, Dataset) and not hasattr(dataset, "__getitem__"):
        raise DataError(f"the factory returned a {type(dataset).__name__} for {name}", hint="return a torch Dataset")
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=512, shuffle=False):
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise DataError(f"{name} items are not (input, target) pairs", hint="make __getitem__ return (x, y)")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise DataError(f"the {name} dataset is empty", hint="return at least one example")
    return torch.cat(xs), torch.cat(ys)


def _factory(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    made = _load_factory(spec.source)
    if isinstance(made, Sequence) and not isinstance(made, Dataset) and len(made) == 2:
        x_tr, y_tr = _materialise(made[0], "train")
        x_te, y_te = _materialise(made[1], "test")
        return x_tr, y_tr, x_te, y_te
    x, y = _materialise(made, "dataset")
    train, test = _split_indices(len(x), spec.test_fraction, spec.seed)
    return x[train], y[train], x[test], y[test]


def source_kind(source: str) -> Literal["digits", "file", "factory", "text"]:
    """What a data source string names."""
    from merge_studio.core.evaluate.text import is_text_source

    if source.strip().lower() == "digits":
        return "digits"
    if is_text_source(source):
        return "text"
    path_part = source.split(":", 1)[0] if ".py:" in source or source.endswith(".py") else source
    if path_part.endswith(".py"):
        return "factory"
    return "file"


# --- entry point --------------------------------------------------------------------------
def load_data(spec: DataSpec | dict[str, Any] | str | None = None, *, for_module: nn.Module | None = None) -> EvalData:
    """Load the data a :class:`DataSpec` names, laid out for ``for_module`` when layout is auto."""
    if spec is None:
        spec = DataSpec()
    elif isinstance(spec, str):
        spec = DataSpec(source=spec)
    elif isinstance(spec, dict):
        spec = DataSpec.model_validate(spec)
    kind = source_kind(spec.source)
    if kind == "text":
        return _text_data(spec, for_module)
    layout = spec.layout
    if layout == "auto":
        layout = module_input_layout(for_module) if for_module is not None else "flat"
    if kind == "digits":
        x_tr, y_tr, x_te, y_te = _digits(spec, layout)
    elif kind == "factory":
        x_tr, y_tr, x_te, y_te = _factory(spec)
    else:
        path = Path(spec.source).expanduser()
        if path.suffix.lower() not in TENSOR_SUFFIXES:
            raise DataError(
                f"cannot read data source {spec.source!r}",
                hint="use 'digits', a .safetensors/.pt/.npz file, or 'file.py:make_dataset'",
            )
        x_tr, y_tr, x_te, y_te = _tensor_file(spec, path)
    if kind != "digits":
        x_tr, x_te = _apply_layout(x_tr, layout), _apply_layout(x_te, layout)
    x_tr, x_te = _as_inputs(x_tr, spec.task), _as_inputs(x_te, spec.task)
    y_tr, y_te = _as_targets(y_tr, spec.task), _as_targets(y_te, spec.task)
    train = TensorSplit(x_tr, y_tr).head(spec.max_examples)
    test = TensorSplit(x_te, y_te).head(spec.max_examples)
    num_classes = None
    if spec.task == "classification":
        num_classes = int(max(int(y_tr.max()), int(y_te.max())) + 1) if len(y_tr) and len(y_te) else None
    return EvalData(train=train, test=test, task=spec.task, source=spec.source, layout=layout,
                    batch_size=spec.batch_size, num_classes=num_classes)


def _text_data(spec: DataSpec, module: nn.Module | None) -> EvalData:
    """Token windows of a text source; every window is in both splits (there is no training here)."""
    from merge_studio.core.evaluate.text import text_windows

    if "task" in spec.model_fields_set and spec.task != "language_modeling":
        raise DataError(f"{Path(spec.source).name} is text, which only language models are evaluated on",
                        hint="use task language_modeling (the default for text)")
    inputs, targets, count = text_windows(spec.source, spec.tokenizer, seq_len=spec.seq_len,
                                          max_tokens=spec.max_tokens, module=module)
    windows = TensorSplit(inputs, targets).head(spec.max_examples)
    batch = spec.batch_size if "batch_size" in spec.model_fields_set else TEXT_BATCH_SIZE
    return EvalData(train=windows, test=windows, task="language_modeling", source=spec.source, layout="tokens",
                    batch_size=batch, tokens=count)


def _as_inputs(x: torch.Tensor, task: str) -> torch.Tensor:
    """Token ids stay integers for language models; everything else becomes float32."""
    if task == "language_modeling" and not x.is_floating_point():
        return x.long()
    return x if x.dtype == torch.float32 else x.float()


def _as_targets(y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regression":
        return y.float()
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise DataError(f"{task} targets must be class indices, got fractional numbers", hint="use task 'regression'")
    return y.long()


def digits_spec(**overrides: Any) -> DataSpec:
    """The built-in digits data with optional overrides (a convenience for the demo and tests)."""
    return DataSpec(**{"source": "digits", **overrides})


__all__ = [
    "DataError",
    "DataSpec",
    "EvalData",
    "TensorSplit",
    "load_data",
    "module_input_layout",
    "source_kind",
    "digits_spec",
]
