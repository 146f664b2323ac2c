"""``convert_pt2e``: observers become quantize/dequantize, weights become int8, then lowering.

Steps:

1. Check calibration: an activation observer that saw no data would produce
   meaningless qparams, so convert stops with a :class:`CalibrationError`
   naming every such observer and the node it watches.
2. Reference representation: each observer call becomes
   ``quantplug::quantize_*`` followed by ``quantplug::dequantize_*``.
   Constant inputs (weights, biases) are quantized *once*, here, and stored as
   int8 / int4-in-int8 / int32 buffers; their fp32 originals are dropped, so
   the converted model really holds int8 weights.
3. Lowering (default): the backend replaces the patterns its kernels run
   (dq -> linear/conv (-> relu) -> q, ...) with its fused ops; what it cannot
   run stays in reference form and is reported (``quantplug.explain``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from .direct_calls import DirectCallTracer
from .errors import CalibrationError, QuantplugError
from .prepare import META_KEY, OBSERVER_PREFIX
from .quant_ops import ops as qops
from .specs import INT4, UINT4, FixedQParamsQuantizationSpec, QuantizationSpec

__all__ = ["convert_pt2e"]

_STORAGE = {torch.int8: torch.int8, torch.uint8: torch.uint8, torch.int32: torch.int32, INT4: torch.int8, UINT4: torch.uint8}


def convert_pt2e(model: GraphModule, *, lower: bool = True, check_calibration: bool = True) -> GraphModule:
    """Convert a prepared (and calibrated or trained) model to a quantized model.

    :param model: the result of ``prepare_pt2e`` / ``prepare_qat_pt2e`` after calibration.
    :param lower: ``True`` (default): run the backend's int8 kernels. ``False``: keep the
        reference representation (explicit quantize/dequantize around float ops), for
        debugging and for backends without kernels.
    :param check_calibration: raise if activation observers saw no data.
    :returns: the converted model: a plain ``torch.fx.GraphModule`` (picklable, no export
        hooks) holding only the tensors its graph uses. Use it instead of the prepared model.
    """
    info = model.meta.get(META_KEY) if isinstance(model, GraphModule) else None
    if info is None or "module_specs" not in info:
        raise QuantplugError("convert_pt2e expects the model returned by prepare_pt2e / prepare_qat_pt2e "
                             "(after calibration); this model was not prepared by quantplug")
    if info.get("converted"):
        raise QuantplugError("this model was already converted; convert_pt2e runs once")
    if info.get("is_qat"):
        from .qat import finalize_qat_conv_bn, move_exported_model_to_eval

        move_exported_model_to_eval(model)
        finalize_qat_conv_bn(model)
    _observe_constants(model)
    if check_calibration:
        _check_calibrated(model, info)
    _to_reference(model, info)
    info["converted"] = True
    info["lowered"] = False
    if lower:
        from .lowering import lower_model

        lower_model(model)
    return _plain_graph_module(model)


def _plain_graph_module(gm: GraphModule) -> GraphModule:
    # torch.export's module() attaches forward hooks that are lambdas (unpicklable) and
    # overrides train()/eval(); a plain GraphModule over the same graph has neither. The
    # `_guards_fn` submodule export adds only re-checks input shapes and cannot be pickled.
    for n in list(gm.graph.nodes):
        if n.op == "call_module" and n.target == "_guards_fn" and not n.users:
            gm.graph.erase_node(n)
    # Unpickling re-traces the graph's code with the tracer class the graph records. Export's
    # needs arguments we do not have; ours keeps lowered nodes' direct calls (see direct_calls).
    gm.graph._tracer_cls = DirectCallTracer
    gm.graph._tracer_extras = None
    out = GraphModule(gm, gm.graph, class_name="QuantizedGraphModule")
    out.meta.update(gm.meta)
    return out


# ----------------------------------------------------------- calibration --


def _module(gm: GraphModule, name: str) -> torch.nn.Module:
    return gm.get_submodule(name)


def _const_value(gm: GraphModule, node: Node) -> torch.Tensor | None:
    if node.op != "get_attr":
        return None
    value = gm
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value if isinstance(value, torch.Tensor) else None


def _observe_constants(gm: GraphModule) -> None:
    """Weights are constants: make sure their observers have seen them, even without calibration."""
    with torch.no_grad():
        for n in list(gm.graph.nodes):
            if n.op == "call_module" and str(n.target).startswith(OBSERVER_PREFIX):
                const = _const_value(gm, n.args[0])
                mod = _module(gm, n.target)
                if const is not None and not _has_observed(mod):
                    mod(const)


def _inner_observer(mod: torch.nn.Module) -> torch.nn.Module:
    return getattr(mod, "activation_post_process", mod)


def _has_observed(mod: torch.nn.Module) -> bool:
    obs = _inner_observer(mod)
    flag = getattr(obs, "has_observed", None)
    return True if flag is None else bool(flag)


def _check_calibrated(gm: GraphModule, info: dict) -> None:
    missing = []
    for n in gm.graph.nodes:
        if n.op != "call_module" or not str(n.target).startswith(OBSERVER_PREFIX):
            continue
        spec = info["module_specs"].get(n.target)
        if isinstance(spec, FixedQParamsQuantizationSpec) or (isinstance(spec, QuantizationSpec) and spec.is_dynamic):
            continue
        if not _has_observed(_module(gm, n.target)):
            users = ", ".join(u.name for u in n.users) or "the output"
            missing.append(f"{n.target} (observes {n.args[0].name!r}, used by {users})")
    if missing:
        raise CalibrationError(
            f"{len(missing)} observer(s) saw no data, so their qparams would be meaningless:\n  "
            + "\n  ".join(sorted(set(missing)))
            + "\nRun representative inputs through the prepared model before convert_pt2e "
              "(e.g. `for x in data: prepared(x)`), and check that those inputs reach these nodes."
        )


# ---------------------------------------------------------- reference form --


def _attr_name(gm: GraphModule, base: str) -> str:
    base = base.replace(".", "_")
    name, i = base, 0
    while hasattr(gm, name):
        i += 1
        name = f"{base}_{i}"
    return name


def _register(gm: GraphModule, base: str, value: torch.Tensor) -> str:
    name = _attr_name(gm, base)
    gm.register_buffer(name, value)
    return name


def _qparams(mod: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    scale, zp = mod.calculate_qparams()
    return scale.detach().to(torch.float32), zp.detach().to(torch.int32)


def _spec_range(spec) -> tuple[int, int]:
    return spec.range


def _to_reference(gm: GraphModule, info: dict) -> None:
    graph = gm.graph
    specs = info["module_specs"]
    by_name = {n.name: n for n in graph.nodes}
    for n in list(graph.nodes):
        if n.op != "call_module" or not str(n.target).startswith(OBSERVER_PREFIX):
            continue
        spec, mod, src = specs[n.target], _module(gm, n.target), n.args[0]
        with graph.inserting_before(n):
            new = _replace_observer(gm, n, src, spec, mod)
        n.replace_all_uses_with(new)
        graph.erase_node(n)
    for producer_name, consumer_name, spec, sources in info.get("derived", []):
        _convert_derived(gm, by_name.get(producer_name), by_name.get(consumer_name), spec, sources)
    _drop_unused(gm)
    for name in list(specs):
        if hasattr(gm, name):
            delattr(gm, name)
    graph.lint()
    gm.recompile()


def _replace_observer(gm: GraphModule, n: Node, src: Node, spec, mod) -> Node:
    graph = gm.graph
    if isinstance(spec, QuantizationSpec) and spec.is_dynamic:
        qmin, qmax = spec.range
        return graph.call_function(qops.quantize_dequantize_dynamic.default,
                                   (src, qmin, qmax, _STORAGE[spec.dtype], spec.per_row, spec.is_symmetric))
    qmin, qmax = _spec_range(spec)
    dtype = _STORAGE[spec.dtype]
    const = _const_value(gm, src)
    group_size = getattr(spec, "group_size", None)
    if group_size is not None:
        if const is None:
            raise QuantplugError(f"per-group quantization applies to constant weights only (node {src.name!r})")
        return _fold_per_group(gm, src, const, spec, group_size)
    scale, zp = _qparams(mod)
    if scale.numel() > 1 or (isinstance(spec, QuantizationSpec) and spec.is_per_channel):
        axis = spec.ch_axis if spec.ch_axis is not None else 0
        scale_attr = graph.get_attr(_register(gm, f"{n.target}_scale", scale.reshape(-1)))
        zp_attr = graph.get_attr(_register(gm, f"{n.target}_zero_point", zp.reshape(-1)))
        if const is not None:
            q = qops.quantize_per_channel(const.detach().to(torch.float32), scale, zp, axis, qmin, qmax, dtype)
            q_node = graph.get_attr(_register(gm, f"{src.target}_q", q))
        else:
            q_node = graph.call_function(qops.quantize_per_channel.default, (src, scale_attr, zp_attr, axis, qmin, qmax, dtype))
        return graph.call_function(qops.dequantize_per_channel.default, (q_node, scale_attr, zp_attr, axis, qmin, qmax, dtype))
    s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
    if const is not None:
        q = qops.quantize_per_tensor(const.detach().to(torch.float32), s, z, qmin, qmax, dtype)
        q_node = graph.get_attr(_register(gm, f"{src.target}_q", q))
    else:
        q_node = graph.call_function(qops.quantize_per_tensor.default, (src, s, z, qmin, qmax, dtype))
    return graph.call_function(qops.dequantize_per_tensor.default, (q_node, s, z, qmin, qmax, dtype))


def _fold_per_group(gm: GraphModule, src: Node, const: torch.Tensor, spec, group_size: int) -> Node:
    from .affine import choose_qparams, quantize_affine

    w = const.detach().to(torch.float32)
    rows, cols = w.shape[0], w.reshape(w.shape[0], -1).shape[1]
    if cols % group_size:
        raise QuantplugError(f"weight {src.target!r} has {cols} input features, not a multiple of group_size={group_size}")
    flat = w.reshape(rows, cols)
    groups = flat.reshape(rows, cols // group_size, group_size)
    qmin, qmax = spec.range
    scale, zp = choose_qparams(groups.amin(-1).reshape(-1), groups.amax(-1).reshape(-1), quant_min=qmin, quant_max=qmax,
                               symmetric=spec.is_symmetric or spec.is_per_channel, dtype=torch.int8)
    scale, zp = scale.reshape(rows, -1).to(torch.float32), zp.reshape(rows, -1).to(torch.int32)
    q = quantize_affine(flat, scale, zp, quant_min=qmin, quant_max=qmax, dtype=torch.int8, group_size=group_size)
    graph = gm.graph
    q_node = graph.get_attr(_register(gm, f"{src.target}_q", q.reshape(const.shape).contiguous()))
    s_node = graph.get_attr(_register(gm, f"{src.target}_group_scale", scale))
    z_node = graph.get_attr(_register(gm, f"{src.target}_group_zero_point", zp))
    return graph.call_function(qops.dequantize_per_group.default, (q_node, s_node, z_node, group_size, qmin, qmax))


def _convert_derived(gm: GraphModule, producer: Node | None, consumer: Node | None, spec, sources: list) -> None:
    if producer is None or consumer is None:
        return
    const = _const_value(gm, producer)
    if const is None:
        raise QuantplugError(f"derived quantization of the non-constant {producer.name!r} is not supported")
    observers = [gm.get_submodule(s) for s in sources if s is not None]
    scale, zp = spec.derive_qparams_fn(observers)
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    zp = torch.as_tensor(zp, dtype=torch.int32).reshape(-1)
    qmin, qmax = spec.quant_min if spec.quant_min is not None else -(2**31), spec.quant_max if spec.quant_max is not None else 2**31 - 1
    graph = gm.graph
    with graph.inserting_before(consumer):
        if scale.numel() > 1:
            axis = spec.ch_axis or 0
            q = qops.quantize_per_channel(const.detach().to(torch.float32), scale, zp.expand_as(scale).contiguous(), axis, qmin, qmax, torch.int32)
            s_node = graph.get_attr(_register(gm, f"{producer.target}_scale", scale))
            z_node = graph.get_attr(_register(gm, f"{producer.target}_zero_point", zp.expand_as(scale).contiguous()))
            q_node = graph.get_attr(_register(gm, f"{producer.target}_q", q))
            dq = graph.call_function(qops.dequantize_per_channel.default, (q_node, s_node, z_node, axis, qmin, qmax, torch.int32))
        else:
            s, z = float(scale[0]), int(zp[0])
            q = qops.quantize_per_tensor(const.detach().to(torch.float32), s, z, qmin, qmax, torch.int32)
            q_node = graph.get_attr(_register(gm, f"{producer.target}_q", q))
            dq = graph.call_function(qops.dequantize_per_tensor.default, (q_node, s, z, qmin, qmax, torch.int32))
    consumer.replace_input_with(producer, dq)


def _drop_unused(gm: GraphModule) -> None:
    """Remove get_attr nodes nobody uses, then every tensor no node refers to.

    The second part matters after batch-norm folding and weight quantization:
    the original fp32 weights and BN statistics are no longer referenced, and
    keeping them would make the "quantized" model bigger than the float one.
    """
    graph = gm.graph
    for n in list(graph.nodes):
        if n.op == "get_attr" and not n.users:
            target = str(n.target)
            graph.erase_node(n)
            owner_path, _, attr = target.rpartition(".")
            owner = gm.get_submodule(owner_path) if owner_path else gm
            if attr in owner._parameters:
                del owner._parameters[attr]
            elif attr in owner._buffers:
                del owner._buffers[attr]
            elif hasattr(owner, attr) and isinstance(getattr(owner, attr), torch.Tensor):
                delattr(owner, attr)
    referenced = {str(n.target) for n in graph.nodes if n.op == "get_attr"}
    called = {str(n.target) for n in graph.nodes if n.op == "call_module"}
    for name, _ in list(gm.named_parameters()) + list(gm.named_buffers()):
        owner_path, _, attr = name.rpartition(".")
        if name in referenced or any(owner_path == c or owner_path.startswith(c + ".") for c in called):
            continue
        owner = gm.get_submodule(owner_path) if owner_path else gm
        owner._parameters.pop(attr, None)
        owner._buffers.pop(attr, None)


def reference_info(gm: GraphModule) -> dict[str, Any]:
    """The quantplug metadata of a prepared or converted model."""
    return gm.meta.get(META_KEY, {})
