"""``prepare_pt2e`` / ``prepare_qat_pt2e``: export, annotate, validate, insert observers.

Observer placement works on *qparam points*: every annotated input edge
``(producer, consumer)`` and every annotated output node. Points joined by a
:class:`SharedQuantizationSpec`, or by implicit sharing (a consumer asks for
exactly the spec its producer's output already has), are merged with a
union-find, so sharing is symmetric and independent of node order: cat's
inputs and output, or a reshape's input and output, end up with one observer
module, called at every place in the group.

Derived specs (int32 bias) get no observer; convert computes their qparams
from the observers they derive from. Fixed-qparams specs get a fixed
observer (or fake-quant in QAT).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable

import torch
from torch import nn
from torch.fx import GraphModule, Node

from .errors import QuantplugError
from .fusion import fold_batch_norm
from .quantizer import Quantizer
from .specs import (
    ANNOTATION_KEY,
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)

__all__ = ["prepare_pt2e", "prepare_qat_pt2e", "export_model", "OBSERVER_PREFIX", "META_KEY"]

OBSERVER_PREFIX = "activation_post_process_"
#: ``gm.meta[META_KEY]`` holds what convert needs: backend name, groups, derived specs.
META_KEY = "quantplug"

Point = Hashable  # ("edge", producer, consumer) or ("node", node)


def export_model(model: nn.Module, example_inputs: tuple, *, dynamic_batch: bool = True,
                 dynamic_shapes: Any = None) -> GraphModule:
    """``torch.export`` a module to an ATen-level ``GraphModule``.

    An already exported ``GraphModule`` is returned as is. With
    ``dynamic_batch`` (default), dim 0 of every tensor input is exported as a
    dynamic dimension so the converted model accepts any batch size.
    """
    if isinstance(model, GraphModule) and any(n.op == "call_function" and hasattr(n.target, "_schema") for n in model.graph.nodes):
        return model
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if example_inputs is None:
        raise ValueError("prepare_pt2e needs example_inputs to export an nn.Module (a tuple of tensors)")
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    if dynamic_shapes is None and dynamic_batch:
        dynamic_shapes = tuple(
            {0: torch.export.Dim("batch")} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in example_inputs
        )
        # export specialises a size-1 dimension to the constant 1, so trace with batch 2.
        example_inputs = tuple(
            torch.cat([a, a]) if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == 1 else a
            for a in example_inputs
        )
    try:
        return torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes).module()
    except Exception as exc:
        raise QuantplugError(
            f"torch.export could not export {type(model).__name__}: {type(exc).__name__}: {exc}\n"
            f"The graph flow needs an exportable model; for models that do not export, use the eager "
            f"flow: quantplug.quantize_(model, config)."
        ) from exc


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Point, Point] = {}

    def add(self, p: Point) -> None:
        self.parent.setdefault(p, p)

    def find(self, p: Point) -> Point:
        self.add(p)
        while self.parent[p] != p:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        return p

    def union(self, a: Point, b: Point) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


@dataclass
class _Group:
    """Points that share one observer."""

    spec: QuantizationSpecBase
    points: list = field(default_factory=list)
    module_name: str | None = None


def _point_of(edge_or_node) -> Point:
    return ("edge", *edge_or_node) if isinstance(edge_or_node, tuple) else ("node", edge_or_node)


def _collect_points(gm: GraphModule) -> dict[Point, QuantizationSpecBase]:
    specs: dict[Point, QuantizationSpecBase] = {}
    for n in gm.graph.nodes:
        ann = n.meta.get(ANNOTATION_KEY)
        if ann is None:
            continue
        for inp, spec in ann.input_qspec_map.items():
            if spec is not None:
                specs[("edge", inp, n)] = spec
        if ann.output_qspec is not None:
            specs[("node", n)] = ann.output_qspec
    return specs


def _group_points(specs: dict[Point, QuantizationSpecBase]) -> list[_Group]:
    uf = _UnionFind()
    for p, spec in specs.items():
        uf.add(p)
        if isinstance(spec, SharedQuantizationSpec):
            target = _point_of(spec.edge_or_node)
            if target not in specs:
                raise QuantplugError(f"SharedQuantizationSpec at {_describe(p)} refers to {_describe(target)}, "
                                     f"which has no quantization spec; annotate it first")
            uf.union(target, p)
    # Implicit sharing: an input edge whose spec equals its producer's output spec
    # reads the producer's quantized output instead of re-quantizing it.
    for p, spec in specs.items():
        if p[0] != "edge" or isinstance(spec, SharedQuantizationSpec):
            continue
        producer_point = ("node", p[1])
        producer_spec = specs.get(producer_point)
        ann = p[1].meta.get(ANNOTATION_KEY)
        if producer_spec is not None and ann is not None and ann.allow_implicit_sharing:
            root_spec = _concrete_spec(producer_point, specs, uf)
            if producer_spec == spec or root_spec == spec or isinstance(producer_spec, SharedQuantizationSpec) and root_spec == spec:
                uf.union(producer_point, p)
    groups: dict[Point, _Group] = {}
    order = {p: i for i, p in enumerate(specs)}
    for p in sorted(specs, key=order.__getitem__):
        root = uf.find(p)
        concrete = _concrete_spec(p, specs, uf)
        g = groups.setdefault(root, _Group(spec=concrete))
        g.points.append(p)
    return list(groups.values())


def _concrete_spec(p: Point, specs, uf: _UnionFind) -> QuantizationSpecBase:
    root = uf.find(p)
    for q, spec in specs.items():
        if uf.find(q) == root and not isinstance(spec, SharedQuantizationSpec):
            return spec
    raise QuantplugError(f"the shared specs around {_describe(p)} form a cycle with no concrete QuantizationSpec")


def _describe(p: Point) -> str:
    if p[0] == "edge":
        return f"input {p[1].name!r} of node {p[2].name!r}"
    return f"output of node {p[1].name!r}"


def _make_observer(spec: QuantizationSpecBase, is_qat: bool) -> nn.Module | None:
    from . import fake_quant, observers

    if isinstance(spec, QuantizationSpec):
        if spec.observer_or_fake_quant_ctr is None:
            return observers.PlaceholderObserver(dtype=spec.dtype if isinstance(spec.dtype, torch.dtype) else torch.int8)
        return spec.observer_or_fake_quant_ctr()
    if isinstance(spec, FixedQParamsQuantizationSpec):
        qmin, qmax = spec.range
        dtype = spec.dtype if isinstance(spec.dtype, torch.dtype) else torch.int8
        kwargs = dict(scale=spec.scale, zero_point=spec.zero_point, dtype=dtype, quant_min=qmin, quant_max=qmax)
        if is_qat:
            return fake_quant.FixedQParamsFakeQuantize(observer=observers.FixedQParamsObserver.with_args(**kwargs))
        return observers.FixedQParamsObserver(**kwargs)
    return None  # derived specs have no observer of their own


def _insert_observers(gm: GraphModule, is_qat: bool) -> dict[str, Any]:
    specs = _collect_points(gm)
    groups = _group_points(specs)
    graph = gm.graph
    point_module: dict[Point, str] = {}
    derived: list[tuple[Point, DerivedQuantizationSpec]] = []
    index = 0
    for g in groups:
        module = _make_observer(g.spec, is_qat)
        if module is None:
            derived.extend((p, g.spec) for p in g.points)
            continue
        while hasattr(gm, f"{OBSERVER_PREFIX}{index}"):
            index += 1
        g.module_name = f"{OBSERVER_PREFIX}{index}"
        index += 1
        gm.add_module(g.module_name, module)
        for p in g.points:
            point_module[p] = g.module_name

    # Output observers first: every later use of the node reads the observed value.
    for p, name in point_module.items():
        if p[0] != "node":
            continue
        node = p[1]
        with graph.inserting_after(node):
            obs = graph.call_module(name, (node,))
        obs.meta["val"] = node.meta.get("val")
        node.replace_all_uses_with(obs, delete_user_cb=lambda user, obs=obs: user is not obs)
    # Then edge observers for edges not already covered by their producer's group.
    for p, name in point_module.items():
        if p[0] != "edge":
            continue
        producer, consumer = p[1], p[2]
        if point_module.get(("node", producer)) == name:
            continue
        current = _current_input(consumer, producer, point_module)
        with graph.inserting_before(consumer):
            obs = graph.call_module(name, (current,))
        obs.meta["val"] = producer.meta.get("val")
        consumer.replace_input_with(current, obs)
    graph.lint()
    gm.recompile()
    return {
        "derived": [(p[1].name, p[2].name, spec, [point_module.get(_point_of(src)) for src in spec.derived_from])
                    for p, spec in derived if p[0] == "edge"],
        "groups": len(groups),
        "module_specs": {g.module_name: g.spec for g in groups if g.module_name is not None},
    }


def _current_input(consumer: Node, producer: Node, point_module: dict) -> Node:
    """The node now feeding ``consumer`` for the edge from ``producer`` (maybe its output observer)."""
    for inp in consumer.all_input_nodes:
        if inp is producer:
            return inp
        if inp.op == "call_module" and inp.args and inp.args[0] is producer:
            return inp
    raise QuantplugError(f"internal: lost the edge {producer.name} -> {consumer.name} while inserting observers")


def _prepare(model, quantizer: Quantizer, example_inputs, is_qat: bool, dynamic_batch: bool, dynamic_shapes) -> GraphModule:
    if not isinstance(quantizer, Quantizer):
        raise TypeError(f"expected a quantplug.Quantizer (e.g. quantplug.get_quantizer('xnnpack')), got {type(quantizer).__name__}")
    gm = export_model(model, example_inputs, dynamic_batch=dynamic_batch, dynamic_shapes=dynamic_shapes)
    if not is_qat:
        fold_batch_norm(gm)  # eval-mode conv-bn -> one conv, as the kernels compute it
    gm = quantizer.transform_for_annotation(gm)
    quantizer.annotate(gm)
    quantizer.validate(gm)
    info = _insert_observers(gm, is_qat)
    info.update(backend=getattr(quantizer, "backend_name", None), is_qat=is_qat, quantizer=type(quantizer).__name__)
    gm.meta[META_KEY] = info
    return gm


def prepare_pt2e(model: nn.Module | GraphModule, quantizer: Quantizer, example_inputs: tuple | None = None, *,
                 dynamic_batch: bool = True, dynamic_shapes: Any = None) -> GraphModule:
    """Export ``model`` (unless already exported), annotate it with ``quantizer`` and insert observers.

    Run calibration data through the result, then call :func:`quantplug.convert_pt2e`.

    :param model: an ``nn.Module`` (exported here with ``torch.export``) or an exported ``GraphModule``.
    :param quantizer: e.g. ``quantplug.get_quantizer("xnnpack")``.
    :param example_inputs: a tuple of example tensors for export.
    :param dynamic_batch: export dim 0 of every input as dynamic (default True).
    """
    return _prepare(model, quantizer, example_inputs, False, dynamic_batch, dynamic_shapes)


def prepare_qat_pt2e(model: nn.Module | GraphModule, quantizer: Quantizer, example_inputs: tuple | None = None, *,
                     dynamic_batch: bool = True, dynamic_shapes: Any = None) -> GraphModule:
    """Like :func:`prepare_pt2e`, with fake-quant modules for quantization-aware training.

    The quantizer must be built for QAT (``get_quantizer(name, is_qat=True)``) so its specs
    carry fake-quant constructors. Conv-batch_norm pairs train in the folded form the converted
    model computes (see :mod:`quantplug.qat`).
    """
    from .qat import fold_conv_bn_for_qat

    gm = _prepare(model, quantizer, example_inputs, True, dynamic_batch, dynamic_shapes)
    fold_conv_bn_for_qat(gm)
    return gm


def observer_nodes(gm: GraphModule) -> Iterable[Node]:
    """The call sites of observer / fake-quant modules inserted by prepare."""
    for n in gm.graph.nodes:
        if n.op == "call_module" and str(n.target).startswith(OBSERVER_PREFIX):
            yield n
