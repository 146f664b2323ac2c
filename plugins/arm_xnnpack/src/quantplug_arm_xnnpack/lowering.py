"""Lowering of the patterns the core's generic lowering does not know: int4 weight-only linear.

The core lowers ``dq(x) -> linear -> q`` (static) and dynamic linears to
``quantplug::linear`` / ``quantplug::linear_dynamic``, which call this
plugin's ``XNNPACKKernels.linear`` / ``linear_dynamic``. This module adds::

    linear(x_fp32, dequantize_per_group(w_q, scales, zero_points=0, g, -8, 7), bias)
        -> quantplug::xnnpack_linear_int4(x, packed, scales, bias, g, n)

(XNNPACK's f32-qb4w GEMM). The op lives in the ``quantplug`` namespace, with
the ``xnnpack_`` prefix, so ``quantplug.explain`` reports it as a kernel; it
has a fake implementation, so lowered models still export and compile.
Packed weights are ordinary buffers of the GraphModule (it pickles).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.fx import GraphModule, Node

from quantplug.lowering import EXPLAIN_KEY
from quantplug.quant_ops import ops as qops

from .kernels import GROUP_SIZES, PackedInt4LinearWeight, load_kernels

__all__ = ["lower", "LIB"]

LIB = torch.library.Library("quantplug", "FRAGMENT")
LIB.define("xnnpack_linear_int4(Tensor x, Tensor packed, Tensor scales, Tensor? bias, int group_size, int n) -> Tensor")


def _linear_int4_impl(x: Tensor, packed: Tensor, scales: Tensor, bias: Tensor | None, group_size: int, n: int) -> Tensor:
    weights = PackedInt4LinearWeight(packed, scales, int(group_size), int(n), int(packed.shape[1]) * 2)
    return load_kernels().linear_int4_weight_only(x.contiguous(), weights, bias)


LIB.impl("xnnpack_linear_int4", _linear_int4_impl, "CPU")


@torch.library.register_fake("quantplug::xnnpack_linear_int4", lib=LIB)
def _(x, packed, scales, bias, group_size, n):
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


def _lower_int4_linear(gm: GraphModule, lin: Node, kernels) -> bool:
    w_dq = lin.args[1]
    if not (isinstance(w_dq, Node) and w_dq.target == qops.dequantize_per_group.default):
        return False
    q, scales, zps = (_const(gm, a) for a in w_dq.args[:3])
    group_size, qmin, qmax = w_dq.args[3:6]
    x = lin.args[0]
    x_val = x.meta.get("val") if isinstance(x, Node) else None
    reason = None
    if q is None or scales is None or zps is None:
        reason = "int4 weight is not a constant"
    elif q.dim() != 2 or q.dtype != torch.int8 or qmin < -8 or qmax > 7:
        reason = f"weight is not 2-D int4 in [-8, 7] (shape {tuple(q.shape)}, range [{qmin}, {qmax}])"
    elif bool((zps != 0).any()):
        reason = "int4 weights are asymmetric; XNNPACK qb4w needs zero point 0"
    elif group_size not in GROUP_SIZES:
        reason = f"group_size={group_size} is not one of {list(GROUP_SIZES)}"
    elif not isinstance(x_val, Tensor) or x_val.dtype != torch.float32:
        reason = "input is not fp32"
    bias = lin.args[2] if len(lin.args) > 2 else None
    bias_t = _const(gm, bias) if bias is not None else None
    if reason is None and bias is not None and bias_t is None:
        reason = "bias is not a constant"
    if reason is not None:
        lin.meta[EXPLAIN_KEY] = f"reference: {reason}"
        return False
    packed = kernels.pack_linear_weight_int4(q.contiguous(), scales.to(torch.float32).reshape(q.shape[0], -1).contiguous(),
                                             int(group_size))
    with gm.graph.inserting_before(lin):
        args = (x, _register(gm, f"{lin.name}_int4_packed", packed.packed),
                _register(gm, f"{lin.name}_int4_scales", packed.scales),
                _register(gm, f"{lin.name}_bias_fp32", bias_t.to(torch.float32).contiguous()) if bias_t is not None else None,
                int(group_size), packed.n)
        new = gm.graph.call_function(torch.ops.quantplug.xnnpack_linear_int4.default, args)
    new.meta["val"] = lin.meta.get("val")
    new.meta[EXPLAIN_KEY] = f"xnnpack int4 weight-only linear kernel (f32_qb4w, group {group_size}, scalar)"
    lin.replace_all_uses_with(new)
    gm.graph.erase_node(lin)
    if not w_dq.users:
        gm.graph.erase_node(w_dq)
    return True


def lower(gm: GraphModule) -> GraphModule:
    """``Backend.lowering`` of the xnnpack backend: lower int4 weight-only linears, in place.

    Runs before the core's generic lowering (static and dynamic linears);
    the core then removes dead nodes and recompiles.
    """
    kernels = load_kernels()
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
            _lower_int4_linear(gm, node, kernels)
    return gm
