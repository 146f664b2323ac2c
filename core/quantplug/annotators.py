"""Pattern annotation rules shared by every backend quantizer.

Backends differ in *numbers* (uint8 vs int8, reduce_range, symmetric weights,
scale bounds), not in *where* quantization goes: a conv followed by a relu is
one fused kernel on every backend. So the rules live here once, and a backend
quantizer is a :class:`PatternQuantizer` subclass that supplies its default
:class:`QuantizationConfig`, its ``BackendConfig`` and optionally extra rules
(x86's conv+add fusion, qnnpack's fixed-qparams sigmoid).

Configuration follows the API users know from torch.ao / torchao, with the
same precedence: ``set_module_name`` > ``set_module_type`` >
``set_operator_type`` > ``set_global``. ``set_module_name(name, None)``
leaves that submodule in float.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, ClassVar

import torch
from torch.fx import GraphModule, Node

from .ops import is_op, op_name
from .quantizer import Quantizer
from .specs import (
    ANNOTATION_KEY,
    EXPLAIN_KEY,
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationConfig,
    QuantizationSpec,
    SharedQuantizationSpec,
)

__all__ = [
    "PatternQuantizer",
    "AnnotationRule",
    "make_quantization_config",
    "DEFAULT_RULES",
    "annotate_matmul",
]

#: ``rule(node, config, quantizer) -> bool``: annotate the pattern rooted at
#: ``node`` with ``config``; return True when it claimed the node.
AnnotationRule = Callable[[Node, QuantizationConfig, "PatternQuantizer"], bool]

_ACTIVATIONS_AFTER = ("relu", "hardtanh")
_SHARING_OPS = ("max_pool2d", "flatten", "reshape", "permute", "adaptive_avg_pool2d", "avg_pool2d")


def make_quantization_config(
    *,
    act_dtype: Any,
    weight_dtype: Any,
    act_range: tuple[int, int] | None = None,
    weight_range: tuple[int, int] | None = None,
    act_symmetric: bool = False,
    weight_per_channel: bool = True,
    weight_symmetric: bool = True,
    weight_group_size: int | None = None,
    is_dynamic: bool = False,
    per_row: bool = False,
    weight_only: bool = False,
    is_qat: bool = False,
    scale_min: float | None = None,
    act_observer: str = "histogram",
) -> QuantizationConfig:
    """Build a :class:`QuantizationConfig` from a backend's numerics.

    Every plugin describes its numbers here (``act_dtype=torch.uint8,
    act_range=(0, 127)`` for fbgemm's reduce_range...), so observer and
    fake-quant wiring is written once.

    :param act_observer: ``"histogram"`` (PTQ default, L2 range search),
        ``"minmax"`` or ``"moving_average"`` (QAT default).
    """
    from . import fake_quant as fq
    from . import observers as ob

    extra = {} if scale_min is None else {"eps": scale_min}

    def wrap(observer_ctr):
        return fq.FakeQuantize.with_args(observer=observer_ctr) if is_qat else observer_ctr

    act_qscheme = torch.per_tensor_symmetric if act_symmetric else torch.per_tensor_affine
    act_lo, act_hi = act_range if act_range is not None else (None, None)
    if weight_only:
        act_spec = None
    elif is_dynamic:
        act_spec = QuantizationSpec(
            dtype=act_dtype, observer_or_fake_quant_ctr=ob.PlaceholderObserver.with_args(dtype=act_dtype),
            quant_min=act_lo, quant_max=act_hi, qscheme=act_qscheme, is_dynamic=True, per_row=per_row,
        )
    else:
        if is_qat or act_observer == "moving_average":
            act_obs = ob.MovingAverageMinMaxObserver
        elif act_observer == "minmax":
            act_obs = ob.MinMaxObserver
        elif act_observer == "histogram":
            act_obs = ob.HistogramObserver
        else:
            raise ValueError(f"act_observer must be 'histogram', 'minmax' or 'moving_average', got {act_observer!r}")
        act_spec = QuantizationSpec(
            dtype=act_dtype,
            observer_or_fake_quant_ctr=wrap(act_obs.with_args(
                dtype=act_dtype, qscheme=act_qscheme, quant_min=act_lo, quant_max=act_hi, **extra)),
            quant_min=act_lo, quant_max=act_hi, qscheme=act_qscheme,
        )
    w_lo, w_hi = weight_range if weight_range is not None else (None, None)
    if weight_group_size is not None:
        w_qscheme, ch_axis = torch.per_channel_symmetric, 0
        w_obs = ob.PerChannelMinMaxObserver
    elif weight_per_channel:
        w_qscheme = torch.per_channel_symmetric if weight_symmetric else torch.per_channel_affine
        ch_axis = 0
        w_obs = ob.MovingAveragePerChannelMinMaxObserver if is_qat else ob.PerChannelMinMaxObserver
    else:
        w_qscheme = torch.per_tensor_symmetric if weight_symmetric else torch.per_tensor_affine
        ch_axis = None
        w_obs = ob.MovingAverageMinMaxObserver if is_qat else ob.MinMaxObserver
    w_kwargs = dict(dtype=weight_dtype if weight_dtype in (torch.int8, torch.uint8) else torch.int8,
                    qscheme=w_qscheme, quant_min=w_lo, quant_max=w_hi, **extra)
    if ch_axis is not None:
        w_kwargs["ch_axis"] = ch_axis
    weight_spec = QuantizationSpec(
        dtype=weight_dtype, observer_or_fake_quant_ctr=wrap(w_obs.with_args(**w_kwargs)),
        quant_min=w_lo, quant_max=w_hi, qscheme=w_qscheme, ch_axis=ch_axis, group_size=weight_group_size,
    )
    output_spec = None if (is_dynamic or weight_only) else act_spec
    return QuantizationConfig(act_spec, output_spec, weight_spec, None, is_qat)


# ----------------------------------------------------------------- helpers --


def _annotated(node: Node) -> bool:
    ann = node.meta.get(ANNOTATION_KEY)
    return ann is not None and ann._annotated


def _mark(node: Node, input_map: dict, output_spec, pattern: tuple[str, ...]) -> None:
    node.meta[ANNOTATION_KEY] = QuantizationAnnotation(
        input_qspec_map=input_map, output_qspec=output_spec, pattern=pattern, _annotated=True
    )


def _decline(node: Node, reason: str) -> bool:
    """Record why a rule left ``node`` in float (shown by ``quantplug.explain``); returns False.

    ``reason`` starts with its category: ``no pattern:``, ``op unsupported by backend:``,
    ``constraint violated:`` or ``excluded by config:``.
    """
    node.meta[EXPLAIN_KEY] = reason
    return False


def _single_user(node: Node) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _follow_batch_norm(node: Node) -> Node | None:
    """The node carrying a batch_norm's output (the op itself or its getitem[0])."""
    user = _single_user(node)
    if user is None or not is_op(user, "batch_norm"):
        return None
    bn_users = list(user.users)
    if len(bn_users) == 1 and bn_users[0].target is operator.getitem:
        return bn_users[0]
    if all(u.target is operator.getitem for u in bn_users):
        outs = [u for u in bn_users if u.args[1] == 0]
        return outs[0] if len(outs) == 1 else None
    return user


def _fuse_tail(node: Node, allow_bn: bool) -> tuple[Node, tuple[str, ...], list[Node]]:
    """Walk conv/linear -> (bn) -> (relu|hardtanh); return (last, pattern names, inner nodes)."""
    last, names, inner = node, [op_name(node)], []
    if allow_bn:
        bn_out = _follow_batch_norm(node)
        if bn_out is not None:
            bn = _single_user(node)
            inner += [bn] + ([bn_out] if bn_out is not bn else [])
            names.append("batch_norm")
            last = bn_out
    nxt = _single_user(last)
    if nxt is not None and op_name(nxt) in _ACTIVATIONS_AFTER and not _annotated(nxt):
        inner.append(nxt)
        names.append(op_name(nxt))
        last = nxt
    return last, tuple(names), inner


def _is_float_tensor(n: Any) -> bool:
    if not isinstance(n, Node):
        return False
    val = n.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


# ------------------------------------------------------------------- rules --


def annotate_weighted(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """linear / conv1d / conv2d, fused with a following batch_norm and relu/hardtanh."""
    if config.weight is None:
        return _decline(node, "excluded by config: the config for this node has no weight spec")
    if len(node.args) < 2 or not isinstance(node.args[1], Node):
        return _decline(node, "no pattern: the weight is not a tensor of the graph")
    if op_name(node) != "linear" and config.is_dynamic:
        return _decline(node, "op unsupported by backend: dynamic quantization has kernels for linear only")
    act, weight = node.args[0], node.args[1]
    input_map: dict = {weight: config.weight}
    if config.input_activation is not None:
        input_map[act] = config.input_activation
    if len(node.args) > 2 and isinstance(node.args[2], Node) and config.bias is not None:
        input_map[node.args[2]] = config.bias
    last, names, inner = _fuse_tail(node, allow_bn=op_name(node) != "linear")
    if config.output_activation is None:
        last, names, inner = node, (op_name(node),), []
    _mark(node, input_map, None if inner else config.output_activation, names)
    for n in inner:
        _mark(n, {}, config.output_activation if n is last else None, names)
    return True


def annotate_binary(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """add / mul of two float tensors, fused with a following relu."""
    if config.input_activation is None or config.output_activation is None or config.is_dynamic:
        return _decline(node, _NO_STATIC_ACT)
    inputs = [a for a in node.args[:2] if _is_float_tensor(a)]
    if len(inputs) != 2:
        return _decline(node, f"no pattern: {op_name(node)} with a scalar operand has no int8 kernel pattern")
    names = (op_name(node),)
    last = node
    nxt = _single_user(node)
    if nxt is not None and op_name(nxt) == "relu" and not _annotated(nxt):
        names, last = names + ("relu",), nxt
    _mark(node, {a: config.input_activation for a in inputs}, None if last is not node else config.output_activation, names)
    if last is not node:
        _mark(last, {}, config.output_activation, names)
    return True


def annotate_cat(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """cat: every input and the output share one set of qparams."""
    if config.input_activation is None or config.output_activation is None or config.is_dynamic:
        return _decline(node, _NO_STATIC_ACT)
    tensors = node.args[0]
    if not isinstance(tensors, (list, tuple)) or not all(_is_float_tensor(t) for t in tensors):
        return _decline(node, "no pattern: cat of non-float or non-tensor inputs")
    first = tensors[0]
    shared = SharedQuantizationSpec((first, node))
    input_map = {first: config.input_activation}
    for t in tensors[1:]:
        input_map[t] = shared
    _mark(node, input_map, shared, ("cat",))
    return True


def annotate_sharing(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """Ops that do not change values (pool, flatten, reshape, permute): output shares the input's qparams.

    Annotated only when the input is already quantized, so a float region
    does not grow quantize/dequantize pairs around a reshape.
    """
    if config.input_activation is None or config.is_dynamic or not node.args:
        return _decline(node, _NO_STATIC_ACT)
    src = node.args[0]
    if not _is_float_tensor(src) or not _output_quantized(src):
        return _decline(node, f"no pattern: the input of this {op_name(node)} is not quantized (it would only add "
                              f"quantize/dequantize around a float value)")
    _mark(node, {src: config.input_activation}, SharedQuantizationSpec((src, node)), (op_name(node),))
    return True


def annotate_matmul(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """matmul / bmm of two activations (attention scores, attention x values): both inputs and the output."""
    if config.input_activation is None or config.output_activation is None or config.is_dynamic:
        return _decline(node, _NO_STATIC_ACT)
    inputs = [a for a in node.args[:2] if _is_float_tensor(a)]
    if len(inputs) != 2:
        return _decline(node, "no pattern: matmul needs two float tensor inputs")
    _mark(node, {a: config.input_activation for a in inputs}, config.output_activation, (op_name(node),))
    return True


def annotate_fixed_qparams(node: Node, config: QuantizationConfig, quantizer: "PatternQuantizer") -> bool:
    """sigmoid / tanh / hardsigmoid with the backend's fixed output qparams."""
    spec = quantizer.fixed_qparams.get(op_name(node))
    if spec is None:
        return _decline(node, f"op unsupported by backend: {quantizer.backend_name} defines no fixed output qparams "
                              f"for {op_name(node)}")
    if config.input_activation is None or config.is_dynamic:
        return _decline(node, _NO_STATIC_ACT)
    # In QAT, prepare builds a FixedQParamsFakeQuantize for this spec (see prepare._make_observer).
    _mark(node, {node.args[0]: config.input_activation}, spec, (op_name(node),))
    return True


_NO_STATIC_ACT = "excluded by config: the config for this node quantizes no static activations (dynamic or weight-only)"


def _output_quantized(node: Node) -> bool:
    ann = node.meta.get(ANNOTATION_KEY)
    return ann is not None and ann.output_qspec is not None


#: op short name -> rule; a plugin copies and extends this in its quantizer. ``annotate_matmul``
#: is not in it: only a backend that lists ``("matmul",)`` in its BackendConfig should add it.
DEFAULT_RULES: dict[str, AnnotationRule] = {
    "linear": annotate_weighted,
    "conv1d": annotate_weighted,
    "conv2d": annotate_weighted,
    "add": annotate_binary,
    "mul": annotate_binary,
    "cat": annotate_cat,
    **{name: annotate_sharing for name in _SHARING_OPS},
    "sigmoid": annotate_fixed_qparams,
    "tanh": annotate_fixed_qparams,
    "hardsigmoid": annotate_fixed_qparams,
}


class PatternQuantizer(Quantizer):
    """A quantizer built from pattern rules and a default config.

    Subclasses set :attr:`backend_name`, :attr:`rules` (a copy of
    :data:`DEFAULT_RULES` with additions or removals) and
    :attr:`fixed_qparams`, and pass their default config and
    ``BackendConfig`` to ``__init__``.
    """

    backend_name: ClassVar[str] = "generic"
    rules: ClassVar[dict[str, AnnotationRule]] = DEFAULT_RULES
    fixed_qparams: ClassVar[dict[str, FixedQParamsQuantizationSpec]] = {}

    def __init__(self, global_config: QuantizationConfig | None = None, backend_config=None) -> None:
        self.global_config = global_config
        self.backend_config = backend_config
        self.operator_type_config: dict[str, QuantizationConfig | None] = {}
        self.module_type_config: dict[type, QuantizationConfig | None] = {}
        self.module_name_config: dict[str, QuantizationConfig | None] = {}

    # -- configuration (torch.ao / torchao names) -------------------------
    def set_global(self, config: QuantizationConfig | None) -> "PatternQuantizer":
        """Config for every op no more specific setting covers."""
        self.global_config = config
        return self

    def set_operator_type(self, op: str | Any, config: QuantizationConfig | None) -> "PatternQuantizer":
        """Config for one op kind: a short name (``"linear"``) or an ATen op."""
        name = op if isinstance(op, str) else _name_of_target(op)
        self.operator_type_config[name] = config
        return self

    def set_module_type(self, module_type: type, config: QuantizationConfig | None) -> "PatternQuantizer":
        """Config for ops inside submodules of ``module_type``."""
        self.module_type_config[module_type] = config
        return self

    def set_module_name(self, module_name: str, config: QuantizationConfig | None) -> "PatternQuantizer":
        """Config for ops inside the submodule ``module_name``; ``None`` keeps it float."""
        self.module_name_config[module_name] = config
        return self

    # -- annotation --------------------------------------------------------
    def config_for(self, node: Node) -> QuantizationConfig | None:
        """The config that applies to ``node`` under the precedence rules."""
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        for qualified_name, _type in reversed(stack):  # innermost module first
            name = _clean_module_name(qualified_name)
            for candidate, config in self.module_name_config.items():
                if name == candidate or name.startswith(candidate + "."):
                    return config
        for _qualified_name, mtype in reversed(stack):
            for candidate, config in self.module_type_config.items():
                if _type_matches(mtype, candidate):
                    return config
        name = op_name(node)
        if name in self.operator_type_config:
            return self.operator_type_config[name]
        return self.global_config

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate every node a rule claims, in graph order.

        A node left in float gets the reason in ``node.meta[EXPLAIN_KEY]`` (no rule for the
        op, a rule that did not match, or a config of ``None``), so :func:`quantplug.explain`
        can say why.
        """
        for node in model.graph.nodes:
            name = op_name(node)
            if name is None or _annotated(node):
                continue
            rule = self.rules.get(name)
            if rule is None:
                if name in _NOT_COMPUTE:
                    pass
                elif self.backend_config is not None and not self.backend_config.configs_for_root(name):
                    _decline(node, f"op unsupported by backend: {self.backend_name} has no kernel pattern for {name} "
                                   f"(not in its BackendConfig)")
                else:
                    _decline(node, f"no pattern: the {self.backend_name} quantizer has no rule for {name}")
                continue
            config = self.config_for(node)
            if config is None:
                _decline(node, "excluded by config: set_module_name / set_module_type / set_operator_type / "
                               "set_global gave None for this node")
                continue
            rule(node, config, self)
        return model


#: ops that are parts of a pattern rather than patterns of their own (fused into a conv/linear/add)
_NOT_COMPUTE = frozenset({"batch_norm", "relu", "hardtanh"})


def _name_of_target(target: Any) -> str:
    from .ops import OP_TARGETS

    for name, targets in OP_TARGETS.items():
        if target in targets or getattr(target, "default", None) in targets:
            return name
    raise ValueError(f"set_operator_type: unknown op {target!r}; use one of {sorted(OP_TARGETS)}")


def _clean_module_name(qualified: str) -> str:
    # torch.export records names like "L['self'].layer1" or "layer1.0.conv1"
    return qualified.replace("L['self'].", "").replace("L__self___", "")


def _type_matches(recorded: Any, wanted: type) -> bool:
    if isinstance(recorded, type):
        return issubclass(recorded, wanted)
    text = str(recorded)
    return text.endswith(f"{wanted.__module__}.{wanted.__qualname__}") or text.endswith(wanted.__qualname__)
