"""Fixtures shared by the infrastructure tests: tiny model files and an in-process CLI runner.

Plain constants and helpers live in support.py, so test modules never import ``conftest``
(tests/passes has a conftest of its own, and two modules named ``conftest`` would collide)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from accelc.cli import main

@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_remembered_choices(monkeypatch):
    """Every test times auto's candidates afresh: a choice remembered by an earlier test would
    build one runtime where the test expects them all (tests/test_decisions.py turns it on)."""
    monkeypatch.setenv("ACCELC_CACHE_DIR", "off")


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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them, visibly, on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
