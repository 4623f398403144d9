"""Property test: folding random conv/BatchNorm shapes and statistics matches eager."""

import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from accelc.capture import capture
from pass_testing import count_ops, run_pass

aten = torch.ops.aten


@st.composite
def conv_bn_cases(draw):
    dim = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2, 4]))
    in_ch = groups * draw(st.integers(1, 3))
    out_ch = groups * draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        groups, out_ch = in_ch, in_ch
    return dict(
        dim=dim, groups=groups, in_ch=in_ch, out_ch=out_ch, bias=draw(st.booleans()),
        transposed=draw(st.booleans()), kernel=draw(st.integers(1, 3)), stride=draw(st.integers(1, 2)),
        eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])), seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=25, deadline=None, derandomize=True)
@given(conv_bn_cases())
def test_fold_matches_eager(case):
    torch.manual_seed(case["seed"])
    kind = "ConvTranspose" if case["transposed"] else "Conv"
    conv = getattr(nn, f"{kind}{case['dim']}d")(
        case["in_ch"], case["out_ch"], case["kernel"], stride=case["stride"], groups=case["groups"], bias=case["bias"])
    bn = getattr(nn, f"BatchNorm{case['dim']}d")(case["out_ch"], eps=case["eps"])
    with torch.no_grad():
        bn.weight.normal_(1, 0.5)
        bn.bias.normal_(0, 0.5)
        bn.running_mean.normal_(0, 1)
        bn.running_var.uniform_(0.05, 3)
    model = nn.Sequential(conv, bn).eval()
    inputs = (torch.randn(1, case["in_ch"], *[6] * case["dim"]),)
    gm = capture(model, inputs).graph_module
    new, record, _ = run_pass("fold_conv_bn", gm, inputs)
    assert record.status == "fired", record.reason
    assert count_ops(new, aten.batch_norm) == 0
    x = torch.randn(inputs[0].shape)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-4, atol=1e-4)
