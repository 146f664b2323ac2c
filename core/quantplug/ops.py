"""Names for the ATen ops that quantizers and backend configs talk about.

Backend configs and annotation rules use short names (``"conv2d"``,
``"relu"``) instead of ATen overloads, so a pattern table reads like the
model it describes and survives ATen renames: only this table changes.
"""

from __future__ import annotations

import torch
from torch.fx import Node

__all__ = ["OP_TARGETS", "op_name", "is_op"]

aten = torch.ops.aten


def _targets(*names: str) -> frozenset:
    found = []
    for n in names:
        packet, _, overload = n.partition(".")
        op = getattr(aten, packet, None)
        if op is not None and hasattr(op, overload or "default"):
            found.append(getattr(op, overload or "default"))
    return frozenset(found)


#: short name -> ATen overloads that mean it in an exported graph
OP_TARGETS: dict[str, frozenset] = {
    "linear": _targets("linear.default"),
    "conv1d": _targets("conv1d.default", "conv1d.padding"),
    "conv2d": _targets("conv2d.default", "conv2d.padding"),
    "conv_transpose2d": _targets("conv_transpose2d.input"),
    "matmul": _targets("matmul.default", "bmm.default", "mm.default"),
    "batch_norm": _targets(
        "batch_norm.default", "_native_batch_norm_legit_no_training.default",
        "_native_batch_norm_legit.default", "_native_batch_norm_legit_functional.default",
        "native_batch_norm.default",
    ),
    "relu": _targets("relu.default", "relu_.default"),
    "hardtanh": _targets("hardtanh.default", "hardtanh_.default", "clamp.default"),
    "add": _targets("add.Tensor", "add_.Tensor"),
    "mul": _targets("mul.Tensor", "mul_.Tensor"),
    "cat": _targets("cat.default", "concat.default"),
    "max_pool2d": _targets("max_pool2d.default", "max_pool2d_with_indices.default"),
    "avg_pool2d": _targets("avg_pool2d.default"),
    "adaptive_avg_pool2d": _targets("adaptive_avg_pool2d.default", "_adaptive_avg_pool2d.default", "mean.dim"),
    "flatten": _targets("flatten.using_ints"),
    "reshape": _targets("reshape.default", "view.default", "_unsafe_view.default"),
    "permute": _targets("permute.default", "transpose.int", "t.default"),
    "sigmoid": _targets("sigmoid.default", "sigmoid_.default"),
    "tanh": _targets("tanh.default", "tanh_.default"),
    "hardsigmoid": _targets("hardsigmoid.default", "hardsigmoid_.default"),
    "embedding": _targets("embedding.default"),
}

_BY_TARGET = {t: name for name, ts in OP_TARGETS.items() for t in ts}


def op_name(node: Node) -> str | None:
    """The short name of ``node``'s op, or ``None`` if it is not in the table."""
    if node.op != "call_function":
        return None
    return _BY_TARGET.get(node.target)


def is_op(node: Node, *names: str) -> bool:
    """True when ``node`` calls one of the ops named."""
    return op_name(node) in names
