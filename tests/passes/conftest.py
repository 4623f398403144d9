"""Fixtures for the pass tests; the helpers themselves live in ``pass_testing.py``, a module
with a name of its own so test files can import them wherever pytest is pointed."""

import pytest

from pass_testing import captured, count_ops, load_sample, run_pass


@pytest.fixture(name="load_sample")
def _load_sample_fixture():
    return load_sample


@pytest.fixture(name="captured")
def _captured_fixture():
    return captured


@pytest.fixture(name="run_pass")
def _run_pass_fixture():
    return run_pass


@pytest.fixture(name="count_ops")
def _count_ops_fixture():
    return count_ops
