"""Tiny real checkpoints on disk, in every format the readers accept, and hostile ones."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn


class TinyNet(nn.Module):
    """Embedding, two blocks and a head: enough structure for module trees and shards."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, width)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for _ in range(2))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def tiny_state_dict(seed: int = 0, width: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in TinyNet(width).state_dict().items()}


@pytest.fixture
def state_dict() -> dict[str, torch.Tensor]:
    return tiny_state_dict()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def write_sharded(folder: Path, tensors: dict[str, torch.Tensor], shards: int = 2, kind: str = "safetensors") -> Path:
    """A Hugging Face style folder: shards plus ``model.safetensors.index.json`` (or the .bin pair)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        part = {k: tensors[k] for k in names[i * per:(i + 1) * per]}
        if kind == "safetensors":
            shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(folder / shard, part)
        else:
            shard = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            torch.save(part, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return folder


class PlantMarker:
    """Unpickling this object would create ``marker`` (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (self.marker, "w"))


class RunShell:
    """Unpickling this object would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, (f"touch '{self.marker}'",))


class HugeByteArray:
    """Unpickling this would allocate and zero-fill ``size`` bytes (the weights-only
    unpickler allows ``bytearray``): a memory bomb a few bytes long."""

    def __init__(self, size: int = 2**40) -> None:
        self.size = size

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (bytearray, (self.size,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Where a successful attack would leave a file; tests assert it never appears."""
    return tmp_path / "PWNED"


def hostile_state_dict(marker: Path) -> dict[str, object]:
    return {"weight": torch.ones(2, 2), "payload": PlantMarker(marker)}


def write_legacy_pickle(path: Path, obj: object) -> Path:
    """A raw pickle (what old ``pytorch_model.bin`` files and hand-made ones are)."""
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def rewrite_zip(src: Path, dst: Path, change: dict[str, bytes | None] | None = None,
                compress: bool = False) -> Path:
    """Copy an archive, replacing (or with ``None`` dropping) records, optionally compressing them."""
    change = change or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = zin.namelist()
        for name in names:
            data = change.get(name, zin.read(name)) if name in change else zin.read(name)
            if data is None:
                continue
            zout.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
        for name, data in change.items():
            if name not in names and data is not None:
                zout.writestr(name, data)
    return dst


def torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Scaled(nn.Module):
    """A small exportable model with a parameter, a buffer, a non-persistent buffer and a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("offset", torch.full((4,), 0.5), persistent=False)
        self.scale = torch.tensor([2.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x)) * self.scale + self.offset


@pytest.fixture(scope="session")
def exported_program_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``.pt2`` written by ``torch.export.save`` (built once per test session: export is slow)."""
    torch.manual_seed(0)
    model = Scaled().eval()
    program = torch.export.export(model, (torch.randn(2, 3),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path_factory.mktemp("pt2") / "scaled.pt2"
    torch.export.save(program, str(path))
    return path


def pt2_record(path: Path, suffix: str) -> str:
    """The full archive name of the record ending with ``suffix``."""
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if n.endswith(suffix))
