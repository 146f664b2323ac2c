"""The x86 plugin's own lowering: conv2d + add (+ relu) as one fused kernel.

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
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from quantplug.kernels import unflatten_packed
from quantplug.ops import is_op
from quantplug.quant_ops import ops as qops

from .kernels import PackedConv2dWeight, load_kernels

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


LIB.impl("conv2d_add", _conv2d_add_impl, "CPU")


@torch.library.register_fake("quantplug_x86_onednn::conv2d_add", lib=LIB)
def _(x, x_scale, x_zero_point, packed, bias, other, other_scale, other_zero_point, out_scale, out_zero_point, relu,
      out_channels, kernel_size, stride, padding, dilation, backend):
    return torch.empty_like(other)


def _single_user(n: Node) -> Node | None:
    return next(iter(n.users)) if len(n.users) == 1 else None


def _lower_conv_add(gm: GraphModule, add: Node, backend_name: str) -> bool:
    # Pattern helpers of the core's lowering (kept private there; see the plugin report).
    from quantplug.lowering import _bias_attr, _erase_chain, _float_bias, _packed_attrs, _quantized_tail, _weight_qparams

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
    w = _weight_qparams(gm, w_dq)
    if w is None or w[0].dim() != 4 or w[0].dtype != torch.int8 or bool((w[2] != 0).any()):
        return False
    bias = _float_bias(gm, bias_node)
    if bias is False:
        return False
    relu, q_out, last = _quantized_tail(add)
    if q_out is None or x_dq.args[5] != torch.uint8 or other.args[5] != torch.uint8 or q_out.args[5] != torch.uint8:
        return False
    oval, cval = other.meta.get("val"), conv.meta.get("val")
    if oval is not None and cval is not None and tuple(oval.shape) != tuple(cval.shape):
        return False  # broadcasting add: not a sum post-op
    k = load_kernels()
    w_q, w_s, w_z = w
    stride, padding, dilation = [list(v) * (2 // len(v)) if len(v) == 1 else list(v) for v in (stride, padding, dilation)]
    packed = k.pack_conv2d_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous(), stride, padding, dilation,
                                  int(groups))
    graph = gm.graph
    with graph.inserting_before(add):
        packed_nodes = _packed_attrs(gm, conv, packed)
        bias_attr = _bias_attr(gm, conv, bias)
        new = graph.call_function(torch.ops.quantplug_x86_onednn.conv2d_add.default, (
            x_dq.args[0], float(x_dq.args[1]), int(x_dq.args[2]), packed_nodes, bias_attr,
            other.args[0], float(other.args[1]), int(other.args[2]), float(q_out.args[1]), int(q_out.args[2]),
            relu, int(w_q.shape[0]), [int(w_q.shape[2]), int(w_q.shape[3])], stride, padding, dilation,
            backend_name))
    new.meta["val"] = q_out.meta.get("val")
    new.meta[EXPLAIN_KEY] = (f"{backend_name} int8 conv2d+add{'+relu' if relu else ''} fused kernel "
                             f"({k.selected_isa()})")
    q_out.replace_all_uses_with(new)
    _erase_chain(graph, q_out, last, add, conv)
    return True


def lower_x86_onednn(gm: GraphModule) -> GraphModule:
    """Replace the reference conv2d + add (+ relu) patterns of ``gm`` with the fused kernel, in place.

    Registered as ``Backend.lowering``; the core runs it before its generic lowering.
    """
    from quantplug.prepare import META_KEY

    backend_name = gm.meta.get(META_KEY, {}).get("backend") or "x86_onednn"
    count = 0
    for n in list(gm.graph.nodes):
        if n.graph is gm.graph and n.op == "call_function" and n.target == torch.ops.aten.add.Tensor:
            count += _lower_conv_add(gm, n, backend_name)
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    info = gm.meta.setdefault(META_KEY, {})
    info["x86_onednn_fused_conv_add"] = info.get("x86_onednn_fused_conv_add", 0) + count
    return gm
