"""Tiny models and data for the evaluation tests: built in milliseconds, real torch modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from merge_studio.core.evaluate.data import EvalData, TensorSplit, load_data


def tiny_mlp(seed: int, hidden: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def tiny_bn_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 10),
    )


def train_briefly(module: nn.Module, data: EvalData, *, steps: int = 60, seed: int = 0) -> nn.Module:
    """A few Adam steps so models are better than chance and differ from each other.

    One intra-op thread: tiny ops gain nothing from more, and on a busy CI machine
    oversubscribed threads made this fixture take seconds instead of a tenth of one.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module.train()
        for _ in range(steps):
            idx = torch.randint(0, len(data.train), (64,), generator=gen)
            loss = nn.functional.cross_entropy(module(data.train.inputs[idx]), data.train.targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
        module.eval()
    return module


@pytest.fixture(scope="session")
def digits_flat() -> EvalData:
    return load_data({"source": "digits", "layout": "flat"})


@pytest.fixture(scope="session")
def digits_image() -> EvalData:
    return load_data({"source": "digits", "layout": "image", "max_examples": 300})


@pytest.fixture(scope="session")
def two_mlps(digits_flat) -> tuple[nn.Module, nn.Module]:
    return train_briefly(tiny_mlp(0), digits_flat, seed=0), train_briefly(tiny_mlp(1), digits_flat, seed=1)


def regression_data(n: int = 200, seed: int = 0) -> EvalData:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0]]) + 0.1 * torch.randn(n, 1, generator=gen)
    return EvalData(train=TensorSplit(x[:150], y[:150]), test=TensorSplit(x[150:], y[150:]), task="regression", source="synthetic")


@pytest.fixture()
def make_mlp():
    """``make_mlp(seed, hidden=16)``: a 64-hidden-10 MLP with seeded weights."""
    return tiny_mlp


@pytest.fixture()
def make_bn_cnn():
    """``make_bn_cnn(seed)``: a conv + BatchNorm classifier for 8×8 images."""
    return tiny_bn_cnn


@pytest.fixture()
def regression():
    return regression_data()
