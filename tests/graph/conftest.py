"""Shared helpers for graph tests: a tiny factory file and a tiny exported program."""

from __future__ import annotations

import pytest
import torch

FACTORY_SOURCE = '''
import torch
from torch import nn


class TwoLayer(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.encoder = nn.Linear(6, hidden)
        self.act = nn.ReLU()
        self.decoder = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.decoder(self.act(self.encoder(x)))


def build(hidden: int = 4):
    return TwoLayer(hidden)


def example_input(batch_size=2):
    return torch.ones(batch_size, 6)
'''


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(FACTORY_SOURCE)
    return path


@pytest.fixture
def exported_program(tmp_path):
    """A .pt2 file of a two-layer network, exported with torch.export."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).eval()
    program = torch.export.export(model, (torch.zeros(3, 5),))
    path = tmp_path / "tiny.pt2"
    torch.export.save(program, str(path))
    return path, model
