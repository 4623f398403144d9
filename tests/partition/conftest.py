"""Partition tests reuse the pass tests' sample loaders and cached captures (tests/passes/pass_testing.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "passes" / "pass_testing.py"
if "accelc_test_samples" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("accelc_test_samples", _PATH)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["accelc_test_samples"] = _module
    _spec.loader.exec_module(_module)
