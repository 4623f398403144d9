"""Branch-parallel execution on the multi-branch CNN gives eager's outputs and overlaps branches."""

from __future__ import annotations

import threading

import pytest
import torch
from accelc_test_samples import captured

from accelc.runtime.branches import build_branch_executor, chain_groups
from accelc.runtime.pipeline import StageError


@pytest.mark.parametrize("name", ["multibranch_cnn", "bert", "cnn"])
def test_branch_parallel_matches_eager(name):
    model, inputs, gm = captured(name)
    before = threading.active_count()
    executor = build_branch_executor(gm, workers=2)
    with torch.no_grad():
        want = model(*inputs)
    torch.testing.assert_close(executor(*inputs), want, rtol=1e-4, atol=1e-4)
    assert threading.active_count() == before
    covered = sorted(n for g in chain_groups(gm) for n in g)
    assert covered == sorted(n.name for n in gm.graph.nodes if n.op == "call_function")


def test_multibranch_blocks_have_parallel_heavy_chains():
    _, _, gm = captured("multibranch_cnn")
    executor = build_branch_executor(gm, workers=2)
    assert executor.heavy_groups >= 4 * 3  # four branches in each of three blocks


def test_failing_branch_names_its_nodes():
    _, inputs, gm = captured("multibranch_cnn")
    executor = build_branch_executor(gm, workers=2, timeout_s=30)
    heavy = next(g for g, spec in enumerate(executor.specs) if spec[2])

    def boom(*args):
        raise RuntimeError("branch exploded")

    executor.group_modules[heavy].forward = boom
    before = threading.active_count()
    with pytest.raises(StageError, match=f"branch group {heavy} failed: RuntimeError: branch exploded"):
        executor(*inputs)
    assert threading.active_count() == before


def test_accelerate_with_branches_saves_and_reloads(tmp_path):
    import accelc

    model, inputs, _ = captured("multibranch_cnn")
    fast = accelc.accelerate(model, inputs, branches=2)
    assert "backend_fallback" not in fast.report
    assert fast.report["branches"]["workers"] == 2 and fast.report["branches"]["heavy_groups"] >= 12
    assert fast.report["timeline"]["intervals"]
    with torch.inference_mode():
        want = model(*inputs)
        torch.testing.assert_close(fast(*inputs), want, rtol=1e-4, atol=1e-4)
        fast.save(str(tmp_path / "out"))
        reloaded = accelc.load(str(tmp_path / "out"))
        assert type(reloaded.runner).__name__ == "BranchParallelExecutor"
        torch.testing.assert_close(reloaded(*inputs), want, rtol=1e-4, atol=1e-4)


def test_branches_with_stages_is_a_user_error():
    import accelc
    from accelc.errors import UserInputError

    model, inputs, _ = captured("cnn")
    with pytest.raises(UserInputError, match="--branches"):
        accelc.accelerate(model, inputs, branches=2, stages=2)
