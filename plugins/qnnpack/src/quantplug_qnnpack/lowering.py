"""The qnnpack plugin's own lowering: sigmoid / tanh / hardsigmoid as lookup tables.

The core lowers linear, conv, add, mul and pools (``quantplug.lowering``). It
has no pattern for QNNPACK's fixed-qparams operators, so after
``convert_pt2e`` they stay in reference form::

    dq(x) -> sigmoid | tanh | hardsigmoid -> q(fixed scale, zero point)

This pass, registered as ``Backend.lowering`` (the core runs it before its
generic lowering), replaces each such chain with one
``quantplug_qnnpack::lookup(x_q, table)`` op: a 256-entry uint8 table built
once at lowering time from the input and output qparams (QNNPACK's x8lut
design), stored as a buffer of the GraphModule so the model pickles, saves
(``quantplug.save`` accepts ``quantplug_*`` namespaces) and exports (the op
has a fake implementation). The table is computed with the reference
arithmetic, so the lowered op is bit-exact with the chain it replaces.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from quantplug.direct_calls import impl_cpu
from quantplug.ops import is_op, op_name
from quantplug.quant_ops import ops as qops

from .kernels import load_kernels

__all__ = ["lower_qnnpack", "LIB", "LUT_OPS"]

EXPLAIN_KEY = "quantplug_explain"
#: ops lowered to a table lookup
LUT_OPS = ("sigmoid", "tanh", "hardsigmoid")

LIB = torch.library.Library("quantplug_qnnpack", "DEF")
LIB.define("lookup(Tensor x, Tensor table) -> Tensor")


def _lookup_impl(x, table):
    return load_kernels().lookup(x, table)


impl_cpu(LIB, "lookup", _lookup_impl)  # direct calls from lowered graphs


@torch.library.register_fake("quantplug_qnnpack::lookup", lib=LIB)
def _(x, table):
    return torch.empty_like(x)


def _single_user(n: Node) -> Node | None:
    return next(iter(n.users)) if len(n.users) == 1 else None


def _lower_lut(gm: GraphModule, node: Node, kernels) -> bool:
    """Replace ``dq(x) -> node -> q`` (uint8 in and out, per tensor) with a table lookup."""
    x_dq = node.args[0] if node.args else None
    q_out = _single_user(node)
    if len(node.args) != 1 or node.kwargs:
        return False
    if not (isinstance(x_dq, Node) and x_dq.target == qops.dequantize_per_tensor.default
            and isinstance(q_out, Node) and q_out.target == qops.quantize_per_tensor.default):
        return False
    # args: (input, scale, zero_point, quant_min, quant_max, dtype)
    if x_dq.args[5] != torch.uint8 or q_out.args[5] != torch.uint8:
        return False
    if tuple(x_dq.args[3:5]) != (0, 255) or tuple(q_out.args[3:5]) != (0, 255):
        return False
    name = op_name(node)
    table = kernels.lut_table(name, float(x_dq.args[1]), int(x_dq.args[2]), float(q_out.args[1]),
                              int(q_out.args[2]))
    attr = f"{node.name}_lut"
    gm.register_buffer(attr, table.clone())
    graph = gm.graph
    with graph.inserting_before(node):
        table_node = graph.get_attr(attr)
        new = graph.call_function(torch.ops.quantplug_qnnpack.lookup.default, (x_dq.args[0], table_node))
    new.meta["val"] = q_out.meta.get("val")
    new.meta[EXPLAIN_KEY] = f"qnnpack int8 {name} lookup-table kernel (x8lut, scalar)"
    q_out.replace_all_uses_with(new)
    graph.erase_node(q_out)
    graph.erase_node(node)
    return True


def lower_qnnpack(gm: GraphModule) -> GraphModule:
    """Lower the reference sigmoid / tanh / hardsigmoid chains of ``gm`` to table lookups, in place."""
    from quantplug.prepare import META_KEY

    kernels = load_kernels()
    count = 0
    for n in list(gm.graph.nodes):
        if n.graph is gm.graph and n.op == "call_function" and is_op(n, *LUT_OPS):
            count += _lower_lut(gm, n, kernels)
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    info = gm.meta.setdefault(META_KEY, {})
    info["qnnpack_lookup_tables"] = info.get("qnnpack_lookup_tables", 0) + count
    return gm
