"""``quantplug.explain``: what really runs in int8 in a converted model.

Users of today's stacks cannot tell whether their "quantized" model runs
int8 kernels or fp32 wrapped in quantize/dequantize. ``explain`` lists every
compute node of a converted model with what executes it:

* ``kernel``    a backend kernel (which backend, which op, which ISA path)
* ``reference`` a float op between dequantize and quantize (reference
  representation), with the reason it was not lowered
* ``float``     not quantized at all, with the reason the quantizer left it

Every reason starts with its category (:data:`REASONS`): ``no pattern`` (no
rule or kernel pattern matches the op in this context), ``constraint
violated`` (a pattern exists but the qparams, shapes or arguments are outside
what the kernel computes), ``op unsupported by backend`` (the backend has no
kernel or pattern for the op), ``excluded by config`` (the user's config
keeps it float).
"""

from __future__ import annotations

from dataclasses import dataclass


from torch.fx import GraphModule

from .ops import op_name
from .prepare import META_KEY
from .quant_ops import ops as qops
from .direct_calls import op_of
from .lowering import QDQ_KERNEL_OPS
from .specs import ANNOTATION_KEY, EXPLAIN_KEY, INTEGER_OP_PREFIX

__all__ = ["explain", "ExplainReport", "ExplainRow", "REASONS"]

#: The categories a non-kernel row's detail starts with.
REASONS = ("no pattern", "constraint violated", "op unsupported by backend", "excluded by config",
           "reference representation")

_QDQ = {
    qops.quantize_per_tensor.default, qops.dequantize_per_tensor.default, qops.quantize_per_channel.default,
    qops.dequantize_per_channel.default, qops.dequantize_per_group.default, qops.quantize_dequantize_dynamic.default,
    *QDQ_KERNEL_OPS.values(),  # the same quantize / dequantize, run by the backend's kernel after lowering
}
_DATA_MOVEMENT = {"view", "reshape", "flatten", "permute", "transpose", "t", "getitem", "_guards_fn", "sym_size", "contiguous", "clone", "expand", "unsqueeze", "squeeze", "detach"}


@dataclass(frozen=True)
class ExplainRow:
    """One compute node: its name, op, how it runs and why."""

    node: str
    op: str
    runs_as: str  # "kernel", "reference" or "float"
    detail: str

    @property
    def reason(self) -> str | None:
        """The category of why this node is not a kernel (one of :data:`REASONS`), else None."""
        if self.runs_as == "kernel":
            return None
        return next((r for r in REASONS if self.detail.startswith(r)), "no pattern")


@dataclass(frozen=True)
class ExplainReport:
    """The rows of :func:`explain`, printable as a table."""

    backend: str | None
    rows: tuple[ExplainRow, ...]

    @property
    def kernels(self) -> list[ExplainRow]:
        """Rows executed by backend kernels."""
        return [r for r in self.rows if r.runs_as == "kernel"]

    @property
    def not_lowered(self) -> list[ExplainRow]:
        """Rows left in reference form or float."""
        return [r for r in self.rows if r.runs_as != "kernel"]

    def __str__(self) -> str:
        head = ("node", "op", "runs as", "detail")
        rows = [head] + [(r.node, r.op, r.runs_as, r.detail) for r in self.rows]
        w = [max(len(str(r[i])) for r in rows) for i in range(3)]
        lines = [f"backend: {self.backend}   kernels: {len(self.kernels)}   not lowered: {len(self.not_lowered)}"]
        lines += ["  ".join(str(c).ljust(w[i]) if i < 3 else str(c) for i, c in enumerate(r)) for r in rows]
        return "\n".join(lines)


def _op_label(target) -> str:
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


_QUANTIZE = {qops.quantize_per_tensor.default, qops.quantize_per_channel.default,
             QDQ_KERNEL_OPS[qops.quantize_per_tensor.default]}
_FUSED_TAIL = {"relu", "hardtanh", "batch_norm"}


def _feeds_quantize(n) -> bool:
    """True when ``n``'s output (through a fused relu / hardtanh) is quantized: a quantized pattern."""
    for _ in range(3):
        if any(op_of(u.target) in _QUANTIZE for u in n.users):
            return True
        users = list(n.users)
        if len(users) != 1 or op_name(users[0]) not in _FUSED_TAIL:
            return False
        n = users[0]
    return False


def _quantized_pattern(n, dq_inputs) -> bool:
    """Was ``n`` annotated for quantization (rather than a float op reading dequantized values)?"""
    ann = n.meta.get(ANNOTATION_KEY)
    if ann is not None:
        return True
    if any(op_of(a.target) == qops.quantize_dequantize_dynamic.default for a in dq_inputs):
        return True
    # a reloaded model keeps no annotations: a quantized output marks a quantized pattern
    return not any(ANNOTATION_KEY in m.meta for m in n.graph.nodes) and _feeds_quantize(n)


def explain(model: GraphModule) -> ExplainReport:
    """Report, for a converted model, which nodes run which kernel and which stayed float and why."""
    if not isinstance(model, GraphModule):
        raise TypeError(f"explain() takes the GraphModule returned by convert_pt2e, got {type(model).__name__}")
    info = model.meta.get(META_KEY, {})
    rows = []
    for n in model.graph.nodes:
        target = op_of(n.target)  # a lowered node may call its op's direct-call function
        if n.op != "call_function" or target in _QDQ:
            continue
        label = _op_label(target)
        if label in _DATA_MOVEMENT:
            continue
        ns = getattr(target, "namespace", None) or ""
        # "quantplug" holds the core's lowered ops; plugins register their own fused ops
        # under "quantplug_<package>" (e.g. quantplug_x86_onednn::conv2d_add).
        if ns == "quantplug" or ns.startswith("quantplug_"):
            detail = n.meta.get(EXPLAIN_KEY) or f"{ns} kernel ({info.get('backend')})"
            rows.append(ExplainRow(n.name, label, "kernel", detail))
            continue
        if str(n.meta.get(EXPLAIN_KEY, "")).startswith(INTEGER_OP_PREFIX):
            # lowering ran an ATen op directly on the quantized integers (e.g. cat with shared qparams)
            rows.append(ExplainRow(n.name, label, "kernel", n.meta[EXPLAIN_KEY]))
            continue
        dq_inputs = [a for a in n.all_input_nodes if op_of(a.target) in _QDQ]
        if dq_inputs and _quantized_pattern(n, dq_inputs):
            why = n.meta.get(EXPLAIN_KEY) or (
                f"op unsupported by backend: {info.get('backend')!r} has no kernel for {label}" if info.get("lowered")
                else "reference representation: convert_pt2e(lower=False) keeps explicit quantize/dequantize")
            rows.append(ExplainRow(n.name, label, "reference", why))
        else:
            why = n.meta.get(EXPLAIN_KEY) or (
                f"no pattern: the {info.get('backend')} quantizer has no rule for "
                f"{op_name(n) or label}" + ("" if op_name(n) else " (not in quantplug.ops.OP_TARGETS)"))
            rows.append(ExplainRow(n.name, label, "float", why))
    return ExplainReport(info.get("backend"), tuple(rows))



