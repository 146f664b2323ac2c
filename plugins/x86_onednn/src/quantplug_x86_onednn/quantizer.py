"""``X86OneDNNQuantizer``: the x86 / oneDNN quantizer (PT2E annotation).

It is the core's :class:`~quantplug.annotators.PatternQuantizer` with x86
numerics (uint8 full-range activations, int8 symmetric weights, like torch's
X86InductorQuantizer) and one extra rule: a conv2d (optionally followed by a
batch_norm) whose only user is an add of two tensors is annotated together
with that add (and a following relu) as ONE pattern, so the conv's output is
never quantized and the add's other input is. The x86 kernels run it as one
conv with a "sum" post-op.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import Node

from quantplug.annotators import DEFAULT_RULES, PatternQuantizer, make_quantization_config
from quantplug.annotators import annotate_weighted
from quantplug.configs import INT4_GROUP_SIZES
from quantplug.ops import is_op, op_name
from quantplug.specs import INT4, ANNOTATION_KEY, FixedQParamsQuantizationSpec, QuantizationAnnotation, QuantizationConfig

from .backend_config import BACKEND_NAME, FIXED_QPARAMS, get_x86_onednn_backend_config

__all__ = [
    "X86OneDNNQuantizer",
    "get_default_x86_onednn_quantization_config",
    "get_weight_only_quantization_config",
    "get_symmetric_quantization_config",
    "annotate_conv_add",
]

#: observer eps of X86InductorQuantizer's default config
DEFAULT_EPS = 2.0**-12


def get_default_x86_onednn_quantization_config(
    is_per_channel: bool = True,
    is_dynamic: bool = False,
    is_qat: bool = False,
    *,
    reduce_range: bool = False,
    act_observer: str = "histogram",
    per_row: bool = False,
    weight_symmetric: bool = True,
) -> QuantizationConfig:
    """The x86/oneDNN :class:`QuantizationConfig`.

    uint8 per-tensor affine activations over 0..255 (0..127 with
    ``reduce_range=True``, which the kernels run but do not need), int8
    symmetric weights (per channel unless ``is_per_channel=False``),
    observers with ``eps=2**-12``. ``is_dynamic``: activations quantized per
    call, per tensor. ``is_qat``: fake-quant modules.

    :raises ValueError: for options the x86 kernels cannot run
        (``per_row=True``: oneDNN's dynamic linear quantizes per tensor;
        ``weight_symmetric=False``: oneDNN int8 weights have zero point 0).
    """
    if per_row:
        raise ValueError("per_row=True is not supported by x86_onednn: its dynamic linear quantizes "
                         "activations per tensor (use is_dynamic=True without per_row)")
    if not weight_symmetric:
        raise ValueError("weight_symmetric=False is not supported by x86_onednn: oneDNN int8 weights are "
                         "symmetric (zero point 0)")
    if is_dynamic and is_qat:
        raise ValueError("is_dynamic=True with is_qat=True is not supported by x86_onednn: QAT trains "
                         "static activation qparams")
    return make_quantization_config(
        act_dtype=torch.uint8,
        weight_dtype=torch.int8,
        act_range=(0, 127) if reduce_range else (0, 255),
        weight_range=(-128, 127),
        weight_per_channel=is_per_channel,
        weight_symmetric=True,
        is_dynamic=is_dynamic,
        is_qat=is_qat,
        scale_min=DEFAULT_EPS,
        act_observer=act_observer,
    )


def get_symmetric_quantization_config(
    is_per_channel: bool = True,
    is_dynamic: bool = False,
    is_qat: bool = False,
    **options: Any,
) -> QuantizationConfig:
    """Alias of :func:`get_default_x86_onednn_quantization_config` under torchao's XNNPACK name.

    "Symmetric" refers to the weights, as in torchao: activations are
    asymmetric uint8 on x86.
    """
    return get_default_x86_onednn_quantization_config(is_per_channel, is_dynamic, is_qat, **options)


def get_weight_only_quantization_config(dtype: str = "int8", group_size: int = 32,
                                        is_per_channel: bool = True) -> QuantizationConfig:
    """Weight-only linear (fp32 activations, the kernels dequantize weights in registers).

    :param dtype: ``"int8"`` (symmetric, -128..127, per channel unless ``is_per_channel=False``)
        or ``"int4"`` (symmetric group-wise, -8..7, one scale per ``group_size`` inputs).
    :param group_size: with int4: 32, 64 or 128.
    :raises ValueError: for another dtype or group size.
    """
    if dtype == "int8":
        return make_quantization_config(
            act_dtype=torch.uint8, weight_dtype=torch.int8, weight_range=(-128, 127),
            weight_per_channel=is_per_channel, weight_symmetric=True, weight_only=True, scale_min=DEFAULT_EPS)
    if dtype == "int4":
        if isinstance(group_size, bool) or group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"group_size={group_size!r} is not supported by x86_onednn's int4 weight-only "
                             f"linear: use one of {list(INT4_GROUP_SIZES)}")
        return make_quantization_config(
            act_dtype=torch.uint8, weight_dtype=INT4, weight_range=(-8, 7), weight_symmetric=True,
            weight_group_size=group_size, weight_only=True)
    raise ValueError(f"weight_only_dtype={dtype!r} is not supported by x86_onednn: use 'int8' or 'int4'")


def _annotate_linear(node: Node, config: QuantizationConfig, quantizer: PatternQuantizer) -> bool:
    """The core's linear rule, except that int4 group-wise weights need K a multiple of the
    group size (other linears stay float)."""
    group_size = config.weight.group_size if config.weight is not None else None
    if group_size is not None:
        weight = node.args[1] if len(node.args) > 1 else None
        val = weight.meta.get("val") if isinstance(weight, Node) else None
        if val is None or val.dim() != 2 or val.shape[1] % group_size:
            return False
    return DEFAULT_RULES["linear"](node, config, quantizer)


# ------------------------------------------------------------ conv + add --


def _single_user(node: Node) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _annotated(node: Node) -> bool:
    ann = node.meta.get(ANNOTATION_KEY)
    return ann is not None and ann._annotated


def _is_float_tensor(n: Any) -> bool:
    if not isinstance(n, Node):
        return False
    val = n.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _bn_output(conv: Node) -> tuple[list[Node], Node] | None:
    """(batch_norm nodes, node carrying the bn output) after ``conv``, if any."""
    bn = _single_user(conv)
    if bn is None or not is_op(bn, "batch_norm"):
        return None
    users = list(bn.users)
    if users and all(u.target is operator.getitem for u in users):
        outs = [u for u in users if u.args[1] == 0]
        if len(outs) != 1:
            return None
        return [bn, outs[0]], outs[0]
    return [bn], bn


def _mark(node: Node, input_map: dict, output_spec, pattern: tuple[str, ...]) -> None:
    node.meta[ANNOTATION_KEY] = QuantizationAnnotation(
        input_qspec_map=input_map, output_qspec=output_spec, pattern=pattern, _annotated=True)


def annotate_conv_add(node: Node, config: QuantizationConfig, quantizer: PatternQuantizer) -> bool:
    """conv2d (-> batch_norm) -> add(other) (-> relu) as one pattern; else the default rule.

    The conv's (or bn's) output feeds the add unquantized; ``other`` gets the
    input-activation spec on the add's edge; the add's (or relu's) output gets
    the output spec.
    """
    if (config.is_dynamic or config.weight is None or config.input_activation is None
            or config.output_activation is None or len(node.args) < 2 or not isinstance(node.args[1], Node)):
        return annotate_weighted(node, config, quantizer)
    names: list[str] = ["conv2d"]
    inner: list[Node] = []
    last = node
    bn = _bn_output(node)
    if bn is not None:
        inner += bn[0]
        last = bn[1]
        names.append("batch_norm")
    add = _single_user(last)
    if (add is None or not is_op(add, "add") or _annotated(add) or add.kwargs.get("alpha", 1) != 1
            or len(add.args) < 2):
        return annotate_weighted(node, config, quantizer)
    a, b = add.args[0], add.args[1]
    if not (_is_float_tensor(a) and _is_float_tensor(b)) or a is b:
        return annotate_weighted(node, config, quantizer)
    other = b if a is last else a
    if quantizer.config_for(add) is None:  # the add is kept in float by the user's config
        return annotate_weighted(node, config, quantizer)
    names.append("add")
    tail = add
    relu = _single_user(add)
    if relu is not None and is_op(relu, "relu") and not _annotated(relu):
        names.append("relu")
        tail = relu
    pattern = tuple(names)

    act, weight = node.args[0], node.args[1]
    input_map: dict = {weight: config.weight}
    input_map[act] = config.input_activation
    if len(node.args) > 2 and isinstance(node.args[2], Node) and config.bias is not None:
        input_map[node.args[2]] = config.bias
    _mark(node, input_map, None, pattern)
    for n in inner:
        _mark(n, {}, None, pattern)
    _mark(add, {other: config.input_activation}, config.output_activation if tail is add else None, pattern)
    if tail is not add:
        _mark(tail, {}, config.output_activation, pattern)
    return True


def _fixed_specs() -> dict[str, FixedQParamsQuantizationSpec]:
    return {op: FixedQParamsQuantizationSpec(dtype=torch.uint8, scale=s, zero_point=z, quant_min=0, quant_max=255,
                                             qscheme=torch.per_tensor_affine)
            for op, (s, z) in FIXED_QPARAMS.items()}


class X86OneDNNQuantizer(PatternQuantizer):
    """Quantizer of the ``x86_onednn`` backend (aliases ``x86``, ``onednn``).

    :param is_per_channel: per-channel int8 weights (default) or per tensor.
    :param is_dynamic: dynamic linear: activations quantized per call, per tensor.
    :param is_qat: fake-quant modules for quantization-aware training.
    :param reduce_range: uint8 activations over 0..127 (torch's ``x86`` qconfig
        default, for fbgemm-compatible numerics); default False: the full 0..255.
    :param act_observer: ``"histogram"`` (default), ``"minmax"`` or ``"moving_average"``.
    :param is_weight_only: weight-only linears (fp32 activations; other layers stay float).
    :param weight_only_dtype: with ``is_weight_only``: ``"int8"`` (per channel, default) or
        ``"int4"`` (group-wise; linears whose K is not a multiple of ``group_size`` stay float).
    :param group_size: with int4 weight-only: 32, 64 or 128.
    :raises ValueError: for options the backend cannot run (``per_row``,
        ``weight_symmetric=False``, ``is_dynamic`` with ``is_qat``).
    """

    backend_name = BACKEND_NAME
    rules = {**DEFAULT_RULES, "conv2d": annotate_conv_add, "linear": _annotate_linear}
    fixed_qparams = _fixed_specs()

    def __init__(self, *, is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False,
                 reduce_range: bool = False, act_observer: str = "histogram", per_row: bool = False,
                 weight_symmetric: bool = True, is_weight_only: bool = False, weight_only_dtype: str = "int8",
                 group_size: int = 32) -> None:
        if is_weight_only:
            for name, v in (("is_dynamic", is_dynamic), ("is_qat", is_qat), ("per_row", per_row),
                            ("reduce_range", reduce_range)):
                if v:
                    raise ValueError(f"{name}=True cannot be combined with is_weight_only=True in x86_onednn: "
                                     f"the weight-only linear takes fp32 activations")
            if not weight_symmetric:
                raise ValueError("weight_symmetric=False is not supported by x86_onednn: its weight-only "
                                 "kernels take symmetric weights (zero point 0)")
            config = get_weight_only_quantization_config(weight_only_dtype, group_size, is_per_channel)
        else:
            config = get_default_x86_onednn_quantization_config(
                is_per_channel, is_dynamic, is_qat, reduce_range=reduce_range, act_observer=act_observer,
                per_row=per_row, weight_symmetric=weight_symmetric)
        super().__init__(config, get_x86_onednn_backend_config())
        self.is_per_channel, self.is_dynamic, self.is_qat = is_per_channel, is_dynamic, is_qat
        self.reduce_range, self.is_weight_only = reduce_range, is_weight_only

    def __repr__(self) -> str:
        return (f"X86OneDNNQuantizer(is_per_channel={self.is_per_channel}, is_dynamic={self.is_dynamic}, "
                f"is_qat={self.is_qat}, reduce_range={self.reduce_range}, is_weight_only={self.is_weight_only})")
