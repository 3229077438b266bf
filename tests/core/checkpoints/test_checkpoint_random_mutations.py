"""Randomly damaged files (fixed seeds, ~200 mutations each) only ever raise CheckpointError."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from merge_studio.core.checkpoints import open_checkpoint
from merge_studio.errors import CheckpointError
from tests.core.checkpoints.conftest import write_safetensors

MUTATIONS = 200


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, overwrite, insert, delete or truncate: the damage real files suffer."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "byte", "insert", "delete", "truncate", "copy"])
        pos = rng.randrange(len(buf)) if buf else 0
        if kind == "flip" and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif kind == "byte" and buf:
            buf[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("{"), ord('"'), rng.randrange(256)])
        elif kind == "insert":
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            del buf[pos:pos + rng.randint(1, 16)]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "copy" and buf:
            src = rng.randrange(len(buf))
            chunk = buf[src:src + rng.randint(1, 32)]
            buf[pos:pos + len(chunk)] = chunk
    return bytes(buf)


def open_and_read_everything(path: Path) -> None:
    with open_checkpoint(path) as ck:
        ck.summary()
        for name in ck.keys():
            ck.get_tensor(name)
            ck.get_flat(name, 0, 3)


def run_mutations(original: Path, seed: int) -> tuple[int, int]:
    """Returns (refused, opened); any exception other than CheckpointError fails the test."""
    rng = random.Random(seed)
    data = original.read_bytes()
    target = original.with_name("mutant" + original.suffix)
    refused = opened = 0
    for i in range(MUTATIONS):
        target.write_bytes(mutate(data, rng))
        try:
            open_and_read_everything(target)
            opened += 1
        except CheckpointError as exc:
            assert target.name in str(exc) or str(target.parent) in str(exc), f"mutation {i}: {exc}"
            refused += 1
    return refused, opened


def small_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(4), "steps": torch.arange(5),
            "b.half": torch.randn(2, 2).half()}


def test_mutated_safetensors_files_only_raise_checkpoint_errors(tmp_path: Path) -> None:
    original = write_safetensors(tmp_path / "small.safetensors", small_tensors(), {"note": "x"})
    refused, _opened = run_mutations(original, seed=1234)
    assert refused > MUTATIONS // 2


@pytest.mark.parametrize("legacy", [False, True])
def test_mutated_torch_files_only_raise_checkpoint_errors(tmp_path: Path, legacy: bool) -> None:
    original = tmp_path / "small.pt"
    torch.save({"state_dict": small_tensors(), "epoch": 1}, original, _use_new_zipfile_serialization=not legacy)
    refused, _opened = run_mutations(original, seed=99 if legacy else 4321)
    assert refused > MUTATIONS // 4


def test_mutated_shard_indexes_only_raise_checkpoint_errors(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    write_safetensors(folder / "model-00001-of-00001.safetensors", small_tensors())
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": dict.fromkeys(small_tensors(), "model-00001-of-00001.safetensors")}))
    rng = random.Random(7)
    data = index.read_bytes()
    for i in range(MUTATIONS):
        index.write_bytes(mutate(data, rng))
        try:
            open_and_read_everything(index)
        except CheckpointError:
            pass
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {i} raised {type(exc).__name__}: {exc}")
