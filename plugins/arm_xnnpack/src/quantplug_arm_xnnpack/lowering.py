"""Lowering of the weight-only linears, which the core's generic lowering does not know.

The core lowers ``dq(x) -> linear -> q`` (static), dynamic linears, conv2d
and add to ``quantplug::*`` ops that call this plugin's ``XNNPACKKernels``.
This module adds the fp32-activation linears::

    linear(x_fp32, dequantize_per_group(w_q, scales, 0, g, -8, 7), bias)
        -> quantplug_arm_xnnpack::linear_int4(x, packed, scales, bias, g, n)        (f32-qb4w)
    linear(x_fp32, dequantize_per_channel(w_q, scales, 0, 0, lo, hi, int8), bias)
        -> quantplug_arm_xnnpack::linear_weight_only(x, packed, scales, ...)        (f32-qc8w)

(also ``dequantize_per_tensor`` int8 weights). The ops live in the plugin's
own namespace ``quantplug_arm_xnnpack`` (a plugin never defines ops in the
core's ``quantplug`` namespace); ``quantplug.explain`` and ``quantplug.save``
recognise ``quantplug_*`` namespaces. They are defined with
``torch.library.Library`` define/impl rather than ``custom_op``: the
dispatcher overhead is ~2 us per call instead of ~9 us. They have fake
implementations, so lowered models still export and compile. Packed weights
are ordinary buffers of the GraphModule (it pickles).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.fx import GraphModule, Node

from quantplug.direct_calls import impl_cpu
from quantplug.lowering import EXPLAIN_KEY
from quantplug.quant_ops import ops as qops

from .backend_config import WEIGHT_RANGE
from .kernels import GROUP_SIZES, PackedInt4LinearWeight, PackedLinearWeight, load_kernels

__all__ = ["lower", "LIB", "NAMESPACE"]

#: torch.ops namespace of the plugin's own lowered ops.
NAMESPACE = "quantplug_arm_xnnpack"
LIB = torch.library.Library(NAMESPACE, "DEF")
LIB.define("linear_int4(Tensor x, Tensor packed, Tensor scales, Tensor? bias, int group_size, int n) -> Tensor")
LIB.define("linear_weight_only(Tensor x, Tensor packed, Tensor scales, Tensor zero_points, Tensor row_sums, "
           "Tensor? bias, int n, int k) -> Tensor")


def _linear_int4_impl(x: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None, group_size: int, n: int) -> Tensor:
    # packed is [ceil(n / 16), k / 8, 64] (kernels.PackedInt4LinearWeight)
    weights = PackedInt4LinearWeight(packed, scales, int(group_size), int(n), int(packed.shape[1]) * 8)
    return load_kernels().linear_int4_weight_only(x.contiguous(), weights, bias)


def _linear_weight_only_impl(x: Tensor, packed: Tensor, scales: Tensor, zero_points: Tensor, row_sums: Tensor,
                             bias: Tensor | None, n: int, k: int) -> Tensor:
    weights = PackedLinearWeight(packed, scales, zero_points, row_sums, int(n), int(k))
    return load_kernels().linear_weight_only(x.contiguous(), weights, bias)


impl_cpu(LIB, "linear_int4", _linear_int4_impl)  # direct calls from lowered graphs
impl_cpu(LIB, "linear_weight_only", _linear_weight_only_impl)  # direct calls from lowered graphs


@torch.library.register_fake(f"{NAMESPACE}::linear_int4", lib=LIB)
def _(x, packed, scales, bias, group_size, n):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake(f"{NAMESPACE}::linear_weight_only", lib=LIB)
def _(x, packed, scales, zero_points, row_sums, bias, n, k):
    return x.new_empty((*x.shape[:-1], n))


def _const(gm: GraphModule, node: object) -> Tensor | None:
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, Tensor) else None


def _register(gm: GraphModule, name: str, value: Tensor) -> Node:
    gm.register_buffer(name, value)
    return gm.graph.get_attr(name)


def _fp32_input_and_bias(gm: GraphModule, lin: Node) -> tuple[str | None, Tensor | None]:
    """(why the linear cannot run a weight-only kernel or None, its constant fp32 bias or None)."""
    x = lin.args[0]
    x_val = x.meta.get("val") if isinstance(x, Node) else None
    if not isinstance(x_val, Tensor) or x_val.dtype != torch.float32:
        return "input is not fp32", None
    bias = lin.args[2] if len(lin.args) > 2 else None
    bias_t = _const(gm, bias) if bias is not None else None
    if bias is not None and bias_t is None:
        return "bias is not a constant", None
    return None, bias_t.to(torch.float32).contiguous() if bias_t is not None else None


def _replace(gm: GraphModule, lin: Node, w_dq: Node, op, args: tuple, explain: str) -> None:
    with gm.graph.inserting_before(lin):
        new = gm.graph.call_function(op, args)
    new.meta["val"] = lin.meta.get("val")
    new.meta[EXPLAIN_KEY] = explain
    lin.replace_all_uses_with(new)
    gm.graph.erase_node(lin)
    if not w_dq.users:
        gm.graph.erase_node(w_dq)


def _lower_int4_linear(gm: GraphModule, lin: Node, w_dq: Node, kernels) -> bool:
    q, scales, zps = (_const(gm, a) for a in w_dq.args[:3])
    group_size, qmin, qmax = w_dq.args[3:6]
    reason, bias = _fp32_input_and_bias(gm, lin)
    if q is None or scales is None or zps is None:
        reason = "int4 weight is not a constant"
    elif q.dim() != 2 or q.dtype != torch.int8 or qmin < -8 or qmax > 7:
        reason = f"weight is not 2-D int4 in [-8, 7] (shape {tuple(q.shape)}, range [{qmin}, {qmax}])"
    elif bool((zps != 0).any()):
        reason = "int4 weights are asymmetric; XNNPACK qb4w needs zero point 0"
    elif group_size not in GROUP_SIZES:
        reason = f"group_size={group_size} is not one of {list(GROUP_SIZES)}"
    if reason is not None:
        lin.meta[EXPLAIN_KEY] = f"reference: {reason}"
        return False
    packed = kernels.pack_linear_weight_int4(q.contiguous(), scales.to(torch.float32).reshape(q.shape[0], -1).contiguous(),
                                             int(group_size))
    with gm.graph.inserting_before(lin):
        args = (lin.args[0], _register(gm, f"{lin.name}_int4_packed", packed.packed),
                _register(gm, f"{lin.name}_int4_scales", packed.scales),
                _register(gm, f"{lin.name}_bias_fp32", bias) if bias is not None else None, int(group_size), packed.n)
    _replace(gm, lin, w_dq, torch.ops.quantplug_arm_xnnpack.linear_int4.default, args,
             f"xnnpack int4 weight-only linear kernel (f32_qb4w, group {group_size}, {kernels.selected_isa()})")
    return True


def _int8_weight(gm: GraphModule, w_dq: Node) -> tuple[str | None, Tensor | None, Tensor | None]:
    """(reason or None, int8 weight [N, K], fp32 scales [N]) of a per-channel / per-tensor weight dequantize."""
    if w_dq.target == qops.dequantize_per_channel.default:
        q, scales, zps = (_const(gm, a) for a in w_dq.args[:3])
        axis, qmin, qmax, dtype = w_dq.args[3:7]
        if q is None or scales is None or zps is None:
            return "int8 weight is not a constant", None, None
        if axis != 0:
            return f"weight quantized along axis {axis}, not per output channel", None, None
    else:
        q = _const(gm, w_dq.args[0])
        scale, zp, qmin, qmax, dtype = w_dq.args[1:6]
        if q is None or not isinstance(scale, float):
            return "int8 weight is not a constant", None, None
        scales, zps = torch.full((q.shape[0],), scale), torch.full((q.shape[0],), zp, dtype=torch.int32)
    if dtype != torch.int8 or q.dtype != torch.int8 or q.dim() != 2:
        return f"weight is not 2-D int8 (dtype {dtype}, shape {tuple(q.shape)})", None, None
    if qmin < WEIGHT_RANGE[0] or qmax > WEIGHT_RANGE[1]:
        return f"weight range [{qmin}, {qmax}] exceeds qc8w's {list(WEIGHT_RANGE)}", None, None
    if bool((zps != 0).any()):
        return "int8 weights are asymmetric; XNNPACK qc8w needs zero point 0", None, None
    return None, q, scales.to(torch.float32).reshape(-1)


def _lower_int8_weight_only_linear(gm: GraphModule, lin: Node, w_dq: Node, kernels) -> bool:
    reason, q, scales = _int8_weight(gm, w_dq)
    why_not, bias = _fp32_input_and_bias(gm, lin)
    reason = reason or why_not
    if reason is not None:
        lin.meta[EXPLAIN_KEY] = f"reference: {reason}"
        return False
    packed = kernels.pack_linear_weight(q.contiguous(), scales.contiguous(),
                                        torch.zeros(q.shape[0], dtype=torch.int32))
    name = f"{lin.name}_qc8w"
    with gm.graph.inserting_before(lin):
        args = (lin.args[0], _register(gm, f"{name}_packed", packed.packed),
                _register(gm, f"{name}_scales", packed.scales), _register(gm, f"{name}_zero_points", packed.zero_points),
                _register(gm, f"{name}_row_sums", packed.row_sums),
                _register(gm, f"{lin.name}_bias_fp32", bias) if bias is not None else None, packed.n, packed.k)
    _replace(gm, lin, w_dq, torch.ops.quantplug_arm_xnnpack.linear_weight_only.default, args,
             f"xnnpack int8 weight-only linear kernel (f32_qc8w, {kernels.selected_isa()})")
    return True


def lower(gm: GraphModule) -> GraphModule:
    """``Backend.lowering`` of the xnnpack backend: lower weight-only linears (int4, int8), in place.

    Runs before the core's generic lowering (static and dynamic linears, conv,
    add); the core then removes dead nodes and recompiles. A static linear's
    weight dequantize feeds a linear whose input is a dequantize (int8), never
    an fp32 tensor, so only weight-only linears match here.
    """
    kernels = load_kernels()
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default or len(node.args) < 2:
            continue
        w_dq, x = node.args[1], node.args[0]
        if not isinstance(w_dq, Node):
            continue
        if w_dq.target == qops.dequantize_per_group.default:
            _lower_int4_linear(gm, node, w_dq, kernels)
        elif w_dq.target in (qops.dequantize_per_channel.default, qops.dequantize_per_tensor.default) and not (
                isinstance(x, Node) and x.op == "call_function" and "dequantize" in str(x.target)):
            _lower_int8_weight_only_linear(gm, node, w_dq, kernels)
    return gm
