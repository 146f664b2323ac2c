"""Lowering: replace reference quantized patterns with a backend's fused int8 kernels.

After :func:`quantplug.convert_pt2e` builds the reference representation,
:func:`lower_model` walks the graph for patterns the backend's kernel library
implements and swaps each for one op of the ``quantplug::`` library:

==================================================  ===============================
reference pattern                                   lowered op
==================================================  ===============================
dq(x) -> linear(., dq(w_q), b) [-> relu] -> q        ``quantplug::linear``
dyn_qdq(x) -> linear(., dq(w_q), b)                  ``quantplug::linear_dynamic``
dq(x) -> conv2d(., dq(w_q), b) [-> relu] -> q        ``quantplug::conv2d``
dq(a), dq(b) -> add [-> relu] -> q                   ``quantplug::add``
dq(x) -> max_pool2d -> q (same qparams)              ``quantplug::max_pool2d``
dq(x) -> adaptive_avg_pool2d(1) / mean(H,W) -> q     ``quantplug::global_avg_pool``
dq(x) -> flatten/reshape/permute -> q (same)         the same op on the integer tensor
==================================================  ===============================

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

from .kernels import flatten_packed, unflatten_packed
from .ops import is_op
from .prepare import META_KEY
from .quant_ops import LIB
from .quant_ops import ops as qops

__all__ = ["lower_model", "EXPLAIN_KEY"]

EXPLAIN_KEY = "quantplug_explain"

LIB.define("linear(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, float out_scale, int out_zero_point, bool relu, int n, str backend) -> Tensor")
LIB.define("linear_dynamic(Tensor x, Tensor[] packed, Tensor? bias, bool per_row, int n, str backend) -> Tensor")
LIB.define("conv2d(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, float out_scale, int out_zero_point, bool relu, int out_channels, int[] kernel_size, int[] stride, int[] padding, int[] dilation, str backend) -> Tensor")
LIB.define("max_pool2d(Tensor x, int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode, str backend) -> Tensor")
LIB.define("global_avg_pool(Tensor x, float x_scale, int x_zero_point, float out_scale, int out_zero_point, str backend) -> Tensor")
LIB.define("add(Tensor a, float a_scale, int a_zero_point, Tensor b, float b_scale, int b_zero_point, float out_scale, int out_zero_point, bool relu, str backend) -> Tensor")


@functools.lru_cache(maxsize=None)
def _kernels(backend: str):
    from .registry import get_backend

    b = get_backend(backend)
    if b.kernels is None:
        raise RuntimeError(f"backend {backend!r} has no kernel library")
    return b.kernels


_packed_types: dict[tuple[str, str], type] = {}


def _packed_type(backend: str, kind: str) -> type:
    """The plugin's packed-weight dataclass for ``kind`` ("linear" or "conv2d")."""
    cls = _packed_types.get((backend, kind))
    if cls is None:
        k = _kernels(backend)
        cls = getattr(k, f"packed_{kind}_type", None)
        if cls is None and kind == "linear":  # older plugins: learn the type from a tiny pack
            cls = type(k.pack_linear_weight(torch.zeros(1, 1, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32)))
        if cls is None:
            cls = type(k.pack_conv2d_weight(torch.zeros(1, 1, 1, 1, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32)))
        _packed_types[(backend, kind)] = cls
    return cls


def _linear_impl(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, n, backend):
    k = _kernels(backend)
    return k.linear(x, x_scale, x_zero_point, unflatten_packed(_packed_type(backend, "linear"), packed), bias,
                    out_scale, out_zero_point, relu=relu)


def _linear_dynamic_impl(x, packed, bias, per_row, n, backend):
    k = _kernels(backend)
    return k.linear_dynamic(x, unflatten_packed(_packed_type(backend, "linear"), packed), bias, per_row=per_row)


def _conv2d_impl(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, out_channels,
                 kernel_size, stride, padding, dilation, backend):
    k = _kernels(backend)
    return k.conv2d(x, x_scale, x_zero_point, unflatten_packed(_packed_type(backend, "conv2d"), packed), bias,
                    out_scale, out_zero_point, relu=relu)


def _add_impl(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu, backend):
    return _kernels(backend).add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu=relu)


def _max_pool2d_impl(x, kernel_size, stride, padding, dilation, ceil_mode, backend):
    return _kernels(backend).max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def _global_avg_pool_impl(x, x_scale, x_zero_point, out_scale, out_zero_point, backend):
    return _kernels(backend).global_avg_pool(x, x_scale, x_zero_point, out_scale, out_zero_point)


LIB.impl("max_pool2d", _max_pool2d_impl, "CPU")
LIB.impl("global_avg_pool", _global_avg_pool_impl, "CPU")
LIB.impl("linear", _linear_impl, "CPU")
LIB.impl("linear_dynamic", _linear_dynamic_impl, "CPU")
LIB.impl("conv2d", _conv2d_impl, "CPU")
LIB.impl("add", _add_impl, "CPU")


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


def _lower_linear(gm: GraphModule, lin: Node, backend, kernels) -> bool:
    graph = gm.graph
    x_dq, w_dq = lin.args[0], lin.args[1]
    bias_node = lin.args[2] if len(lin.args) > 2 else None
    w = _weight_qparams(gm, w_dq)
    if w is None:
        _note(lin, "reference: weight is not a quantized constant")
        return False
    w_q, w_s, w_z = w
    if w_q.dtype != torch.int8 or w_q.dim() != 2:
        _note(lin, f"reference: {backend.name} linear kernels take 2-D int8 weights, got {w_q.dtype}")
        return False
    bias = _float_bias(gm, bias_node)
    if bias is False:
        _note(lin, "reference: bias is not a constant")
        return False
    n_out = w_q.shape[0]
    # dynamic: dyn_qdq(x) -> linear
    if isinstance(x_dq, Node) and x_dq.target == qops.quantize_dequantize_dynamic.default:
        if not hasattr(kernels, "linear_dynamic"):
            _note(lin, f"reference: {backend.name} has no dynamic linear kernel")
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
    if not (isinstance(x_dq, Node) and x_dq.target == qops.dequantize_per_tensor.default):
        _note(lin, "reference: input is not quantized per tensor")
        return False
    relu = False
    tail = _single_user(lin)
    if tail is not None and is_op(tail, "relu"):
        relu, last = True, tail
        tail = _single_user(tail)
    else:
        last = lin
    if tail is None or tail.target != qops.quantize_per_tensor.default:
        _note(lin, "reference: output is not quantized (no q after the pattern)")
        return False
    q_x, x_scale, x_zp, _, _, x_dtype = x_dq.args
    _, out_scale, out_zp, _, _, out_dtype = tail.args
    packed = kernels.pack_linear_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous())
    _packed_types[(backend.name, "linear")] = type(packed)
    with graph.inserting_before(lin):
        packed_nodes = _packed_attrs(gm, lin, packed)
        bias_attr = _bias_attr(gm, lin, bias)
        new = graph.call_function(torch.ops.quantplug.linear.default,
                                  (q_x, float(x_scale), int(x_zp), packed_nodes, bias_attr, float(out_scale),
                                   int(out_zp), relu, n_out, backend.name))
    new.meta["val"] = tail.meta.get("val")
    _note(new, f"{backend.name} int8 linear{'+relu' if relu else ''} kernel ({kernels.selected_isa()})")
    tail.replace_all_uses_with(new)
    for dead in (tail, last, lin) if last is not lin else (tail, lin):
        if not dead.users:
            graph.erase_node(dead)
    return True


def _quantized_tail(node: Node) -> tuple[bool, Node | None, Node]:
    """(relu fused?, the quantize node after the pattern or None, last float node)."""
    tail = _single_user(node)
    if tail is not None and is_op(tail, "relu"):
        last = tail
        tail = _single_user(tail)
        return True, (tail if tail is not None and tail.target == qops.quantize_per_tensor.default else None), last
    return False, (tail if tail is not None and tail.target == qops.quantize_per_tensor.default else None), node


def _erase_chain(graph, *nodes: Node) -> None:
    for n in dict.fromkeys(nodes):  # `last` may be the op itself when nothing is fused
        if not n.users:
            graph.erase_node(n)


def _lower_conv2d(gm: GraphModule, conv: Node, backend, kernels) -> bool:
    graph = gm.graph
    args = list(conv.args) + [None] * (7 - len(conv.args))
    x_dq, w_dq, bias_node, stride, padding, dilation, groups = args
    stride, padding, dilation, groups = stride or [1, 1], padding or [0, 0], dilation or [1, 1], groups or 1
    if isinstance(padding, str):
        _note(conv, f"reference: padding={padding!r} is not supported by the lowered conv (use explicit padding)")
        return False
    w = _weight_qparams(gm, w_dq)
    if w is None or w[0].dim() != 4 or w[0].dtype != torch.int8:
        _note(conv, "reference: weight is not a 4-D int8 quantized constant")
        return False
    if not (isinstance(x_dq, Node) and x_dq.target == qops.dequantize_per_tensor.default):
        _note(conv, "reference: input is not quantized per tensor")
        return False
    bias = _float_bias(gm, bias_node)
    if bias is False:
        _note(conv, "reference: bias is not a constant")
        return False
    relu, q_out, last = _quantized_tail(conv)
    if q_out is None:
        _note(conv, "reference: output is not quantized (no q after the pattern)")
        return False
    w_q, w_s, w_z = w
    stride, padding, dilation = [list(v) * (2 // len(v)) if len(v) == 1 else list(v) for v in (stride, padding, dilation)]
    packed = kernels.pack_conv2d_weight(w_q.contiguous(), w_s.contiguous(), w_z.contiguous(), stride, padding, dilation, int(groups))
    _packed_types[(backend.name, "conv2d")] = type(packed)
    q_x, x_scale, x_zp = x_dq.args[:3]
    _, out_scale, out_zp = q_out.args[:3]
    with graph.inserting_before(conv):
        packed_nodes = _packed_attrs(gm, conv, packed)
        bias_attr = _bias_attr(gm, conv, bias)
        new = graph.call_function(torch.ops.quantplug.conv2d.default, (
            q_x, float(x_scale), int(x_zp), packed_nodes, bias_attr, float(out_scale), int(out_zp), relu,
            int(w_q.shape[0]), [int(w_q.shape[2]), int(w_q.shape[3])], stride, padding, dilation, backend.name))
    new.meta["val"] = q_out.meta.get("val")
    _note(new, f"{backend.name} int8 conv2d{'+relu' if relu else ''} kernel ({kernels.selected_isa()})")
    q_out.replace_all_uses_with(new)
    _erase_chain(graph, q_out, last, conv)
    return True


def _lower_add(gm: GraphModule, add: Node, backend, kernels) -> bool:
    graph = gm.graph
    a, b = add.args[:2]
    if len(add.args) > 2 or add.kwargs.get("alpha", 1) != 1:
        return False
    if not all(isinstance(v, Node) and v.target == qops.dequantize_per_tensor.default for v in (a, b)):
        _note(add, "reference: both inputs must be quantized per tensor")
        return False
    relu, q_out, last = _quantized_tail(add)
    if q_out is None:
        _note(add, "reference: output is not quantized")
        return False
    if a.meta.get("val") is not None and b.meta.get("val") is not None and a.meta["val"].shape != b.meta["val"].shape:
        _note(add, "reference: broadcasting add is not lowered")
        return False
    with graph.inserting_before(add):
        new = graph.call_function(torch.ops.quantplug.add.default, (
            a.args[0], float(a.args[1]), int(a.args[2]), b.args[0], float(b.args[1]), int(b.args[2]),
            float(q_out.args[1]), int(q_out.args[2]), relu, backend.name))
    new.meta["val"] = q_out.meta.get("val")
    _note(new, f"{backend.name} int8 add{'+relu' if relu else ''} kernel ({kernels.selected_isa()})")
    q_out.replace_all_uses_with(new)
    _erase_chain(graph, q_out, last, add)
    return True


def _same_qparams(dq: Node, q: Node) -> bool:
    return dq.target == qops.dequantize_per_tensor.default and q.target == qops.quantize_per_tensor.default \
        and tuple(dq.args[1:]) == tuple(q.args[1:])


def _lower_max_pool2d(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    graph = gm.graph
    x_dq = pool.args[0]
    q_out = _single_user(pool)
    if not (isinstance(x_dq, Node) and q_out is not None and _same_qparams(x_dq, q_out)):
        _note(pool, "reference: input and output are not quantized with the same qparams")
        return False
    a = list(pool.args) + [None] * (6 - len(pool.args))
    ks, stride, pad, dil, ceil = a[1], a[2] or a[1], a[3] or 0, a[4] or 1, bool(a[5])
    pair = (lambda v: [int(v), int(v)] if isinstance(v, int) else [int(v[0]), int(v[-1])])
    with graph.inserting_before(pool):
        new = graph.call_function(torch.ops.quantplug.max_pool2d.default,
                                  (x_dq.args[0], pair(ks), pair(stride), pair(pad), pair(dil), ceil, backend.name))
    new.meta["val"] = q_out.meta.get("val")
    _note(new, f"{backend.name} int8 max_pool2d kernel (shared core C)")
    q_out.replace_all_uses_with(new)
    _erase_chain(graph, q_out, pool)
    return True


def _is_global_pool(n: Node) -> bool:
    if n.target in (torch.ops.aten.adaptive_avg_pool2d.default, torch.ops.aten._adaptive_avg_pool2d.default):
        return list(n.args[1]) in ([1, 1], [1])
    if n.target == torch.ops.aten.mean.dim:
        dims = sorted(d % 4 for d in n.args[1]) if n.meta.get("val") is not None and n.meta["val"].dim() == 4 else None
        return dims == [2, 3] and (len(n.args) > 2 and n.args[2])
    return False


def _lower_global_avg_pool(gm: GraphModule, pool: Node, backend, kernels) -> bool:
    graph = gm.graph
    x_dq = pool.args[0]
    q_out = _single_user(pool)
    if not (isinstance(x_dq, Node) and x_dq.target == qops.dequantize_per_tensor.default and q_out is not None
            and q_out.target == qops.quantize_per_tensor.default):
        _note(pool, "reference: input or output is not quantized per tensor")
        return False
    with graph.inserting_before(pool):
        new = graph.call_function(torch.ops.quantplug.global_avg_pool.default, (
            x_dq.args[0], float(x_dq.args[1]), int(x_dq.args[2]), float(q_out.args[1]), int(q_out.args[2]), backend.name))
    new.meta["val"] = q_out.meta.get("val")
    _note(new, f"{backend.name} int8 global average pool kernel (shared core C)")
    q_out.replace_all_uses_with(new)
    _erase_chain(graph, q_out, pool)
    return True


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
    nodes = []
    for i, t in enumerate(flatten_packed(packed)):
        name = f"{anchor.name}_packed_{i}"
        gm.register_buffer(name, t)
        nodes.append(gm.graph.get_attr(name))
    return nodes


def _bias_attr(gm: GraphModule, anchor: Node, bias: Tensor | None) -> Node | None:
    if bias is None:
        return None
    name = f"{anchor.name}_bias_fp32"
    gm.register_buffer(name, bias.contiguous())
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
            if is_op(n, "linear", "conv2d", "conv1d"):
                _note(n, f"reference: backend {backend.name!r} has no kernels (reference representation)")
        info["lowered"] = False
        return gm
    if backend.lowering is not None:
        backend.lowering(gm)
    kernels = backend.kernels
    count = 0
    for n in list(gm.graph.nodes):
        if n.graph is not gm.graph:
            continue
        if is_op(n, "linear") and hasattr(kernels, "pack_linear_weight"):
            count += _lower_linear(gm, n, backend, kernels)
        elif is_op(n, "conv2d") and hasattr(kernels, "pack_conv2d_weight"):
            count += _lower_conv2d(gm, n, backend, kernels)
        elif n.target == torch.ops.aten.add.Tensor and hasattr(kernels, "add"):
            count += _lower_add(gm, n, backend, kernels)
        elif is_op(n, "max_pool2d") and n.target == torch.ops.aten.max_pool2d.default and hasattr(kernels, "max_pool2d"):
            count += _lower_max_pool2d(gm, n, backend, kernels)
        elif _is_global_pool(n) and hasattr(kernels, "global_avg_pool"):
            count += _lower_global_avg_pool(gm, n, backend, kernels)
        elif is_op(n, *_PASSTHROUGH):
            _lower_passthrough(gm, n)
    from .convert import _drop_unused

    gm.graph.eliminate_dead_code()
    _drop_unused(gm)
    gm.graph.lint()
    gm.recompile()
    info["lowered"] = True
    info["lowered_patterns"] = info.get("lowered_patterns", 0) + count
    return gm
