"""Two processes over gloo on CPU, one stage each, give eager's outputs (torchrun-style entry)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from accelc_test_samples import load_sample

import accelc

from accelc.capture import graph_module_from_program
from accelc.partition import make_plan


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("source", ["program", "artifact"])
def test_two_process_gloo_pipeline_matches_eager(tmp_path, source):
    """``program``: a plan made on the exported graph itself. ``artifact``: the README's route, an
    ``accelc optimize --stages 2`` folder, whose model.pt2 was re-exported after the passes (node
    names change) and whose cut carries a channels-last activation (not contiguous)."""
    torch.manual_seed(0)
    model, inputs = load_sample("cnn")
    microbatches = 3
    batch = tuple(torch.cat([x] * microbatches) for x in inputs)
    batch = (batch[0] + 0.1 * torch.randn_like(batch[0]),)
    torch.save(batch, tmp_path / "inputs.pt")
    if source == "program":
        program = torch.export.export(model, inputs, strict=False)
        torch.export.save(program, tmp_path / "model.pt2")
        gm = graph_module_from_program(program)
        make_plan(gm, inputs, stages=2).save(tmp_path / "plan.json")
    else:
        fast = accelc.accelerate(model, batch, backend="torch", stages=2, microbatches=microbatches)
        folder = tmp_path / "artifact"
        fast.save(str(folder))
        for name in ("model.pt2", "plan.json"):
            (tmp_path / name).write_bytes((folder / name).read_bytes())

    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "accelc.runtime.distributed", "--program", str(tmp_path / "model.pt2"),
             "--plan", str(tmp_path / "plan.json"), "--inputs", str(tmp_path / "inputs.pt"),
             "--microbatches", str(microbatches), "--out", str(tmp_path / "out.pt"), "--timeout-s", "60"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    (got,) = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        want = model(*batch)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
