"""Run 2-D convolutions as oneDNN convolutions with prepacked weights and fused epilogues (CPU).

    relu(conv2d(x, W, b))               ==> mkldnn._convolution_pointwise(x_cl, P, b, ..., "relu")
    relu(conv2d(x, W, b) + r)           ==> mkldnn._convolution_pointwise.binary(x_cl, r_cl, P, b, ..., "add", "relu")
    conv2d(x, W, b)                     ==> mkldnn._convolution_pointwise(x_cl, P, b, ..., "none")

    P    = mkldnn._reorder_convolution_weight(W, padding, stride, dilation, groups, x.shape)   (at the example)
    x_cl = x in channels-last memory format (a no-op when it already is)

This is what Inductor's CPU freezing does, without code generation: the weight is reordered once,
at compile time, into the blocked layout oneDNN picks for this input shape (so no reorder runs
per call), activations flow in channels-last (NHWC, oneDNN's fast layout for batch 1), and the
bias, the ReLU (or SiLU, sigmoid, tanh, hardswish) and a residual add are applied inside the
convolution kernel instead of as separate passes over memory. Values are the same convolution
sums; only the summation order inside oneDNN may differ (fp32 rounding).

Symbolic shapes (a dynamic batch, height or width): the input size only steers which blocked
layout oneDNN picks. Each call builds its primitive for the real input, and ideep reorders a
weight whose layout is not the one that primitive wants (``reorder_if_differ_in``), so a weight
packed for one size computes the same sums at every size (bitwise the same as one packed for that
size, in checks at batch 1-32 and 5x7 to 224x224 on ResNet/CNN-style convs), but that reorder
runs on every call: ResNet-50 at batch 1 ran 1.8x slower on weights packed for batch 2 (2-core
Xeon). So the weight is packed for the sizes at ``ctx.example_inputs``, the user's example
(capture grows a batch of 1 to 2), or else at the capture's hints. Inductor's freezing passes the
dense weight instead when the shape is symbolic; that measured 1.4x slower than packing for the
size that runs.

Run it after ``fold_conv_bn`` (a BatchNorm between conv and ReLU blocks the epilogue). The
prepacked weights are opaque oneDNN tensors: the rewritten graph runs in the PyTorch runtime on
CPU but cannot be serialised as an ExportedProgram, so a runtime that saves artifacts applies it
at load time. Graph outputs are made contiguous again so callers see the layout they saw before.
"""

from __future__ import annotations

import torch

from accelc import Pass, PassContext, PassResult
from accelc.patterns import (add_opaque_constant, aten, example_sizes, find_nodes, get_constant, is_op, is_static,
                             make_outputs_contiguous, only_user, remove_unused_constants, same_size, size_hint, tensor_meta)

mkldnn = torch.ops.mkldnn

# Unary epilogues oneDNN fuses exactly: aten op -> attr name of _convolution_pointwise.
_UNARY = {aten.relu: "relu", aten.relu_: "relu", aten.sigmoid: "sigmoid", aten.tanh: "tanh",
          aten.silu: "swish", aten.silu_: "swish", aten.hardswish: "hardswish", aten.hardswish_: "hardswish"}


def _conv_params(conv: torch.fx.Node):
    """(x, weight, bias, padding, stride, dilation, groups) of a plain 2-D conv, or None."""
    a = list(conv.args)
    if is_op(conv, aten.conv2d):
        # conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
        get = lambda i, k, d: a[i] if len(a) > i else conv.kwargs.get(k, d)  # noqa: E731
        stride, padding, dilation = get(3, "stride", [1, 1]), get(4, "padding", [0, 0]), get(5, "dilation", [1, 1])
        bias, groups = get(2, "bias", None), get(6, "groups", 1)
    elif is_op(conv, aten.convolution) and not a[6] and not any(a[7]):
        bias, stride, padding, dilation, groups = a[2], a[3], a[4], a[5], a[8]
    else:
        return None
    if isinstance(padding, str):  # "same"/"valid" padding strings
        return None
    expand = lambda v: list(v) * 2 if len(v) == 1 else list(v)  # noqa: E731
    return a[0], a[1], bias, expand(padding), expand(stride), expand(dilation), groups


def _is_channels_last(node, fused: set) -> bool:
    return node in fused or (is_op(node, aten.contiguous) and node.kwargs.get("memory_format") == torch.channels_last)


def _epilogue(conv: torch.fx.Node):
    """What to fuse after ``conv``: (nodes replaced, conv first; unary attr; residual node or None)."""
    user = only_user(conv)
    if user is not None and is_op(user, aten.add, aten.add_) and len(user.args) == 2 \
            and user.kwargs.get("alpha", 1) == 1:
        other = user.args[1] if user.args[0] is conv else user.args[0]
        in_place_on_other = is_op(user, aten.add_) and user.args[0] is not conv
        out, res = tensor_meta(conv), tensor_meta(other)
        if not in_place_on_other and isinstance(other, torch.fx.Node) and other is not conv and out is not None and res is not None \
                and same_size(res, out) and res.dtype == out.dtype:
            after = only_user(user)
            if after is not None and is_op(after, aten.relu, aten.relu_):
                return [conv, user, after], "relu", other
            return [conv, user], None, other
    if user is not None and is_op(user, *_UNARY):
        return [conv, user], next(v for k, v in _UNARY.items() if is_op(user, k)), None
    return [conv], "none", None


class FuseConvPointwise(Pass):
    """CPU: conv2d (+bias, +ReLU, +residual add) to oneDNN convolutions with prepacked weights, channels-last."""

    name = "fuse_conv_pointwise"
    # True: weights reordered once into oneDNN's blocked layout (fastest, but an opaque tensor
    # that cannot be serialised). False: dense channels-last weights, reordered by oneDNN per call.
    prepack_weights: bool = True

    def run(self, gm: torch.fx.GraphModule, ctx: PassContext) -> PassResult:
        if ctx.device.type != "cpu" or not torch.backends.mkldnn.is_available():
            return PassResult(modified=False, stats={"fused": 0})
        fused = epilogues = 0
        example = example_sizes(gm, ctx.example_inputs)  # the sizes to prepack for (module docstring)
        channels_last: set[torch.fx.Node] = set()  # fused outputs, already in channels-last format
        for conv in find_nodes(gm, aten.conv2d, aten.convolution):
            params = _conv_params(conv)
            if params is None:
                continue
            x, weight_node, bias_node, padding, stride, dilation, groups = params
            weight = get_constant(gm, weight_node)
            bias = get_constant(gm, bias_node) if bias_node is not None else None
            x_meta = tensor_meta(x)
            if x_meta is None and is_op(x, aten.contiguous):  # a layout change made by to_channels_last
                x_meta = tensor_meta(x.args[0])
            if weight is None or (bias_node is not None and bias is None):
                ctx.refuse(conv, "conv weight or bias is not a constant")
                continue
            if weight.dtype != torch.float32 or weight.dim() != 4 or x_meta is None or x_meta.dim() != 4 \
                    or x_meta.dtype != torch.float32:
                ctx.refuse(conv, "only fp32 batched 2-D convs are prepacked")
                continue
            if not is_static(x_meta.shape[1]):
                ctx.refuse(conv, "the input's channel count is symbolic")
                continue
            if self.prepack_weights:  # for the example's sizes: any size runs, that one fastest
                sizes = list(size_hint(x_meta, example))
                packed = mkldnn._reorder_convolution_weight(weight, padding, stride, dilation, groups, sizes)
            else:
                packed = weight.contiguous(memory_format=torch.channels_last)
            chain, unary, residual = _epilogue(conv)
            last = chain[-1]
            with gm.graph.inserting_before(last):
                packed_node = add_opaque_constant(gm, packed, f"{conv.name}_packed_weight")
                x_cl = x if _is_channels_last(x, channels_last) else gm.graph.call_function(
                    aten.contiguous.default, (x,), {"memory_format": torch.channels_last})
                if residual is None:
                    new = gm.graph.call_function(
                        mkldnn._convolution_pointwise.default,
                        (x_cl, packed_node, bias_node, padding, stride, dilation, groups, unary, [], None))
                else:
                    r_cl = residual if _is_channels_last(residual, channels_last) else gm.graph.call_function(
                        aten.contiguous.default, (residual,), {"memory_format": torch.channels_last})
                    new = gm.graph.call_function(
                        mkldnn._convolution_pointwise.binary,
                        (x_cl, r_cl, packed_node, bias_node, padding, stride, dilation, groups, "add", None, unary, [], None))
            channels_last.add(new)
            if "val" in last.meta:
                new.meta["val"] = last.meta["val"]
            last.replace_all_uses_with(new)
            for user in list(new.users):
                if is_op(user, aten.view, aten._unsafe_view):  # a view needs the contiguous strides it saw
                    with gm.graph.inserting_before(user):
                        user.replace_input_with(new, gm.graph.call_function(aten.contiguous.default, (new,)))
            for node in reversed(chain):
                gm.graph.erase_node(node)
            fused += 1
            epilogues += (unary not in (None, "none")) + (residual is not None)
        if fused:
            make_outputs_contiguous(gm)
            remove_unused_constants(gm)  # the dense weights: only the packed copies are used now
        return PassResult(modified=fused > 0, stats={"fused": fused, "epilogues": epilogues})
