"""``quantplug.compare``: find the layer that hurts, per-layer SQNR of a quantized model vs float.

Run the float model and the quantized model on the same inputs, pair up their
layers, and report for each pair the signal-to-quantization-noise ratio and
the largest absolute error, worst first::

    report = quantplug.compare(float_model, converted, calibration_batches[:4])
    print(report)              # a table, the worst layer on top
    report.worst().layer       # e.g. "encoder.layer3.fc2"

Every row compares *activations*: the output of a quantized layer (after its
own output quantization, dequantized) against the output of the same layer
in the float model fed the float model's own activations. The error a row
shows therefore includes everything upstream; the first row that drops well
below its predecessors is where precision is lost.

How layers are paired:

* **Graph flow** (a ``GraphModule`` from ``prepare_pt2e``, ``prepare_qat_pt2e``
  or ``convert_pt2e``): the float model is exported the same way the flow
  exported it, which reproduces its node names. A quantized node is paired by
  its own name (reference-form and prepared models keep the ATen node), by the
  name embedded in its packed-weight buffers (``<node>_packed_<i>``, kept by
  lowering), or else by the innermost module of its ``nn_module_stack``.
  Patterns fused by the backend are followed on the float side: a folded
  batch norm and a fused relu are applied there too, so a fused kernel is
  compared with what it computes.
* **Eager flow** (modules swapped by ``quantize_`` or ``prepare_qat``): each
  module of the quantized model whose class differs from the float model's
  module of the same qualified name is a layer; both are hooked.

A prepared PTQ model (observers, not yet converted) is compared as the model
it will become: each calibrated observer fake-quantizes with the qparams it
would produce now (its statistics are not updated), so the table predicts the
converted model's per-layer error before ``convert_pt2e``. QAT models
(fake-quantize modules) run as they are.

Layers that cannot be paired are listed in :attr:`ComparisonReport.unmatched`
instead of being dropped silently.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Interpreter, Node

from .direct_calls import op_of

__all__ = ["compare", "ComparisonReport", "LayerComparison"]

#: Ops reported as layers (the ones a quantizer annotates and a backend runs).
_LAYER_OPS = ("linear", "conv1d", "conv2d", "conv_transpose2d", "matmul", "add", "mul", "cat", "embedding",
              "sigmoid", "tanh", "hardsigmoid")
_ACTS = ("relu", "hardtanh")
_PACKED_NAME = re.compile(r"^(?P<origin>.+?)_(?:packed_\d+|bias_fp32)$")
_OBSERVER_PREFIX = "activation_post_process_"


# ---------------------------------------------------------------- report --


@dataclass(frozen=True)
class LayerComparison:
    """One layer: where it is, what ran it, and how far its output is from float.

    :param layer: module qualified name (or ``module/node`` for functional ops).
    :param node: the quantized graph's node name (``None`` in the eager flow).
    :param op: op short name (``linear``, ``conv2d``, ``add``...).
    :param kernel: what executed it (backend kernel and ISA, ``reference``,
        ``fake-quant``, or a module's kernel path).
    :param sqnr: ``10 log10(sum(float^2) / sum((float - quant)^2))`` in dB over
        every input given (``inf`` when identical).
    :param max_abs_error: the largest absolute difference seen.
    :param numel: elements compared.
    """

    layer: str
    node: str | None
    op: str
    kernel: str
    sqnr: float
    max_abs_error: float
    numel: int


@dataclass(frozen=True)
class ComparisonReport:
    """Per-layer comparison rows, worst SQNR first, plus the model output's.

    ``str(report)`` is a table; :meth:`worst` returns the worst rows;
    ``report["fc1"]`` looks a layer up by name.
    """

    rows: tuple[LayerComparison, ...]
    output_sqnr: float
    output_max_abs_error: float
    flow: str
    unmatched: tuple[str, ...] = field(default_factory=tuple)

    def worst(self, n: int | None = None) -> LayerComparison | list[LayerComparison]:
        """The worst layer (``n=None``) or the ``n`` worst layers."""
        if not self.rows:
            raise ValueError("no layers were compared")
        return self.rows[0] if n is None else list(self.rows[:n])

    def __getitem__(self, layer: str) -> LayerComparison:
        for r in self.rows:
            if r.layer == layer or r.node == layer:
                return r
        raise KeyError(f"no compared layer named {layer!r}; layers: {[r.layer for r in self.rows]}")

    def __len__(self) -> int:
        return len(self.rows)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (for JSON or pandas)."""
        return [dict(layer=r.layer, node=r.node, op=r.op, kernel=r.kernel, sqnr=r.sqnr,
                     max_abs_error=r.max_abs_error, numel=r.numel) for r in self.rows]

    def __str__(self) -> str:
        head = ("layer", "op", "kernel", "SQNR dB", "max abs err")
        body = [(r.layer, r.op, r.kernel, _fmt_db(r.sqnr), f"{r.max_abs_error:.4g}") for r in self.rows]
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        lines = [f"quantplug.compare ({self.flow} flow): model output SQNR {_fmt_db(self.output_sqnr)} dB, "
                 f"max abs err {self.output_max_abs_error:.4g}; {len(self.rows)} layers, worst first"]
        for row in [head, tuple("-" * w for w in widths), *body]:
            lines.append("  ".join(str(c).rjust(w) if i >= 3 else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if self.unmatched:
            lines.append(f"not compared (no float counterpart found): {', '.join(self.unmatched)}")
        return "\n".join(lines)


def _fmt_db(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}"


class _Accumulator:
    """Signal and noise energy over several batches (SQNR of the concatenation)."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.max_abs = 0.0
        self.numel = 0

    def add(self, ref: Tensor, test: Tensor) -> None:
        ref = ref.detach().to(torch.float64).reshape(-1)
        test = test.detach().to(torch.float64).reshape(-1)
        if ref.numel() != test.numel():
            raise ValueError(f"shape mismatch: float has {ref.numel()} elements, quantized {test.numel()}")
        diff = ref - test
        self.signal += float((ref * ref).sum())
        self.noise += float((diff * diff).sum())
        if diff.numel():
            self.max_abs = max(self.max_abs, float(diff.abs().max()))
        self.numel += ref.numel()

    def sqnr(self) -> float:
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)


# ---------------------------------------------------------------- inputs --


def _batches(inputs: Any) -> list[tuple]:
    """A tensor or tuple is one batch of positional inputs; a list is several batches."""
    if isinstance(inputs, Tensor):
        return [(inputs,)]
    if isinstance(inputs, tuple):
        return [inputs]
    if isinstance(inputs, list):
        if not inputs:
            raise ValueError("compare() needs at least one input batch")
        return [b if isinstance(b, tuple) else (b,) for b in inputs]
    raise TypeError(f"inputs must be a tensor, a tuple of positional inputs or a list of batches, "
                    f"got {type(inputs).__name__}")


def _as_float(v: Any) -> Tensor | None:
    """The first tensor in ``v`` as float (quantized torch tensors are dequantized)."""
    if isinstance(v, Tensor):
        if v.is_quantized:
            return v.dequantize()
        return v if v.is_floating_point() else None
    if isinstance(v, (tuple, list)) and v:
        return _as_float(v[0])
    return None


def _leaves(v: Any) -> list[Tensor]:
    from torch.utils import _pytree as pytree

    return [t.dequantize() if t.is_quantized else t for t in pytree.tree_leaves(v) if isinstance(t, Tensor)]


# ------------------------------------------------------------ graph flow --


def _op_name(node: Node) -> str | None:
    from .ops import op_name

    return op_name(node)


def _is_q(node: Node) -> bool:
    t = op_of(node.target)
    return node.op == "call_function" and getattr(t, "namespace", None) == "quantplug" and \
        t._schema.name.split("::")[1].startswith("quantize_per")


def _is_dq(node: Node) -> bool:
    t = op_of(node.target)
    return node.op == "call_function" and getattr(t, "namespace", None) == "quantplug" and \
        t._schema.name.split("::")[1].startswith(("dequantize_per", "quantize_dequantize"))


def _is_observer(node: Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(_OBSERVER_PREFIX)


def _is_kernel(node: Node) -> bool:
    """A lowered backend op (not aten, not quantize/dequantize)."""
    t = op_of(node.target)
    ns = getattr(t, "namespace", None)
    return node.op == "call_function" and ns is not None and ns != "aten" and not _is_q(node) and not _is_dq(node)


def _schema_args(node: Node) -> dict[str, Any]:
    schema = op_of(node.target)._schema
    out = {a.name: v for a, v in zip(schema.arguments, node.args)}
    out.update(node.kwargs)
    return out


def _flat_get_attrs(args: Any) -> Iterable[Node]:
    if isinstance(args, Node):
        if args.op == "get_attr":
            yield args
    elif isinstance(args, (list, tuple)):
        for a in args:
            yield from _flat_get_attrs(a)


def _innermost_module(node: Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return str(list(stack.values())[-1][0])


def _single_user(node: Node) -> Node | None:
    users = [u for u in node.users if not (u.op == "call_module" and str(u.target) == "_guards_fn")]
    return users[0] if len(users) == 1 else None


def _quant_value_node(node: Node) -> tuple[Node, list[str], bool]:
    """(node whose value is the layer's quantized output, fused activations, needs dequant by schema)."""
    if _is_kernel(node):
        args = _schema_args(node)
        acts = ["relu"] if args.get("relu") else []
        user = _single_user(node)
        if user is not None and _is_dq(user):
            return user, acts, False
        return node, acts, "out_scale" in args
    acts: list[str] = []
    cur = node
    for _ in range(8):
        user = _single_user(cur)
        if user is None:  # a quantize node may have several dequantize users, but one quantize
            quantizers = [u for u in cur.users if _is_q(u)]
            if not quantizers:
                break
            user = quantizers[0]
        if _is_q(user):
            dqs = [u for u in user.users if _is_dq(u)]
            return (dqs[0] if dqs else node), acts if dqs else [], False
        if _is_observer(user):
            return user, acts, False
        name = _op_name(user)
        if name in _ACTS:
            acts.append(name)
            cur = user
            continue
        # QAT conv-bn trains in simulated-folding form: conv -> div -> (add) -> batch_norm.
        if name == "batch_norm" or user.target is operator.getitem or user.target in (
                torch.ops.aten.div.Tensor, torch.ops.aten.add.Tensor, torch.ops.aten.reshape.default):
            if name == "batch_norm":
                acts = []
            cur = user
            continue
        break
    return node, [], False


def _float_value_node(fnode: Node, acts: list[str]) -> Node:
    """Follow the float graph through a batch norm (folded on the quantized side) and fused activations."""
    cur = fnode
    user = _single_user(cur)
    if user is not None and _op_name(user) == "batch_norm":
        cur = user
        items = [u for u in cur.users if u.target is operator.getitem and u.args[1] == 0]
        if items:
            cur = items[0]
    for act in acts:
        user = _single_user(cur)
        if user is None or _op_name(user) != act:
            break
        cur = user
    return cur


def _is_quantized(node: Node) -> bool:
    """A kernel, or an op reading dequantized / observed / fake-quantized inputs."""
    return _is_kernel(node) or any(_is_dq(a) or _is_observer(a) for a in node.all_input_nodes)


def _kernel_label(node: Node, flow: str) -> str:
    from .lowering import EXPLAIN_KEY

    if _is_kernel(node):
        text = node.meta.get(EXPLAIN_KEY)
        op = op_of(node.target)
        return text or f"{op.namespace}::{op._schema.name.split('::')[1]}"
    if flow == "prepared":
        return "fake-quant" if any(_is_observer(a) for a in node.all_input_nodes) else "float"
    if any(_is_dq(a) for a in node.all_input_nodes):
        return "reference (q/dq around float op)"
    return "float"


def _kernel_kind(node: Node) -> str:
    """The float op a lowered kernel replaced: ``quantplug::linear_dynamic`` -> ``"linear"``."""
    t = op_of(node.target)
    if hasattr(t, "_schema"):
        return t._schema.name.split("::", 1)[1].removesuffix("_dynamic")
    return str(getattr(t, "__name__", t))


def _layer_ops(gm: GraphModule) -> list[Node]:
    out = []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if _is_kernel(n):
            # requantizing kernels (linear, conv, add, fused plugin ops); pools and
            # layout ops keep their input's qparams and are not layers
            if _kernel_kind(n) in _LAYER_OPS or "out_scale" in _schema_args(n):
                out.append(n)
        elif _op_name(n) in _LAYER_OPS:
            out.append(n)
    return out


def _simulate_observer(observer: nn.Module, x: Any) -> Any:
    """What the converted model will compute at an observer: ``x`` snapped to its qparams.

    A prepared (PTQ) model's observers only record statistics, so running it
    shows float numerics. Comparing it as the quantized model it will become
    means fake-quantizing with the qparams the observer *would* give now. The
    observer's statistics are left untouched (comparing must not calibrate).
    Observers without data, dynamic ones (qparams per call) and float
    placeholders pass ``x`` through.
    """
    from .affine import fake_quantize_affine
    from .observers import ObserverBase

    if not isinstance(observer, ObserverBase) or not isinstance(x, Tensor) or not x.is_floating_point():
        return observer(x)  # a FakeQuantize module simulates (and in eval mode does not learn) itself
    if not getattr(observer, "has_observed", False) or getattr(observer, "is_dynamic", False) \
            or not isinstance(observer.quant_min, int):
        return x
    scale, zero_point = observer.calculate_qparams()
    axis = observer.ch_axis if observer.per_channel else None
    group = getattr(observer, "group_size", None)
    return fake_quantize_affine(x, scale, zero_point, quant_min=observer.quant_min, quant_max=observer.quant_max,
                                axis=axis, group_size=group)


class _Recorder(Interpreter):
    """Runs a GraphModule node by node, keeping the outputs of the nodes asked for.

    With ``simulate_observers`` the observers of a prepared model fake-quantize
    instead of observing (see :func:`_simulate_observer`).
    """

    def __init__(self, gm: GraphModule, wanted: set[str], simulate_observers: bool = False) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.simulate_observers = simulate_observers
        self.values: dict[str, Any] = {}

    def call_module(self, target, args, kwargs) -> Any:
        if self.simulate_observers and str(target).startswith(_OBSERVER_PREFIX) and len(args) == 1 and not kwargs:
            return _simulate_observer(self.fetch_attr(target), args[0])
        return super().call_module(target, args, kwargs)

    def run_node(self, n: Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            self.values[n.name] = out
        return out


def _flat_inputs(gm: GraphModule, args: tuple) -> list:
    info = getattr(gm.graph._codegen, "pytree_info", None)
    if info is not None and info.in_spec is not None:
        from torch.fx._pytree import tree_flatten_spec

        return list(tree_flatten_spec((list(args), {}), info.in_spec))
    return list(args)


def _run_graph(gm: GraphModule, args: tuple, wanted: set[str],
               simulate_observers: bool = False) -> tuple[dict[str, Any], Any]:
    rec = _Recorder(gm, wanted, simulate_observers)
    flat_out = rec.run(*_flat_inputs(gm, args))
    return rec.values, flat_out


def _export_float(model: nn.Module, args: tuple) -> GraphModule:
    if isinstance(model, GraphModule):
        return model
    from .prepare import export_model

    return export_model(model, args)


def _dequantize_by_schema(node: Node, value: Tensor) -> Tensor:
    args = _schema_args(node)
    return (value.to(torch.int32) - int(args["out_zero_point"])).to(torch.float32) * float(args["out_scale"])


def _module_for(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        return None


def _compare_graph(float_model: nn.Module, qgm: GraphModule, batches: list[tuple]) -> ComparisonReport:
    info = qgm.meta.get("quantplug", {})
    flow = "converted" if info.get("converted") else "prepared"
    fgm = _export_float(float_model, batches[0])
    fnodes = {n.name: n for n in fgm.graph.nodes}

    # 1. origin of each quantized layer in the float graph
    layer_nodes = _layer_ops(qgm)
    origins: dict[str, Node | None] = {}
    for q in layer_nodes:
        origin = None
        if not _is_kernel(q):
            f = fnodes.get(q.name)
            if f is not None and f.target == q.target:
                origin = f
        if origin is None:
            for attr in _flat_get_attrs(list(q.args)):
                m = _PACKED_NAME.match(str(attr.target))
                if m and m.group("origin") in fnodes:
                    origin = fnodes[m.group("origin")]
                    break
        origins[q.name] = origin
    # 2. lowered ops without packed buffers (add...): pair the leftovers of each op kind in
    #    graph order; lowering inserts each replacement where the original node was.
    used = {o.name for o in origins.values() if o is not None}
    qnames = {n.name for n in qgm.graph.nodes}
    for kind in {_kernel_kind(q) for q in layer_nodes if origins[q.name] is None and _is_kernel(q)}:
        left_q = [q for q in layer_nodes if origins[q.name] is None and _is_kernel(q) and _kernel_kind(q) == kind]
        left_f = [f for f in fgm.graph.nodes if _op_name(f) == kind and f.name not in used and f.name not in qnames]
        if len(left_q) == len(left_f):
            for q, f in zip(left_q, left_f):
                origins[q.name] = f

    pairs = []  # (qnode, qvalue node, dequant by schema?, fvalue node | None, module to hook | None, layer, op)
    unmatched = []
    for q in layer_nodes:
        origin = origins[q.name]
        qvalue, acts, by_schema = _quant_value_node(q)
        module = _innermost_module(q)
        if origin is None:
            if not _is_quantized(q):  # float ops a pass created (QAT's BN folding arithmetic) are not layers
                continue
            if module is None or _module_for(float_model, module) is None:
                unmatched.append(q.name)
                continue
        fvalue = _float_value_node(origin, acts) if origin is not None else None
        op = (_op_name(origin) if origin is not None else None) or _op_name(q) or _kernel_kind(q)
        if acts:
            op = "-".join([op, *acts])
        fmodule = _innermost_module(origin) if origin is not None else module
        base = origin.name if origin is not None else q.name
        weighted = op.split("-")[0] in ("linear", "conv1d", "conv2d", "embedding", "conv_transpose2d")
        if fmodule and weighted:
            layer = fmodule
        elif fmodule:
            layer = f"{fmodule}/{base}"
        else:
            layer = base
        pairs.append((q, qvalue, by_schema, fvalue, module if fvalue is None else None, layer, op))

    acc = {p[0].name: _Accumulator() for p in pairs}
    out_acc = _Accumulator()
    q_wanted = {p[1].name for p in pairs}
    f_wanted = {p[3].name for p in pairs if p[3] is not None}
    hooked = {p[4] for p in pairs if p[4] is not None}
    with torch.no_grad():
        for args in batches:
            fvals, fout = _run_graph(fgm, args, f_wanted)
            mvals = _hook_run(float_model, args, hooked) if hooked else {}
            qvals, qout = _run_graph(qgm, args, q_wanted, simulate_observers=flow == "prepared")
            for q, qvalue, by_schema, fvalue, module, _layer, _op in pairs:
                qv = qvals.get(qvalue.name)
                if by_schema and isinstance(qv, Tensor):
                    qv = _dequantize_by_schema(qvalue, qv)
                fv = fvals.get(fvalue.name) if fvalue is not None else mvals.get(module)
                qv, fv = _as_float(qv), _as_float(fv)
                if qv is None or fv is None or qv.numel() != fv.numel():
                    continue
                acc[q.name].add(fv, qv)
            for a, b in zip(_leaves(fout), _leaves(qout)):
                if a.is_floating_point() and b.numel() == a.numel():
                    out_acc.add(a, b.to(a.dtype))
    rows = []
    for q, _qv, _bs, _fv, _m, layer, op in pairs:
        a = acc[q.name]
        if a.numel == 0:
            unmatched.append(q.name)
            continue
        rows.append(LayerComparison(layer, q.name, op, _kernel_label(q, flow), a.sqnr(), a.max_abs, a.numel))
    rows.sort(key=lambda r: (r.sqnr, -r.max_abs_error))
    return ComparisonReport(tuple(rows), out_acc.sqnr(), out_acc.max_abs, flow, tuple(unmatched))


def _hook_run(model: nn.Module, args: tuple, names: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    handles = []
    for name in names:
        mod = _module_for(model, name)
        if mod is not None:
            handles.append(mod.register_forward_hook(lambda _m, _i, out, name=name: values.__setitem__(name, out)))
    try:
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return values


# ------------------------------------------------------------ eager flow --


def _swapped_layers(float_model: nn.Module, qmodel: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    fmods = dict(float_model.named_modules())
    out: list[tuple[str, nn.Module, nn.Module]] = []
    for name, qm in qmodel.named_modules():
        if not name or any(name.startswith(p + ".") for p, _, _ in out):
            continue
        fm = fmods.get(name)
        if fm is not None and type(fm) is not type(qm):
            out.append((name, fm, qm))
    return out


def _eager_kernel(qm: nn.Module) -> str:
    path = getattr(qm, "kernel_path", None)
    if path:
        return str(path)
    if any("FakeQuant" in type(m).__name__ or "fake_quant" in n for n, m in qm.named_modules()):
        return "fake-quant"
    return type(qm).__name__


def _eager_op(qm: nn.Module, fm: nn.Module) -> str:
    label = getattr(qm, "op_label", None)
    if label:
        return str(label)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(fm).__name__).lower()


def _compare_eager(float_model: nn.Module, qmodel: nn.Module, batches: list[tuple]) -> ComparisonReport:
    layers = _swapped_layers(float_model, qmodel)
    acc = {name: _Accumulator() for name, _, _ in layers}
    out_acc = _Accumulator()
    names = {name for name, _, _ in layers}
    with torch.no_grad():
        for args in batches:
            fvals = _hook_run(float_model, args, names)
            fout = float_model(*args)
            qvals = _hook_run(qmodel, args, names)
            qout = qmodel(*args)
            for name in names:
                fv, qv = _as_float(fvals.get(name)), _as_float(qvals.get(name))
                if fv is not None and qv is not None and fv.numel() == qv.numel():
                    acc[name].add(fv, qv)
            for a, b in zip(_leaves(fout), _leaves(qout)):
                if a.is_floating_point() and a.numel() == b.numel():
                    out_acc.add(a, b.to(a.dtype))
    rows, unmatched = [], []
    for name, fm, qm in layers:
        a = acc[name]
        if a.numel == 0:
            unmatched.append(name)
            continue
        rows.append(LayerComparison(name, None, _eager_op(qm, fm), _eager_kernel(qm), a.sqnr(), a.max_abs, a.numel))
    rows.sort(key=lambda r: (r.sqnr, -r.max_abs_error))
    return ComparisonReport(tuple(rows), out_acc.sqnr(), out_acc.max_abs, "eager", tuple(unmatched))


# ------------------------------------------------------------------ API --


def compare(float_model: nn.Module, quantized_model: nn.Module, inputs: Any) -> ComparisonReport:
    """Per-layer SQNR and max error of ``quantized_model`` against ``float_model``, worst first.

    :param float_model: the fp32 model the quantized one was made from (an
        ``nn.Module``, or its exported ``GraphModule``). It is run as given:
        put both models in the same train/eval mode first.
    :param quantized_model: a graph-flow model (``prepare_pt2e`` /
        ``prepare_qat_pt2e`` / ``convert_pt2e`` result, or one loaded with
        ``quantplug.load``) or an eager-flow model (``quantize_`` /
        ``prepare_qat``).
    :param inputs: one tensor, a tuple of positional inputs, or a list of
        such batches (errors accumulate over all of them).
    :returns: a :class:`ComparisonReport`; ``print(report)`` shows the table.
    """
    batches = _batches(inputs)
    if isinstance(quantized_model, GraphModule):
        return _compare_graph(float_model, quantized_model, batches)
    if isinstance(quantized_model, nn.Module):
        return _compare_eager(float_model, quantized_model, batches)
    raise TypeError(f"quantized_model must be an nn.Module, got {type(quantized_model).__name__}")
