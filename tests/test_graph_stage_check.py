"""The graph stage's checks (accelc.api.optimise_captured): the passes' result is checked against
eager on the per-pass sets; the captured graph is run there only where that tells something (no
pass fired, or the result is wrong), and a wrong capture is named as such, not blamed on a pass."""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.api import optimise_captured
from accelc.capture import capture
from accelc.patterns import aten, find_nodes
from accelc.verify import Verifier, run_detached, verification_inputs

from test_pass_manager import Net, RefusesEachRelu


def _setup(wrong_reference: bool = False):
    torch.manual_seed(0)
    model = Net().eval()
    inputs = (torch.randn(3, 6),)
    gm = capture(model, inputs).graph_module
    sets = verification_inputs(inputs, count=3, seed=1)
    refs = [run_detached(model, x) for x in sets]
    if wrong_reference:  # as if the capture had changed the model's answers: eager's differ from the graph's
        refs = [r + 1.0 for r in refs]
    return gm, inputs, Verifier(sets, refs)


def _run(gm, inputs, reference, passes):
    return optimise_captured(gm, reference, passes, PassContext(example_inputs=inputs), verify=True)


def test_when_passes_fire_the_captured_graph_is_not_run_again(monkeypatch):
    gm, inputs, reference = _setup()
    calls = []
    real = Verifier.check
    monkeypatch.setattr(Verifier, "check", lambda self, module: calls.append(module) or real(self, module))
    result = _run(gm, inputs, reference, [RefusesEachRelu()])
    assert result.failure is None and [r.status for r in result.records] == ["fired"]
    assert result.gm is not gm and all(module is not gm for module in calls)  # only the passes' result ran
    assert result.final["ok"] and result.final["inputs_checked"] == 2  # the example and a variant (static)


def test_when_no_pass_fires_the_final_check_is_the_captured_graphs():
    gm, inputs, reference = _setup()

    class Idle(Pass):
        name = "idle"

        def run(self, gm, ctx):
            return PassResult(modified=False)

    result = _run(gm, inputs, reference, [Idle()])
    assert result.failure is None and result.gm is gm and result.final["ok"]


def test_a_wrong_capture_is_named_whether_or_not_a_pass_fired():
    gm, inputs, reference = _setup(wrong_reference=True)
    for passes in ([RefusesEachRelu()], []):
        result = _run(gm, inputs, reference, passes)
        assert result.failure.startswith("the captured graph disagrees with eager"), result.failure
        assert result.gm is None


def test_a_wrong_pass_on_a_right_capture_is_the_passs_fault():
    gm, inputs, reference = _setup()

    class Negates(Pass):
        """Wrong on purpose, and its result not checked (verify=False): the final check sees it."""
        name = "negates"

        def run(self, gm, ctx):
            out = find_nodes(gm, aten.add)[-1]
            with gm.graph.inserting_after(out):
                neg = gm.graph.call_function(aten.neg.default, (out,))
            out.replace_all_uses_with(neg, delete_user_cb=lambda user: user is not neg)
            return PassResult(modified=True)

    result = optimise_captured(gm, reference, [Negates()], PassContext(example_inputs=inputs), verify=False)
    assert result.failure.startswith("optimised graph disagrees with eager"), result.failure
