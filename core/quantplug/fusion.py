"""Graph rewrites done before annotation.

``fold_batch_norm``: in an eval-mode export, ``conv -> batch_norm`` becomes one
conv with folded weight and bias (``w * gamma / sqrt(var + eps)``,
``(b - mean) * gamma / sqrt(var + eps) + beta``), which is what every int8
backend runs. Folding before annotation means the weight observer sees the
folded weight, so the quantized weight is the one the kernel uses.
Training-mode batch norms (QAT) are left for :mod:`quantplug.qat`.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from .ops import is_op

__all__ = ["fold_batch_norm", "bn_node_params"]


def _const(gm: GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value


def bn_node_params(bn: Node) -> dict:
    """Named arguments of an ``aten.batch_norm`` / ``_native_batch_norm_legit*`` node."""
    a = list(bn.args)
    if bn.target == torch.ops.aten.batch_norm.default:
        return dict(input=a[0], weight=a[1], bias=a[2], mean=a[3], var=a[4], training=a[5], momentum=a[6], eps=a[7])
    if bn.target == torch.ops.aten._native_batch_norm_legit_no_training.default:
        return dict(input=a[0], weight=a[1], bias=a[2], mean=a[3], var=a[4], training=False, momentum=a[5], eps=a[6])
    return dict(input=a[0], weight=a[1], bias=a[2], mean=a[3], var=a[4], training=a[5], momentum=a[6], eps=a[7])


def fold_batch_norm(gm: GraphModule) -> int:
    """Fold every eval-mode batch_norm that directly follows a conv into it; returns the count."""
    graph, folded = gm.graph, 0
    for conv in list(graph.nodes):
        if not is_op(conv, "conv1d", "conv2d") or len(conv.users) != 1:
            continue
        bn = next(iter(conv.users))
        if not is_op(bn, "batch_norm"):
            continue
        p = bn_node_params(bn)
        if p["training"] or p["input"] is not conv:
            continue
        w = _const(gm, conv.args[1])
        b = _const(gm, conv.args[2]) if len(conv.args) > 2 else None
        mean, var = _const(gm, p["mean"]), _const(gm, p["var"])
        gamma, beta = _const(gm, p["weight"]), _const(gm, p["bias"])
        if w is None or mean is None or var is None:
            continue
        with torch.no_grad():
            inv_std = torch.rsqrt(var.float() + p["eps"])
            g = gamma.float() if gamma is not None else torch.ones_like(inv_std)
            factor = g * inv_std
            w_f = w.float() * factor.reshape(-1, *([1] * (w.dim() - 1)))
            b0 = b.float() if b is not None else torch.zeros_like(mean.float())
            b_f = (b0 - mean.float()) * factor + (beta.float() if beta is not None else 0.0)
        base = str(conv.args[1].target).replace(".", "_")
        w_name, b_name = f"{base}_bn_folded", f"{base}_bn_folded_bias"
        gm.register_parameter(w_name, torch.nn.Parameter(w_f, requires_grad=False))
        gm.register_parameter(b_name, torch.nn.Parameter(b_f, requires_grad=False))
        with graph.inserting_before(conv):
            w_node, b_node = graph.get_attr(w_name), graph.get_attr(b_name)
        w_node.meta["val"], b_node.meta["val"] = conv.args[1].meta.get("val"), None
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1], args[2] = w_node, b_node
        conv.args = tuple(args)
        out = bn
        getitems = [u for u in bn.users if u.target is operator.getitem]
        if getitems:
            out = next(u for u in getitems if u.args[1] == 0)
        out.replace_all_uses_with(conv)
        for u in getitems:
            graph.erase_node(u)
        graph.erase_node(bn)
        folded += 1
    if folded:
        graph.eliminate_dead_code()
        graph.lint()
        gm.recompile()
    return folded
