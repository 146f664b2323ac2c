"""The x86 plugin's own lowering: conv2d + add (+ relu) as one fused kernel, and the
weight-only linears (which the core's generic lowering does not know).

The core lowers single-op patterns (``dq -> conv2d [-> relu] -> q``). The x86
quantizer annotates ``conv2d -> add(other) [-> relu]`` as one pattern, so after
``convert_pt2e`` the reference form is::

    dq(x) -> conv2d(., dq(w_q), b) -> add(., dq(other_q)) [-> relu] -> q

which this pass replaces, before the core's generic lowering runs, with one
``quantplug_x86_onednn::conv2d_add`` op: the conv's int32 accumulators are
rescaled, the dequantized ``other`` is added in float32, and the sum is
rounded once (oneDNN's "sum" post-op). The op lives in the plugin namespace
``quantplug_x86_onednn`` (which ``quantplug.save``/``load`` accept) and has a
fake implementation, so lowered models still export and compile.

Weight-only linears (fp32 activations) after ``convert_pt2e``::

    linear(x_fp32, dequantize_per_channel(w_q, s, 0, 0, lo, hi, int8), b)   -> linear_weight_only
    linear(x_fp32, dequantize_per_group(w_q, s, 0, g, -8, 7), b)            -> linear_int4_weight_only

(``dequantize_per_tensor`` int8 weights too); the packed weight is a list of buffers.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from quantplug.direct_calls import impl_cpu
from quantplug.kernels import unflatten_packed
from quantplug.ops import is_op
from quantplug.quant_ops import ops as qops

from .kernels import PackedConv2dWeight, PackedInt4LinearWeight, PackedLinearWeight, load_kernels

__all__ = ["lower_x86_onednn", "LIB", "EXPLAIN_KEY"]

EXPLAIN_KEY = "quantplug_explain"

LIB = torch.library.Library("quantplug_x86_onednn", "DEF")
LIB.define(
    "conv2d_add(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, Tensor other, "
    "float other_scale, int other_zero_point, float out_scale, int out_zero_point, bool relu, int out_channels, "
    "int[] kernel_size, int[] stride, int[] padding, int[] dilation, str backend) -> Tensor")


def _conv2d_add_impl(x, x_scale, x_zero_point, packed, bias, other, other_scale, other_zero_point, out_scale,
                     out_zero_point, relu, out_channels, kernel_size, stride, padding, dilation, backend):
    k = load_kernels()
    return k.conv2d(x, x_scale, x_zero_point, unflatten_packed(PackedConv2dWeight, packed), bias, out_scale,
                    out_zero_point, relu=relu, other=other, other_scale=other_scale,
                    other_zero_point=other_zero_point)


impl_cpu(LIB, "conv2d_add", _conv2d_add_impl)  # direct calls from lowered graphs


@torch.library.register_fake("quantplug_x86_onednn::conv2d_add", lib=LIB)
def _(x, x_scale, x_zero_point, packed, bias, other, other_scale, other_zero_point, out_scale, out_zero_point, relu,
      out_channels, kernel_size, stride, padding, dilation, backend):
    return torch.empty_like(other)


LIB.define("linear_weight_only(Tensor x, Tensor[] packed, Tensor? bias, int n) -> Tensor")
LIB.define("linear_int4_weight_only(Tensor x, Tensor[] packed, Tensor? bias, int n) -> Tensor")


def _linear_weight_only_impl(x, packed, bias, n):
    return load_kernels().linear_weight_only(x, unflatten_packed(PackedLinearWeight, packed), bias)


def _linear_int4_weight_only_impl(x, packed, bias, n):
    return load_kernels().linear_int4_weight_only(x, unflatten_packed(PackedInt4LinearWeight, packed), bias)


impl_cpu(LIB, "linear_weight_only", _linear_weight_only_impl)  # direct calls from lowered graphs
impl_cpu(LIB, "linear_int4_weight_only", _linear_int4_weight_only_impl)  # direct calls from lowered graphs


@torch.library.register_fake("quantplug_x86_onednn::linear_weight_only", lib=LIB)
def _(x, packed, bias, n):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("quantplug_x86_onednn::linear_int4_weight_only", lib=LIB)
def _(x, packed, bias, n):
    return x.new_empty((*x.shape[:-1], n))


def _single_user(n: Node) -> Node | None:
    return next(iter(n.users)) if len(n.users) == 1 else None


def _lower_conv_add(gm: GraphModule, add: Node, backend_name: str) -> bool:
    # Pattern helpers of the core's lowering (kept private there; see the plugin report).
    from quantplug.lowering import (clamp_output, erase_unused, float_bias, output_range, quantized_tail, store_bias,
                                    store_packed, weight_qparams)

    if len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
        return False
    a, b = add.args
    convs = [v for v in (a, b) if isinstance(v, Node) and is_op(v, "conv2d") and _single_user(v) is add]
    if not convs:
        return False
    conv = convs[0]
    other = b if conv is a else a
    if not (isinstance(other, Node) and other.target == qops.dequantize_per_tensor.default):
        return False
    args = list(conv.args) + [None] * (7 - len(conv.args))
    x_dq, w_dq, bias_node, stride, padding, dilation, groups = args
    stride, padding, dilation, groups = stride or [1, 1], padding or [0, 0], dilation or [1, 1], groups or 1
    if isinstance(padding, str) or not (isinstance(x_dq, Node) and x_dq.target == qops.dequantize_per_tensor.default):
        return False
    w = weight_qparams(gm, w_dq)
    if w is None or w[0].dim() != 4 or w[0].dtype != torch.int8 or bool((w[2] != 0).any()):
        return False
    bias = float_bias(gm, bias_node)
    if bias is False:
        return False
    relu, q_out, last = quantized_tail(add)
    if q_out is None or x_dq.args[5] != torch.uint8 or other.args[5] != torch.uint8 or q_out.args[5] != torch.uint8:
        return False
    oval, cval = other.meta.get("val"), conv.meta.get("val")
    if oval is not None and cval is not None and tuple(oval.shape) != tuple(cval.shape):
        return False  # broadcasting add: not a sum post-op
    k = load_kernels()
    out_range = output_range(q_out, k)  # reduce_range (0..127) needs a clamp after the 0..255 kernel
    if out_range is None:
        return False
    w_q, w_s, w_z = w
    stride, padding, dilation = [list(v) * (2 // len(v)) if len(v) == 1 else list(v) for v in (stride, padding, dilation)]
    packed = k.pack_conv2d_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous(), stride, padding, dilation,
                                  int(groups))
    graph = gm.graph
    with graph.inserting_before(add):
        packed_nodes = store_packed(gm, conv, packed)
        bias_attr = store_bias(gm, conv, bias)
        new = graph.call_function(torch.ops.quantplug_x86_onednn.conv2d_add.default, (
            x_dq.args[0], float(x_dq.args[1]), int(x_dq.args[2]), packed_nodes, bias_attr,
            other.args[0], float(other.args[1]), int(other.args[2]), float(q_out.args[1]), int(q_out.args[2]),
            relu, int(w_q.shape[0]), [int(w_q.shape[2]), int(w_q.shape[3])], stride, padding, dilation,
            backend_name))
    new.meta["val"] = q_out.meta.get("val")
    new.meta[EXPLAIN_KEY] = (f"{backend_name} int8 conv2d+add{'+relu' if relu else ''} fused kernel "
                             f"({k.selected_isa()})")
    q_out.replace_all_uses_with(clamp_output(graph, new, out_range))
    erase_unused(graph, q_out, last, add, conv)
    return True


def _weight_only_packed(gm: GraphModule, w_dq: Node, k) -> tuple[object, object] | str:
    """(packed weight, op) for a weight-only linear's weight dequantize, or why it stays reference."""
    from quantplug.lowering import constant, weight_qparams

    if w_dq.target == qops.dequantize_per_group.default:
        q, s, z = (constant(gm, a) for a in w_dq.args[:3])
        group_size, qmin, qmax = w_dq.args[3:6]
        if q is None or s is None or z is None:
            return "int4 weight is not a constant"
        if q.dim() != 2 or q.dtype != torch.int8 or qmin < -8 or qmax > 7:
            return f"weight is not 2-D int4 in [-8, 7] (shape {tuple(q.shape)}, range [{qmin}, {qmax}])"
        if bool((z != 0).any()) or group_size not in (32, 64, 128) or q.shape[1] % group_size:
            return f"int4 weight is asymmetric or its group size {group_size} does not fit K={q.shape[1]}"
        packed = k.pack_linear_weight_int4(q.contiguous(), s.float().reshape(q.shape[0], -1).contiguous(),
                                           int(group_size))
        return packed, torch.ops.quantplug_x86_onednn.linear_int4_weight_only.default
    w = weight_qparams(gm, w_dq)
    if w is None:
        return "weight is not a constant int8 dequantize"
    q, s, z = w
    if q.dim() != 2 or q.dtype != torch.int8 or bool((z != 0).any()):
        return "weight is not 2-D symmetric int8"
    packed = k.pack_linear_weight(q.contiguous(), s.float().contiguous(), z.contiguous())
    return packed, torch.ops.quantplug_x86_onednn.linear_weight_only.default


def _lower_weight_only(gm: GraphModule, lin: Node, backend_name: str) -> bool:
    """``linear(x_fp32, dq(w), b)`` -> the weight-only kernel (int8 per channel / tensor, int4 per group)."""
    from quantplug.lowering import float_bias, store_bias, store_packed

    x, w_dq = lin.args[0], lin.args[1]
    if not isinstance(x, Node) or not isinstance(w_dq, Node) or "dequantize" in str(x.target):
        return False  # a static / dynamic linear: the core lowers it
    if w_dq.target not in (qops.dequantize_per_group.default, qops.dequantize_per_channel.default,
                           qops.dequantize_per_tensor.default):
        return False
    x_val = x.meta.get("val")
    bias = float_bias(gm, lin.args[2] if len(lin.args) > 2 else None)
    k = load_kernels()
    got = _weight_only_packed(gm, w_dq, k)
    if not isinstance(x_val, torch.Tensor) or x_val.dtype != torch.float32:
        got = "input is not fp32"
    elif bias is False:
        got = "bias is not a constant"
    if isinstance(got, str):
        lin.meta[EXPLAIN_KEY] = f"reference: {got}"
        return False
    packed, op = got
    with gm.graph.inserting_before(lin):
        new = gm.graph.call_function(op, (x, store_packed(gm, lin, packed), store_bias(gm, lin, bias),
                                          int(packed.n)))
    new.meta["val"] = lin.meta.get("val")
    kind = "int4 group-wise" if op is torch.ops.quantplug_x86_onednn.linear_int4_weight_only.default else "int8"
    new.meta[EXPLAIN_KEY] = f"{backend_name} {kind} weight-only linear kernel ({k.selected_isa()})"
    lin.replace_all_uses_with(new)
    gm.graph.erase_node(lin)
    return True


def lower_x86_onednn(gm: GraphModule) -> GraphModule:
    """Replace the reference conv2d + add (+ relu) patterns of ``gm`` with the fused kernel, in place.

    Registered as ``Backend.lowering``; the core runs it before its generic lowering.
    """
    from quantplug.prepare import META_KEY

    backend_name = gm.meta.get(META_KEY, {}).get("backend") or "x86_onednn"
    count = 0
    wo = 0
    for n in list(gm.graph.nodes):
        if n.graph is gm.graph and n.op == "call_function" and n.target == torch.ops.aten.add.Tensor:
            count += _lower_conv_add(gm, n, backend_name)
        elif n.op == "call_function" and n.target == torch.ops.aten.linear.default and len(n.args) >= 2:
            wo += _lower_weight_only(gm, n, backend_name)
    from quantplug.lowering import finish_plugin_pass

    finish_plugin_pass(gm, wo, "x86_onednn_weight_only_linear")
    return finish_plugin_pass(gm, count, "x86_onednn_fused_conv_add")
