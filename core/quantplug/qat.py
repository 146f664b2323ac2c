"""Quantization-aware training on exported graphs.

Two things an exported training graph needs that an ``nn.Module`` gets for free:

* **Train / eval switching.** ``torch.export`` bakes the training flag into
  ``batch_norm`` and ``dropout`` calls, so ``model.eval()`` does nothing.
  :func:`move_exported_model_to_eval` / :func:`move_exported_model_to_train`
  rewrite only that flag, keeping each call's own ``p``, ``eps`` and
  ``momentum`` (rewriting the whole op with defaults is the PT2E bug users
  hit: every dropout became p=0.5). :func:`allow_exported_model_train_eval`
  makes ``model.train()`` / ``model.eval()`` call them.
* **Conv-BN trained as it will run.** The converted model runs one conv with
  BN folded in, and quantizes the *folded* weight. :func:`fold_conv_bn_for_qat`
  rewrites ``conv(x, fq(w)) -> bn`` into
  ``bn(conv(x, fq(w * s)) / s + b)`` with ``s = gamma / sqrt(running_var + eps)``,
  so fake quantization sees the folded weight while BN still trains on batch
  statistics (the simulated-folding scheme of Jacob et al. 2018, also used by
  PyTorch's intrinsic QAT modules). :func:`finalize_qat_conv_bn` replaces it
  with a real folded conv at convert time.
"""

from __future__ import annotations

import operator
import types

import torch
from torch.fx import GraphModule, Node

from .fusion import bn_node_params
from .ops import is_op

__all__ = [
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "fold_conv_bn_for_qat",
    "finalize_qat_conv_bn",
]

aten = torch.ops.aten
_QAT_BN = "quantplug_qat_conv_bn"


def _set_training_flags(gm: GraphModule, training: bool) -> None:
    changed = False
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if n.target == aten.batch_norm.default and n.args[5] != training:
            args = list(n.args)
            args[5] = training
            n.args = tuple(args)
            changed = True
        elif n.target in (aten.dropout.default, aten.feature_dropout.default) and n.args[2] != training:
            n.args = (n.args[0], n.args[1], training)  # keep this dropout's own p
            changed = True
    for m in gm.modules():
        if m is not gm:
            m.training = training
    gm.training = training
    if changed:
        gm.recompile()


def move_exported_model_to_eval(model: GraphModule) -> GraphModule:
    """Switch batch_norm and dropout in an exported model to eval behaviour, in place."""
    _set_training_flags(model, False)
    return model


def move_exported_model_to_train(model: GraphModule) -> GraphModule:
    """Switch batch_norm and dropout in an exported model to training behaviour, in place."""
    _set_training_flags(model, True)
    return model


def allow_exported_model_train_eval(model: GraphModule) -> GraphModule:
    """Make ``model.train()`` and ``model.eval()`` work on an exported model."""

    def _train(self, mode: bool = True):
        _set_training_flags(self, mode)
        return self

    def _eval(self):
        _set_training_flags(self, False)
        return self

    model.train = types.MethodType(_train, model)
    model.eval = types.MethodType(_eval, model)
    return model


def _find_weight_fq(conv: Node) -> tuple[Node, Node] | None:
    w = conv.args[1]
    if isinstance(w, Node) and w.op == "call_module" and w.args and isinstance(w.args[0], Node) and w.args[0].op == "get_attr":
        return w, w.args[0]
    return None


def fold_conv_bn_for_qat(gm: GraphModule) -> int:
    """Rewrite each training-mode conv -> batch_norm into the simulated-folding form; returns the count."""
    graph, count = gm.graph, 0
    for conv in list(graph.nodes):
        if not is_op(conv, "conv1d", "conv2d") or len(conv.users) != 1:
            continue
        bn = next(iter(conv.users))
        if bn.target != aten.batch_norm.default:
            continue
        found = _find_weight_fq(conv)
        if found is None:
            continue
        fq_node, w_node = found
        p = bn_node_params(bn)
        spatial = [1] * (len(conv.meta["val"].shape) - 2) if "val" in conv.meta else [1, 1]
        bias = conv.args[2] if len(conv.args) > 2 else None
        with graph.inserting_before(fq_node):
            var_eps = graph.call_function(aten.add.Tensor, (p["var"], p["eps"]))
            std = graph.call_function(aten.sqrt.default, (var_eps,))
            factor = graph.call_function(aten.div.Tensor, (p["weight"], std)) if p["weight"] is not None \
                else graph.call_function(aten.reciprocal.default, (std,))
            w_factor = graph.call_function(aten.reshape.default, (factor, [-1, 1, *spatial]))
            w_scaled = graph.call_function(aten.mul.Tensor, (w_node, w_factor))
        fq_node.replace_input_with(w_node, w_scaled)
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[2] = None
        conv.args = tuple(args)
        with graph.inserting_after(conv):
            o_factor = graph.call_function(aten.reshape.default, (factor, [1, -1, *spatial]))
        with graph.inserting_after(o_factor):
            unscaled = graph.call_function(aten.div.Tensor, (conv, o_factor))
        last = unscaled
        if isinstance(bias, Node):
            with graph.inserting_after(unscaled):
                b_shaped = graph.call_function(aten.reshape.default, (bias, [1, -1, *spatial]))
            with graph.inserting_after(b_shaped):
                last = graph.call_function(aten.add.Tensor, (unscaled, b_shaped))
        bn.replace_input_with(conv, last)
        bn.meta[_QAT_BN] = dict(conv=conv.name, w_scaled=w_scaled.name, weight=w_node.name,
                                bias=bias.name if isinstance(bias, Node) else None, last=last.name)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count


def _const(gm: GraphModule, node: Node | None):
    if node is None:
        return None
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value


def finalize_qat_conv_bn(gm: GraphModule) -> int:
    """At convert: turn each simulated-folding conv-bn into one conv with folded weight and bias."""
    graph = gm.graph
    nodes = {n.name: n for n in graph.nodes}
    count = 0
    for bn in list(graph.nodes):
        tag = bn.meta.get(_QAT_BN)
        if tag is None:
            continue
        conv, w_scaled, w_node = nodes[tag["conv"]], nodes[tag["w_scaled"]], nodes[tag["weight"]]
        p = bn_node_params(bn)
        with torch.no_grad():
            var, mean = _const(gm, p["var"]).float(), _const(gm, p["mean"]).float()
            gamma = _const(gm, p["weight"]).float() if p["weight"] is not None else torch.ones_like(var)
            beta = _const(gm, p["bias"]).float() if p["bias"] is not None else torch.zeros_like(var)
            factor = gamma * torch.rsqrt(var + p["eps"])
            w = _const(gm, w_node).float()
            b = _const(gm, nodes[tag["bias"]]).float() if tag["bias"] else torch.zeros_like(var)
            w_f = w * factor.reshape(-1, *([1] * (w.dim() - 1)))
            b_f = (b - mean) * factor + beta
        base = str(w_node.target).replace(".", "_")
        gm.register_buffer(f"{base}_qat_folded", w_f)
        gm.register_buffer(f"{base}_qat_folded_bias", b_f)
        with graph.inserting_before(w_scaled):
            wf_node = graph.get_attr(f"{base}_qat_folded")
        with graph.inserting_before(conv):
            bf_node = graph.get_attr(f"{base}_qat_folded_bias")
        w_scaled.replace_all_uses_with(wf_node)
        args = list(conv.args)
        args[2] = bf_node
        conv.args = tuple(args)
        out = bn
        getitems = [u for u in bn.users if u.target is operator.getitem]
        if getitems:
            out = next(u for u in getitems if u.args[1] == 0)
        out.replace_all_uses_with(conv)
        for u in getitems:
            graph.erase_node(u)
        graph.erase_node(bn)
        count += 1
    if count:
        graph.eliminate_dead_code()
        graph.lint()
        gm.recompile()
    return count
