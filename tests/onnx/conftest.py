"""Fixtures for the ONNX tests (helpers live in onnx_samples.py)."""

import pytest


@pytest.fixture(scope="session")
def export_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("onnx_exports"))
