"""Lowering: replace reference quantized patterns with a backend's fused int8 kernels.

After :func:`quantplug.convert_pt2e` builds the reference representation,
:func:`lower_model` walks the graph for patterns the backend's kernel library
implements and swaps each for one op of the ``quantplug::`` library:

==================================================  ===============================
reference pattern                                   lowered op
==================================================  ===============================
dq(x) -> linear(., dq(w_q), b) [-> relu] -> q        ``quantplug::linear``
dyn_qdq(x) -> linear(., dq(w_q), b)                  ``quantplug::linear_dynamic``
dq(x) -> conv2d(., dq(w_q), b) [-> relu] -> q        ``quantplug::conv2d`` (depthwise: groups)
dq(x) -> conv1d(., dq(w_q), b) [-> relu] -> q        ``quantplug::conv2d`` on a 1xL image
dq(a), dq(b) -> add [-> relu] -> q                   ``quantplug::add``
dq(a), dq(b) -> mul [-> relu] -> q                   ``quantplug::mul``
dq(x) -> max_pool2d -> q (same qparams)              ``quantplug::max_pool2d``
dq(x) -> avg_pool2d / adaptive_avg_pool2d -> q       ``quantplug::avg_pool2d`` / ``adaptive_avg_pool2d``
dq(x) -> adaptive_avg_pool2d(1) / mean(H,W) -> q     ``quantplug::global_avg_pool``
dq(x) -> flatten/reshape/permute -> q (same)         the same op on the integer tensor
dq(a), dq(b).. -> cat -> q (all the same qparams)    ``aten.cat`` on the integer tensors
q / dq left over (model input and output, floats)   ``quantplug::(de)quantize_per_tensor_kernel``
==================================================  ===============================

A ``hardtanh`` / ``relu6`` / ``clamp`` after conv or linear fuses when the
output qparams already imply its bounds (``relu6`` with an output observer
that saw values up to 6 is the usual case): the kernel's output clamp is
then the same function. Otherwise the pattern stays in reference form.

The lowered ops dispatch to the backend named in their ``backend`` argument
(one dictionary lookup), so one op definition serves every plugin, and
the result still works with ``torch.export`` and ``torch.compile`` (each op
has a fake implementation). Packed weights are stored as ordinary buffers of
the ``GraphModule`` (a plugin's packed-weight dataclass is flattened to a
tensor list), so the model pickles and ``state_dict`` round-trips.

Patterns the backend cannot run stay in reference form; the reason is
recorded in ``node.meta["quantplug_explain"]`` for :func:`quantplug.explain`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor
from torch.fx import GraphModule, Node

from .direct_calls import impl_cpu, op_of, use_direct_calls
from .kernels import cached_packed, default_out_range, flatten_packed, remember_packed, unflatten_packed
from .ops import is_op, op_name
from .prepare import META_KEY
from .quant_ops import LIB
from .quant_ops import ops as qops
from .specs import ANNOTATION_KEY, EXPLAIN_KEY, INTEGER_OP_PREFIX

__all__ = ["lower_model", "EXPLAIN_KEY", "QDQ_KERNEL_OPS",
           # for plugins' own passes (Backend.lowering)
           "constant", "weight_qparams", "float_bias", "store_packed", "store_bias", "quantized_tail",
           "output_range", "clamp_output", "erase_unused", "finish_plugin_pass"]

LIB.define("linear(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, float out_scale, int out_zero_point, bool relu, int n, str backend) -> Tensor")
LIB.define("linear_dynamic(Tensor x, Tensor[] packed, Tensor? bias, bool per_row, int n, str backend) -> Tensor")
LIB.define("conv2d(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, float out_scale, int out_zero_point, bool relu, int out_channels, int[] kernel_size, int[] stride, int[] padding, int[] dilation, str backend) -> Tensor")
LIB.define("max_pool2d(Tensor x, int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode, str backend) -> Tensor")
LIB.define("global_avg_pool(Tensor x, float x_scale, int x_zero_point, float out_scale, int out_zero_point, str backend) -> Tensor")
LIB.define("add(Tensor a, float a_scale, int a_zero_point, Tensor b, float b_scale, int b_zero_point, float out_scale, int out_zero_point, bool relu, str backend) -> Tensor")
LIB.define("mul(Tensor a, float a_scale, int a_zero_point, Tensor b, float b_scale, int b_zero_point, float out_scale, int out_zero_point, bool relu, str backend) -> Tensor")
LIB.define("avg_pool2d(Tensor x, int[] kernel_size, int[] stride, int[] padding, bool ceil_mode, bool count_include_pad, int? divisor_override, int zero_point, str backend) -> Tensor")
LIB.define("adaptive_avg_pool2d(Tensor x, int[] output_size, int zero_point, str backend) -> Tensor")


@functools.lru_cache(maxsize=None)
def _kernels(backend: str):
    from .registry import get_backend

    b = get_backend(backend)
    if b.kernels is None:
        raise RuntimeError(f"backend {backend!r} has no kernel library")
    return b.kernels


_packed_types: dict[tuple[str, str], type] = {}


def _packed_type(backend: str, kind: str) -> type:
    """The plugin's packed-weight dataclass for ``kind`` ("linear", "conv2d" or "int4_linear")."""
    cls = _packed_types.get((backend, kind))
    if cls is None:
        k = _kernels(backend)
        cls = getattr(k, f"packed_{kind}_type", None)
        # a plugin without the class attribute: learn the type from a tiny pack
        if cls is None and kind == "linear":
            cls = type(k.pack_linear_weight(torch.zeros(1, 1, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32)))
        elif cls is None and kind == "int4_linear":
            cls = type(k.pack_linear_weight_int4(torch.zeros(1, 32, dtype=torch.int8), torch.ones(1, 1), 32))
        elif cls is None:
            cls = type(k.pack_conv2d_weight(torch.zeros(1, 1, 1, 1, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32)))
        _packed_types[(backend, kind)] = cls
    return cls


def _packed_object(backend: str, kind: str, tensors: list) -> Any:
    # unflatten_packed keeps the object built on the first call (see its comment): the type
    # lookup is only paid when it has to build one
    hit = cached_packed(tensors)
    return hit if hit is not None else unflatten_packed(_packed_type(backend, kind), tensors)


def _linear_impl(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, n, backend):
    return _kernels(backend).linear(x, x_scale, x_zero_point, _packed_object(backend, "linear", packed), bias,
                                    out_scale, out_zero_point, relu=relu)


def _linear_dynamic_impl(x, packed, bias, per_row, n, backend):
    return _kernels(backend).linear_dynamic(x, _packed_object(backend, "linear", packed), bias, per_row=per_row)


def _conv2d_impl(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, out_channels,
                 kernel_size, stride, padding, dilation, backend):
    return _kernels(backend).conv2d(x, x_scale, x_zero_point, _packed_object(backend, "conv2d", packed), bias,
                                    out_scale, out_zero_point, relu=relu)


def _add_impl(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu, backend):
    return _kernels(backend).add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu=relu)


def _mul_impl(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu, backend):
    return _kernels(backend).mul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu=relu)


def _avg_pool2d_impl(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, zero_point, backend):
    return _kernels(backend).avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                                        zero_point=zero_point)


def _adaptive_avg_pool2d_impl(x, output_size, zero_point, backend):
    return _kernels(backend).adaptive_avg_pool2d(x, output_size, zero_point=zero_point)


def _max_pool2d_impl(x, kernel_size, stride, padding, dilation, ceil_mode, backend):
    return _kernels(backend).max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def _global_avg_pool_impl(x, x_scale, x_zero_point, out_scale, out_zero_point, backend):
    return _kernels(backend).global_avg_pool(x, x_scale, x_zero_point, out_scale, out_zero_point)


# Quantize / dequantize left in a lowered graph (the model's float input and output, float
# islands such as attention matmuls) run the backend's C kernel (bit-exact with the reference
# op: tested on every ISA by the conformance suite) instead of the reference op's five torch
# passes: 1x3x224x224 costs ~370 us that way, ~20 us in the kernel. Layouts the kernels do not
# take (non-contiguous) fall back to the reference computation.
LIB.define("quantize_per_tensor_kernel(Tensor input, float scale, int zero_point, int quant_min, int quant_max, ScalarType dtype, str backend) -> Tensor")
LIB.define("dequantize_per_tensor_kernel(Tensor input, float scale, int zero_point, int quant_min, int quant_max, ScalarType dtype, str backend) -> Tensor")


def _quantize_kernel_impl(x, scale, zero_point, quant_min, quant_max, dtype, backend):
    if x.dtype == torch.float32 and x.is_contiguous():
        return _kernels(backend).quantize_per_tensor(x, scale, zero_point, dtype, quant_min, quant_max)
    return qops.quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)


def _dequantize_kernel_impl(q, scale, zero_point, quant_min, quant_max, dtype, backend):
    if q.is_contiguous():
        return _kernels(backend).dequantize_per_tensor(q, scale, zero_point)
    return qops.dequantize_per_tensor(q, scale, zero_point, quant_min, quant_max, dtype)


impl_cpu(LIB, "quantize_per_tensor_kernel", _quantize_kernel_impl)
impl_cpu(LIB, "dequantize_per_tensor_kernel", _dequantize_kernel_impl)
torch.library.register_fake("quantplug::quantize_per_tensor_kernel",
                            lambda x, scale, zp, qmin, qmax, dtype, backend: torch.empty_like(x, dtype=dtype), lib=LIB)
torch.library.register_fake("quantplug::dequantize_per_tensor_kernel",
                            lambda q, scale, zp, qmin, qmax, dtype, backend: torch.empty_like(q, dtype=torch.float32),
                            lib=LIB)

#: reference quantize / dequantize -> the op that runs them on the backend's kernel
QDQ_KERNEL_OPS = {qops.quantize_per_tensor.default: torch.ops.quantplug.quantize_per_tensor_kernel.default,
                  qops.dequantize_per_tensor.default: torch.ops.quantplug.dequantize_per_tensor_kernel.default}


def _lower_qdq(gm: GraphModule, backend: Any, kernels: Any) -> None:
    """Point the per-tensor quantize / dequantize nodes still in ``gm`` at the backend's kernels."""
    if not (callable(getattr(kernels, "quantize_per_tensor", None))
            and callable(getattr(kernels, "dequantize_per_tensor", None))):
        return
    for n in gm.graph.nodes:
        kernel_op = QDQ_KERNEL_OPS.get(n.target)
        if kernel_op is not None and n.args[5] in (torch.uint8, torch.int8):
            n.target = kernel_op
            n.args = (*n.args[:6], backend.name)


impl_cpu(LIB, "max_pool2d", _max_pool2d_impl)
impl_cpu(LIB, "global_avg_pool", _global_avg_pool_impl)
impl_cpu(LIB, "linear", _linear_impl)
impl_cpu(LIB, "linear_dynamic", _linear_dynamic_impl)
impl_cpu(LIB, "conv2d", _conv2d_impl)
impl_cpu(LIB, "add", _add_impl)
impl_cpu(LIB, "mul", _mul_impl)
impl_cpu(LIB, "avg_pool2d", _avg_pool2d_impl)
impl_cpu(LIB, "adaptive_avg_pool2d", _adaptive_avg_pool2d_impl)


@torch.library.register_fake("quantplug::linear", lib=LIB)
def _(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, n, backend):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("quantplug::linear_dynamic", lib=LIB)
def _(x, packed, bias, per_row, n, backend):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("quantplug::conv2d", lib=LIB)
def _(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, out_channels, kernel_size, stride,
      padding, dilation, backend):
    size = [x.shape[0], out_channels]
    for i in range(2):
        size.append((x.shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1)
    return x.new_empty(size)


@torch.library.register_fake("quantplug::max_pool2d", lib=LIB)
def _(x, kernel_size, stride, padding, dilation, ceil_mode, backend):
    from .kernels import _pool_out

    size = [x.shape[0], x.shape[1]]
    for i in range(2):
        size.append(_pool_out(x.shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode))
    return x.new_empty(size)


@torch.library.register_fake("quantplug::global_avg_pool", lib=LIB)
def _(x, x_scale, x_zero_point, out_scale, out_zero_point, backend):
    return x.new_empty((x.shape[0], x.shape[1], 1, 1))


@torch.library.register_fake("quantplug::add", lib=LIB)
def _(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu, backend):
    return torch.empty_like(a)


@torch.library.register_fake("quantplug::mul", lib=LIB)
def _(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu, backend):
    return torch.empty_like(a)


@torch.library.register_fake("quantplug::avg_pool2d", lib=LIB)
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, zero_point, backend):
    from .kernels import _pool_out

    size = [x.shape[0], x.shape[1]]
    for i in range(2):
        size.append(_pool_out(x.shape[2 + i], kernel_size[i], stride[i], padding[i], 1, ceil_mode))
    return x.new_empty(size)


@torch.library.register_fake("quantplug::adaptive_avg_pool2d", lib=LIB)
def _(x, output_size, zero_point, backend):
    return x.new_empty((x.shape[0], x.shape[1], *output_size))


# ------------------------------------------------------- pattern matching --


def _const(gm: GraphModule, node: Any) -> Tensor | None:
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    v = gm
    for part in str(node.target).split("."):
        v = getattr(v, part)
    return v


def _single_user(n: Node) -> Node | None:
    return next(iter(n.users)) if len(n.users) == 1 else None


def _weight_qparams(gm: GraphModule, dq_w: Any) -> tuple[Tensor, Tensor, Tensor] | None:
    """(int8 weight [N,K], scales [N], zero points [N]) behind a weight dequantize node."""
    if not isinstance(dq_w, Node):
        return None
    if dq_w.target == qops.dequantize_per_channel.default:
        q, s, z = (_const(gm, a) for a in dq_w.args[:3])
        if q is None or s is None or dq_w.args[3] != 0:
            return None
        return q, s.float(), z.to(torch.int32)
    if dq_w.target == qops.dequantize_per_tensor.default:
        q = _const(gm, dq_w.args[0])
        if q is None:
            return None
        n = q.shape[0]
        return q, torch.full((n,), float(dq_w.args[1])), torch.full((n,), int(dq_w.args[2]), dtype=torch.int32)
    return None


def _float_bias(gm: GraphModule, node: Any) -> Tensor | None | bool:
    """fp32 bias tensor, None (no bias), or False (a bias we cannot read as a constant)."""
    if node is None:
        return None
    c = _const(gm, node)
    if c is not None:
        return c.float()
    if isinstance(node, Node) and node.target in (qops.dequantize_per_tensor.default, qops.dequantize_per_channel.default):
        q = _const(gm, node.args[0])
        if q is None:
            return False
        args = [(_const(gm, a) if isinstance(a, Node) else a) for a in node.args[1:]]
        return node.target(q, *args)
    return False


def _note(node: Node, text: str) -> None:
    node.meta[EXPLAIN_KEY] = text


# Reasons a pattern stays in reference form, by category (``quantplug.explain`` shows them).
_CONSTRAINT = "constraint violated: "
_NO_PATTERN = "no pattern: "
_UNSUPPORTED = "op unsupported by backend: "


_DEQUANTIZE = frozenset({qops.dequantize_per_tensor.default, qops.dequantize_per_channel.default,
                         qops.dequantize_per_group.default, qops.quantize_dequantize_dynamic.default})


def _is_dq(node: Any) -> bool:
    return isinstance(node, Node) and node.target == qops.dequantize_per_tensor.default


def _is_q(node: Any) -> bool:
    return isinstance(node, Node) and node.target == qops.quantize_per_tensor.default


def _clamp_bounds(node: Node) -> tuple[float, float]:
    """(min, max) of a hardtanh / clamp node (missing bounds are infinite)."""
    if node.target in (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default):
        args = list(node.args) + [-1.0, 1.0][len(node.args) - 1:]
        lo, hi = node.kwargs.get("min_val", args[1]), node.kwargs.get("max_val", args[2])
    else:
        args = list(node.args) + [None] * (3 - len(node.args))
        lo, hi = node.kwargs.get("min", args[1]), node.kwargs.get("max", args[2])
    return (float("-inf") if lo is None else float(lo)), (float("inf") if hi is None else float(hi))


def _clamp_as_relu(clamp: Node, q: Node) -> bool | None:
    """How a hardtanh/clamp before ``q`` maps onto the kernels' output clamp.

    ``True``: same as relu; ``False``: already implied by the quantized range
    (no clamp needed); ``None``: its bounds cut inside the range, so no kernel
    flag reproduces it.
    """
    lo, hi = _clamp_bounds(clamp)
    scale, zp, qmin, qmax = float(q.args[1]), int(q.args[2]), int(q.args[3]), int(q.args[4])
    inv = torch.reciprocal(torch.tensor(scale, dtype=torch.float32))

    def level(v: float) -> float:  # the quantized level of v, before the range clamp
        return float(torch.round(torch.tensor(v, dtype=torch.float32) * inv)) + zp if abs(v) != float("inf") else v

    if level(hi) < qmax:
        return None
    if lo == 0.0:
        return True
    return False if level(lo) <= qmin else None


def _quantized_tail(node: Node) -> tuple[bool, Node | None, Node]:
    """(relu fused?, the quantize node after the pattern or None, last float node).

    The activation after ``node`` may be relu, or a hardtanh / clamp whose
    bounds the output qparams imply (see :func:`_clamp_as_relu`).
    """
    tail = _single_user(node)
    if tail is not None and is_op(tail, "relu", "hardtanh"):
        q = _single_user(tail)
        if not _is_q(q):
            return False, None, tail
        relu = True if is_op(tail, "relu") else _clamp_as_relu(tail, q)
        if relu is None:
            return False, None, tail
        return relu, q, tail
    return False, (tail if _is_q(tail) else None), node


def _tail_or_note(node: Node) -> tuple[bool, Node | None, Node]:
    """:func:`_quantized_tail`, noting on ``node`` why it does not match."""
    relu, q, last = _quantized_tail(node)
    if q is None:
        if last is not node and _is_q(_single_user(last)):
            lo, hi = _clamp_bounds(last)
            _note(node, f"{_CONSTRAINT}{op_name(last)}({lo}, {hi}) cuts inside the output's quantized range, which "
                        f"the kernel's output clamp cannot express (calibrate so the observer sees the full range)")
        else:
            _note(node, f"{_NO_PATTERN}the output is not quantized (no quantize after the pattern)")
    return relu, q, last


def _erase_chain(graph, *nodes: Node) -> None:
    for n in dict.fromkeys(nodes):  # `last` may be the op itself when nothing is fused
        if not n.users:
            graph.erase_node(n)


def _out_range_or_note(node: Node, q_out: Node, backend, kernels) -> tuple[int, int] | bool | None:
    """:func:`output_range`, noting on ``node`` why it stays in reference form when ``None``."""
    out_range = output_range(q_out, kernels)
    if out_range is None:
        lo, hi = default_out_range(kernels, q_out.args[5])
        _note(node, f"{_CONSTRAINT}the output is quantized to {int(q_out.args[3])}..{int(q_out.args[4])} but "
                    f"{backend.name}'s kernels clamp to {lo}..{hi} (use {backend.name}'s own quantization config)")
    return out_range


def _lower_linear(gm: GraphModule, lin: Node, backend, kernels) -> bool:
    graph = gm.graph
    x_dq, w_dq = lin.args[0], lin.args[1]
    bias_node = lin.args[2] if len(lin.args) > 2 else None
    w = _weight_qparams(gm, w_dq)
    if w is None:
        _note(lin, f"{_NO_PATTERN}the weight is not a quantized constant")
        return False
    w_q, w_s, w_z = w
    if w_q.dtype != torch.int8 or w_q.dim() != 2:
        _note(lin, f"{_CONSTRAINT}{backend.name} linear kernels take 2-D int8 weights, got {w_q.dtype}")
        return False
    bias = _float_bias(gm, bias_node)
    if bias is False:
        _note(lin, f"{_NO_PATTERN}the bias is not a constant")
        return False
    n_out = w_q.shape[0]
    # dynamic: dyn_qdq(x) -> linear
    if isinstance(x_dq, Node) and x_dq.target == qops.quantize_dequantize_dynamic.default:
        if not hasattr(kernels, "linear_dynamic"):
            _note(lin, f"{_UNSUPPORTED}{backend.name} has no dynamic linear kernel")
            return False
        packed = kernels.pack_linear_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous())
        _packed_types[(backend.name, "linear")] = type(packed)
        per_row = bool(x_dq.args[4])
        with graph.inserting_before(lin):
            packed_nodes = _packed_attrs(gm, lin, packed)
            bias_attr = _bias_attr(gm, lin, bias)
            new = graph.call_function(torch.ops.quantplug.linear_dynamic.default,
                                      (x_dq.args[0], packed_nodes, bias_attr, per_row, n_out, backend.name))
        new.meta["val"] = lin.meta.get("val")
        _note(new, f"{backend.name} dynamic int8 linear kernel ({kernels.selected_isa()})")
        lin.replace_all_uses_with(new)
        graph.erase_node(lin)
        return True
    # static: dq(x) -> linear [-> relu] -> q
    if not _is_dq(x_dq):
        _note(lin, f"{_CONSTRAINT}the input is not quantized per tensor")
        return False
    relu, tail, last = _tail_or_note(lin)
    if tail is None:
        return False
    out_range = _out_range_or_note(lin, tail, backend, kernels)
    if out_range is None:
        return False
    q_x, x_scale, x_zp = x_dq.args[:3]
    _, out_scale, out_zp = tail.args[:3]
    packed = kernels.pack_linear_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous())
    _packed_types[(backend.name, "linear")] = type(packed)
    with graph.inserting_before(lin):
        packed_nodes = _packed_attrs(gm, lin, packed)
        bias_attr = _bias_attr(gm, lin, bias)
        new = graph.call_function(torch.ops.quantplug.linear.default,
                                  (q_x, float(x_scale), int(x_zp), packed_nodes, bias_attr, float(out_scale),
                                   int(out_zp), relu, n_out, backend.name))
    new.meta["val"] = tail.meta.get("val")
    _note(new, f"{backend.name} int8 linear{_act_label(last, lin, relu)} kernel ({kernels.selected_isa()})")
    tail.replace_all_uses_with(clamp_output(graph, new, out_range))
    _erase_chain(graph, tail, last, lin)
    return True


def _act_label(last: Node, op: Node, relu: bool) -> str:
    if last is op:
        return ""
    return f"+{op_name(last)}" + ("" if is_op(last, "relu") else " (as relu clamp)" if relu else " (implied by qparams)")


def _lower_conv(gm: GraphModule, conv: Node, backend, kernels) -> bool:
    """conv2d, and conv1d run as a conv2d over a 1xL image (weights [O, I, 1, K])."""
    graph = gm.graph
    one_d = is_op(conv, "conv1d")
    args = list(conv.args) + [None] * (7 - len(conv.args))
    x_dq, w_dq, bias_node, stride, padding, dilation, groups = args
    if isinstance(padding, str):
        _note(conv, f"{_CONSTRAINT}padding={padding!r} is not supported by the lowered conv (use explicit padding)")
        return False
    w = _weight_qparams(gm, w_dq)
    if w is None or w[0].dim() != (3 if one_d else 4) or w[0].dtype != torch.int8:
        _note(conv, f"{_NO_PATTERN}the weight is not an int8 quantized constant")
        return False
    if not _is_dq(x_dq):
        _note(conv, f"{_CONSTRAINT}the input is not quantized per tensor")
        return False
    bias = _float_bias(gm, bias_node)
    if bias is False:
        _note(conv, f"{_NO_PATTERN}the bias is not a constant")
        return False
    relu, q_out, last = _tail_or_note(conv)
    if q_out is None:
        return False
    out_range = _out_range_or_note(conv, q_out, backend, kernels)
    if out_range is None:
        return False
    w_q, w_s, w_z = w

    def geometry(v, default):
        v = [int(i) for i in (v if isinstance(v, (list, tuple)) else [v])] if v not in (None, []) else [default]
        if one_d:
            return [1 if default == 1 else 0, v[0]]
        return v * 2 if len(v) == 1 else v

    stride, padding, dilation = geometry(stride, 1), geometry(padding, 0), geometry(dilation, 1)
    groups = int(groups or 1)
    if one_d:
        w_q = w_q.unsqueeze(2)
    packed = kernels.pack_conv2d_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous(), stride, padding, dilation,
                                        groups)
    _packed_types[(backend.name, "conv2d")] = type(packed)
    q_x, x_scale, x_zp = x_dq.args[:3]
    _, out_scale, out_zp = q_out.args[:3]
    with graph.inserting_before(conv):
        packed_nodes = _packed_attrs(gm, conv, packed)
        bias_attr = _bias_attr(gm, conv, bias)
        if one_d:
            q_x = graph.call_function(torch.ops.aten.unsqueeze.default, (q_x, 2))
        new = graph.call_function(torch.ops.quantplug.conv2d.default, (
            q_x, float(x_scale), int(x_zp), packed_nodes, bias_attr, float(out_scale), int(out_zp), relu,
            int(w_q.shape[0]), [int(w_q.shape[2]), int(w_q.shape[3])], stride, padding, dilation, backend.name))
        result = graph.call_function(torch.ops.aten.squeeze.dim, (new, 2)) if one_d else new
    result.meta["val"] = q_out.meta.get("val")
    result = clamp_output(graph, result, out_range)
    kind = "depthwise conv" if groups > 1 and groups == w_q.shape[0] and w_q.shape[1] == 1 else "conv"
    _note(new, f"{backend.name} int8 {kind}{'1d (as 1xL conv2d)' if one_d else '2d'}{_act_label(last, conv, relu)} "
               f"kernel ({kernels.selected_isa()})")
    q_out.replace_all_uses_with(result)
    _erase_chain(graph, q_out, last, conv)
    return True


_lower_conv2d = _lower_conv  # name kept for plugins that reuse it


def _lower_binary(gm: GraphModule, node: Node, backend, kernels) -> bool:
    """add / mul of two per-tensor quantized inputs of the same shape (+ relu)."""
    graph = gm.graph
    name = op_name(node)
    a, b = node.args[:2]
    if len(node.args) > 2 or node.kwargs.get("alpha", 1) != 1:
        _note(node, f"{_NO_PATTERN}{name} with alpha has no kernel pattern")
        return False
    if not (_is_dq(a) and _is_dq(b)):
        _note(node, f"{_CONSTRAINT}both inputs must be quantized per tensor")
        return False
    if not hasattr(kernels, name):
        _note(node, f"{_UNSUPPORTED}{backend.name} has no int8 {name} kernel")
        return False
    relu, q_out, last = _tail_or_note(node)
    if q_out is None:
        return False
    out_range = _out_range_or_note(node, q_out, backend, kernels)
    if out_range is None:
        return False
    if a.meta.get("val") is not None and b.meta.get("val") is not None and a.meta["val"].shape != b.meta["val"].shape:
        _note(node, f"{_CONSTRAINT}broadcasting {name} is not lowered (the kernels take equal shapes)")
        return False
    op = torch.ops.quantplug.add.default if name == "add" else torch.ops.quantplug.mul.default
    with graph.inserting_before(node):
        new = graph.call_function(op, (
            a.args[0], float(a.args[1]), int(a.args[2]), b.args[0], float(b.args[1]), int(b.args[2]),
            float(q_out.args[1]), int(q_out.args[2]), relu, backend.name))
    new.meta["val"] = q_out.meta.get("val")
    _note(new, f"{backend.name} int8 {name}{'+relu' if relu else ''} kernel ({kernels.selected_isa()})")
    q_out.replace_all_uses_with(clamp_output(graph, new, out_range))
    _erase_chain(graph, q_out, last, node)
    return True


_lower_add = _lower_binary  # name kept for plugins that reuse it


def _same_qparams(dq: Node, q: Node) -> bool:
    return _is_dq(dq) and _is_q(q) and tuple(dq.args[1:]) == tuple(q.args[1:])


def _shared_io(node: Node) -> Node | None:
    """The quantize after ``node`` when its input and output have the same per-tensor qparams."""
    x_dq, q_out = node.args[0], _single_user(node)
    if not (isinstance(x_dq, Node) and q_out is not None and _same_qparams(x_dq, q_out)):
        _note(node, f"{_CONSTRAINT}input and output are not quantized per tensor with the same qparams")
        return None
    return q_out


def _shared_io_with_kernel(node: Node, backend, kernels, method: str) -> Node | None:
    """:func:`_shared_io`, after checking that the kernel library has ``method``."""
    if not hasattr(kernels, method):
        _note(node, f"{_UNSUPPORTED}{backend.name} has no int8 {method} kernel")
        return None
    return _shared_io(node)


def _replace_with(gm: GraphModule, node: Node, q_out: Node, target, args: tuple, detail: str,
                  out_range: tuple[int, int] | bool = False) -> bool:
    graph = gm.graph
    with graph.inserting_before(node):
        new = graph.call_function(target, args)
    new.meta["val"] = q_out.meta.get("val")
    _note(new, detail)
    q_out.replace_all_uses_with(clamp_output(graph, new, out_range))
    _erase_chain(graph, q_out, node)
    return True


def _pair_arg(v, default) -> list[int]:
    if v in (None, []):
        v = default
    return [int(v), int(v)] if isinstance(v, int) else [int(v[0]), int(v[-1])]


def _lower_max_pool2d(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    q_out = _shared_io(pool)
    if q_out is None:
        return False
    a = list(pool.args) + [None] * (6 - len(pool.args))
    ks = _pair_arg(a[1], 1)
    args = (pool.args[0].args[0], ks, _pair_arg(a[2], ks), _pair_arg(a[3], 0), _pair_arg(a[4], 1), bool(a[5]),
            backend.name)
    return _replace_with(gm, pool, q_out, torch.ops.quantplug.max_pool2d.default, args,
                         f"{backend.name} int8 max_pool2d kernel (shared core C)")


def _lower_avg_pool2d(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    q_out = _shared_io_with_kernel(pool, backend, kernels, "avg_pool2d")
    if q_out is None:
        return False
    a = list(pool.args) + [None] * (7 - len(pool.args))
    ks = _pair_arg(a[1], 1)
    include_pad = True if a[5] is None else bool(a[5])
    args = (pool.args[0].args[0], ks, _pair_arg(a[2], ks), _pair_arg(a[3], 0), bool(a[4]), include_pad, a[6],
            int(q_out.args[2]), backend.name)
    return _replace_with(gm, pool, q_out, torch.ops.quantplug.avg_pool2d.default, args,
                         f"{backend.name} int8 avg_pool2d kernel ({kernels.selected_isa()})")


def _is_global_pool(n: Node) -> bool:
    if n.target in (torch.ops.aten.adaptive_avg_pool2d.default, torch.ops.aten._adaptive_avg_pool2d.default):
        return list(n.args[1]) in ([1, 1], [1])
    if n.target == torch.ops.aten.mean.dim:
        dims = sorted(d % 4 for d in n.args[1]) if n.meta.get("val") is not None and n.meta["val"].dim() == 4 else None
        return dims == [2, 3] and (len(n.args) > 2 and n.args[2])
    return False


def _lower_global_avg_pool(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    x_dq, q_out = pool.args[0], _single_user(pool)
    if not (_is_dq(x_dq) and _is_q(q_out)):
        _note(pool, f"{_CONSTRAINT}input or output is not quantized per tensor")
        return False
    out_range = _out_range_or_note(pool, q_out, backend, kernels)
    if out_range is None:
        return False
    args = (x_dq.args[0], float(x_dq.args[1]), int(x_dq.args[2]), float(q_out.args[1]), int(q_out.args[2]), backend.name)
    return _replace_with(gm, pool, q_out, torch.ops.quantplug.global_avg_pool.default, args,
                         f"{backend.name} int8 global average pool kernel (shared core C)", out_range)


def _lower_adaptive_avg_pool2d(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    q_out = _shared_io_with_kernel(pool, backend, kernels, "adaptive_avg_pool2d")
    if q_out is None:
        return False
    args = (pool.args[0].args[0], _pair_arg(list(pool.args[1]), 1), int(q_out.args[2]), backend.name)
    return _replace_with(gm, pool, q_out, torch.ops.quantplug.adaptive_avg_pool2d.default, args,
                         f"{backend.name} int8 adaptive_avg_pool2d kernel ({kernels.selected_isa()})")


def _lower_cat(gm: GraphModule, cat: Node) -> bool:
    """cat whose inputs and output share qparams: concatenate the integer tensors."""
    tensors, q_out = cat.args[0], _single_user(cat)
    if not (isinstance(tensors, (list, tuple)) and q_out is not None and all(_same_qparams(t, q_out) for t in tensors)):
        _note(cat, f"{_CONSTRAINT}inputs and output do not all share the same per-tensor qparams")
        return False
    dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
    return _replace_with(gm, cat, q_out, torch.ops.aten.cat.default, ([t.args[0] for t in tensors], dim),
                         f"{INTEGER_OP_PREFIX}cat (inputs and output share qparams: nothing to requantize)")


_PASSTHROUGH = ("flatten", "reshape", "permute")


def _lower_passthrough(gm: GraphModule, node: Node) -> bool:
    """flatten / reshape / permute between dq and q with equal qparams: run on the integers."""
    x_dq = node.args[0]
    q_out = _single_user(node)
    if not (isinstance(x_dq, Node) and q_out is not None and _same_qparams(x_dq, q_out)):
        return False
    node.replace_input_with(x_dq, x_dq.args[0])
    q_out.replace_all_uses_with(node)
    gm.graph.erase_node(q_out)
    node.meta.pop(EXPLAIN_KEY, None)
    return True


def _packed_attrs(gm: GraphModule, anchor: Node, packed: Any) -> list[Node]:
    nodes, tensors = [], flatten_packed(packed)
    for i, t in enumerate(tensors):
        name = f"{anchor.name}_packed_{i}"
        gm.register_buffer(name, t)
        nodes.append(gm.graph.get_attr(name))
    stored = [getattr(gm, f"{anchor.name}_packed_{i}") for i in range(len(tensors))]
    remember_packed(stored, packed)  # the object lowering built is what the op's first call gets
    return nodes


def _bias_attr(gm: GraphModule, anchor: Node, bias: Tensor | None) -> Node | None:
    if bias is None:
        return None
    name = f"{anchor.name}_bias_fp32"
    # a plain tensor, never the float model's nn.Parameter: kernels' fast paths test
    # ``type(t) is Tensor`` (a Parameter sent x86_onednn's linear down its checked path on every call)
    gm.register_buffer(name, bias.detach().contiguous().clone())
    return gm.graph.get_attr(name)


def lower_model(gm: GraphModule, backend_name: str | None = None) -> GraphModule:
    """Lower the reference patterns of ``gm`` to its backend's kernels, in place.

    Uses ``backend.lowering`` when the plugin provides its own, then the
    generic patterns above for whatever kernels the library offers.
    """
    from .registry import get_backend

    info = gm.meta.setdefault(META_KEY, {})
    name = backend_name or info.get("backend")
    if name is None:
        raise ValueError("lower_model: the model records no backend; pass backend_name")
    backend = get_backend(name)
    info["backend"] = backend.name
    if backend.kernels is None:
        for n in gm.graph.nodes:
            if ANNOTATION_KEY in n.meta and op_name(n) not in ("relu", "hardtanh"):
                _note(n, f"{_UNSUPPORTED}backend {backend.name!r} has no kernels (reference representation)")
        info["lowered"] = False
        return gm
    if backend.lowering is not None:
        backend.lowering(gm)
    kernels = backend.kernels
    count = 0
    for n in list(gm.graph.nodes):
        if n.graph is not gm.graph or ANNOTATION_KEY not in n.meta:
            continue  # not annotated: a float node, annotation recorded why
        name = op_name(n)
        if name == "linear" and hasattr(kernels, "pack_linear_weight"):
            count += _lower_linear(gm, n, backend, kernels)
        elif name in ("conv1d", "conv2d") and hasattr(kernels, "pack_conv2d_weight"):
            count += _lower_conv(gm, n, backend, kernels)
        elif n.target in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor):
            count += _lower_binary(gm, n, backend, kernels)
        elif n.target == torch.ops.aten.max_pool2d.default and hasattr(kernels, "max_pool2d"):
            count += _lower_max_pool2d(gm, n, backend, kernels)
        elif n.target == torch.ops.aten.avg_pool2d.default:
            count += _lower_avg_pool2d(gm, n, backend, kernels)
        elif _is_global_pool(n) and hasattr(kernels, "global_avg_pool"):
            count += _lower_global_avg_pool(gm, n, backend, kernels)
        elif n.target == torch.ops.aten.adaptive_avg_pool2d.default:
            count += _lower_adaptive_avg_pool2d(gm, n, backend, kernels)
        elif name == "cat":
            count += _lower_cat(gm, n)
        elif name == "matmul" and ANNOTATION_KEY in n.meta:
            _note(n, f"{_UNSUPPORTED}{backend.name} has no int8 kernel for matmul of two activations; "
                     f"it runs in reference form (dequantize, float matmul, quantize)")
        elif name in _PASSTHROUGH:
            _lower_passthrough(gm, n)
    from .convert import _drop_unused

    gm.graph.eliminate_dead_code()
    _lower_qdq(gm, backend, kernels)
    _drop_unused(gm)
    use_direct_calls(gm)  # eager execution skips the dispatcher's ~8 us per op call (see direct_calls)
    gm.graph.lint()
    gm.recompile()
    info["lowered"] = True
    info["lowered_patterns"] = info.get("lowered_patterns", 0) + count
    return gm


# ------------------------------------------------- helpers for plugin passes --
# A plugin's ``Backend.lowering`` hook rewrites patterns the core does not know (x86's
# conv + add, weight-only linears, qnnpack's lookup tables) in the same converted graph.
# These are the public building blocks of the core's own pass, so plugins reuse them
# instead of copying them or importing private names.


def constant(gm: GraphModule, node: Any) -> Tensor | None:
    """The tensor behind a ``get_attr`` node of ``gm`` (``None`` for any other node)."""
    return _const(gm, node)


def weight_qparams(gm: GraphModule, dq_w: Any) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(int8 weight [N, K...], scales [N], zero points [N])`` behind a weight dequantize node
    (per-channel on axis 0 or per-tensor, expanded per channel); ``None`` if it is not one."""
    return _weight_qparams(gm, dq_w)


def float_bias(gm: GraphModule, node: Any) -> Tensor | None | bool:
    """The fp32 bias behind ``node``: a tensor, ``None`` (no bias) or ``False`` (not a constant)."""
    return _float_bias(gm, node)


def store_packed(gm: GraphModule, anchor: Node, packed: Any) -> list[Node]:
    """Register a packed weight's tensors as buffers named after ``anchor`` and return the
    ``get_attr`` nodes to pass as the op's ``Tensor[] packed`` argument."""
    return _packed_attrs(gm, anchor, packed)


def store_bias(gm: GraphModule, anchor: Node, bias: Tensor | None) -> Node | None:
    """Register an fp32 bias buffer named after ``anchor``; its ``get_attr`` node (or ``None``)."""
    return _bias_attr(gm, anchor, bias)


def quantized_tail(node: Node) -> tuple[bool, Node | None, Node]:
    """``(relu fused?, the quantize node after the pattern or None, last float node)`` for the
    float op ``node``: what a fused kernel replacing it must also replace."""
    return _quantized_tail(node)


def output_range(q_out: Node, kernels: Any) -> tuple[int, int] | bool | None:
    """How a requantizing kernel's output clamp relates to the range of the quantize node
    ``q_out`` it replaces.

    ``False``: the same range, nothing to add. ``(qmin, qmax)``: the node's range is narrower
    (x86_onednn with ``reduce_range``: 0..127 under a 0..255 kernel); follow the kernel with
    :func:`clamp_output`. Clamping to the kernel's range and then to the narrower one equals
    clamping once to the narrower one, so the result stays bit-exact with the reference.
    ``None``: the node allows values the kernel would clip; do not lower the pattern.
    """
    qmin, qmax = int(q_out.args[3]), int(q_out.args[4])
    lo, hi = default_out_range(kernels, q_out.args[5])
    if (qmin, qmax) == (lo, hi):
        return False
    return (qmin, qmax) if lo <= qmin and qmax <= hi else None


def clamp_output(graph: Any, new: Node, out_range: tuple[int, int] | bool) -> Node:
    """``new``, followed by an integer clamp when :func:`output_range` asked for one; replace
    the quantize node's uses with the returned node."""
    if out_range is False:
        return new
    with graph.inserting_after(new):
        clamp = graph.call_function(torch.ops.aten.clamp.default, (new, out_range[0], out_range[1]))
    clamp.meta["val"] = new.meta.get("val")
    _note(clamp, f"{INTEGER_OP_PREFIX}clamp to the output's quantized range {out_range[0]}..{out_range[1]}")
    return clamp


def erase_unused(graph: Any, *nodes: Node) -> None:
    """Erase the given nodes that no longer have users (a replaced pattern's old chain)."""
    _erase_chain(graph, *nodes)


def finish_plugin_pass(gm: GraphModule, count: int, key: str) -> GraphModule:
    """Tidy ``gm`` after a plugin pass replaced ``count`` patterns and record the count under
    ``gm.meta["quantplug"][key]`` (what ``explain`` and the tests read)."""
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    info = gm.meta.setdefault(META_KEY, {})
    info[key] = info.get(key, 0) + count
    return gm
