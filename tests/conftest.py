"""Helpers shared by the infrastructure tests: tiny model files and an in-process CLI runner."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from accelc.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def model_file(tmp_path):
    """Write a model.py with the given source (dedented) and return its path."""

    def write(source: str, name: str = "model.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run ``accelc`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


TINY_CNN = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.drop(y).mean(dim=(2, 3))
        return self.head(y)

def get_model():
    torch.manual_seed(0)
    m = Net()
    m.bn.running_mean.normal_()
    m.bn.running_var.uniform_(0.5, 1.5)
    m.bn.weight.data.normal_(1.0, 0.1)
    return m.eval()

def get_inputs():
    return (torch.randn(2, 3, 8, 8),)
"""
