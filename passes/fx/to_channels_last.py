"""Run the convolutions of conv-heavy graphs in channels-last (NHWC) memory format.

    conv2d(x, W, b)  ==>  conv2d(contiguous(x, channels_last), W_cl, b)
    W_cl = W.contiguous(memory_format=channels_last)     (same values, NHWC strides)

Memory format changes strides only, never values. With a channels-last weight and input, the
oneDNN convolution avoids the NCHW<->blocked reorders per call, and the elementwise ops and
pools between convolutions keep the channels-last format of their input, so the conversion of
an activation happens once at the first conv. Graph outputs are made contiguous again. Views of
a conv output (which need NCHW-contiguous strides) get a ``contiguous`` first.

Applied only when the graph has at least ``min_convs`` fp32 2-D convolutions with constant
weights (a single conv is not worth the layout conversions around it).
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import (accelc_meta, add_constant, aten, find_nodes, get_constant, is_op, make_outputs_contiguous,
                             tensor_meta)


class ToChannelsLast(Pass):
    """Convert conv2d weights and inputs to channels-last memory format in conv-heavy graphs."""

    name = "to_channels_last"
    min_convs: int = 3

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        convs = []
        for conv in find_nodes(gm, aten.conv2d):
            weight, x = get_constant(gm, conv.args[1]), tensor_meta(conv.args[0])
            if weight is None or weight.dim() != 4 or x is None or x.dim() != 4 or x.dtype != torch.float32:
                continue
            if accelc_meta(conv).get("channels_last"):
                continue  # converted by an earlier run
            convs.append((conv, weight))
        if len(convs) < self.min_convs:
            return PassResult(modified=False, stats={"converted": 0})
        for conv, weight in convs:
            weight_cl = add_constant(gm, weight, f"{conv.name}_weight_cl", before=conv)
            gm.register_buffer(weight_cl.target, weight.contiguous(memory_format=torch.channels_last))
            with gm.graph.inserting_before(conv):
                x_cl = gm.graph.call_function(aten.contiguous.default, (conv.args[0],), {"memory_format": torch.channels_last})
            if "val" in conv.args[0].meta:  # same shape and dtype; only the strides differ
                x_cl.meta["val"] = conv.args[0].meta["val"]
            conv.args = (x_cl, weight_cl, *conv.args[2:])
            accelc_meta(conv)["channels_last"] = True
            for user in list(conv.users):
                if is_op(user, aten.view, aten._unsafe_view):
                    with gm.graph.inserting_before(user):
                        user.replace_input_with(conv, gm.graph.call_function(aten.contiguous.default, (conv,)))
        make_outputs_contiguous(gm)
        return PassResult(modified=True, stats={"converted": len(convs)})
