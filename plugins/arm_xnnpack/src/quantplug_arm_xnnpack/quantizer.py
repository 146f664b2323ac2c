"""``XNNPACKQuantizer`` and ``get_symmetric_quantization_config``: the API users know from torch's XNNPACK quantizer.

Typical use (the PT2E flow)::

    from quantplug_arm_xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    # dynamic linear:  XNNPACKQuantizer(is_dynamic=True)
    # int4 weight-only linear: XNNPACKQuantizer(is_weight_only=True, group_size=32)
    # int8 weight-only linear: XNNPACKQuantizer(is_weight_only=True, weight_only_dtype="int8")

Numerics are XNNPACK's: int8 asymmetric activations, int8 symmetric weights
in the narrow range [-127, 127], observers with ``eps=2**-12``. Options the
kernels cannot run raise ``ValueError`` naming the option.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from quantplug.annotators import DEFAULT_RULES, PatternQuantizer, make_quantization_config
from quantplug.ops import op_name
from quantplug.specs import INT4, FixedQParamsQuantizationSpec, QuantizationConfig

from .backend_config import (
    ACT_RANGE,
    BACKEND_NAME,
    GROUP_SIZES,
    INT4_RANGE,
    SCALE_MIN,
    SIGMOID_QPARAMS,
    TANH_QPARAMS,
    WEIGHT_RANGE,
    get_arm_xnnpack_backend_config,
)

__all__ = [
    "XNNPACKQuantizer",
    "ArmXnnpackQuantizer",
    "get_symmetric_quantization_config",
    "get_int4_weight_only_quantization_config",
    "get_int8_weight_only_quantization_config",
]

_ACT_OBSERVERS = ("histogram", "minmax", "moving_average")


def _check_range(name_lo: str, lo: int, name_hi: str, hi: int, bounds: tuple[int, int], what: str) -> None:
    for name, v in ((name_lo, lo), (name_hi, hi)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if lo < bounds[0]:
        raise ValueError(f"{name_lo}={lo}: XNNPACK {what} must be >= {bounds[0]}"
                         + (" (qc8w weights are narrow range [-127, 127])" if bounds == WEIGHT_RANGE else ""))
    if hi > bounds[1]:
        raise ValueError(f"{name_hi}={hi}: XNNPACK {what} must be <= {bounds[1]}")
    if lo >= hi:
        raise ValueError(f"{name_lo}={lo} must be below {name_hi}={hi}")


def get_symmetric_quantization_config(
    is_per_channel: bool = True,
    is_dynamic: bool = False,
    is_qat: bool = False,
    *,
    act_qmin: int = -128,
    act_qmax: int = 127,
    weight_qmin: int = -127,
    weight_qmax: int = 127,
    per_row: bool = False,
    act_observer: str = "histogram",
) -> QuantizationConfig:
    """The XNNPACK int8 config: asymmetric int8 activations, symmetric narrow-range int8 weights.

    :param is_per_channel: one weight scale per output channel (else per tensor).
    :param is_dynamic: activations quantized per call (linear only), fp32 output.
    :param is_qat: fake-quantize for quantization-aware training.
    :param act_qmin, act_qmax: activation range, within [-128, 127].
    :param weight_qmin, weight_qmax: weight range, within [-127, 127] (symmetric).
    :param per_row: with ``is_dynamic``: one activation scale per row (XNNPACK's
        ``qd8``) instead of one per tensor.
    :param act_observer: static PTQ observer: ``"histogram"`` (default, as
        torch's XNNPACK quantizer), ``"minmax"`` or ``"moving_average"``.

    The positional order of the first three parameters is quantplug's
    (``is_per_channel, is_dynamic, is_qat``); pass them by keyword when
    porting code written for torch's version, whose order is
    ``is_per_channel, is_qat, is_dynamic``.
    """
    for name, v in (("is_per_channel", is_per_channel), ("is_dynamic", is_dynamic), ("is_qat", is_qat),
                    ("per_row", per_row)):
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be a bool, got {v!r}")
    _check_range("act_qmin", act_qmin, "act_qmax", act_qmax, ACT_RANGE, "activations (int8)")
    _check_range("weight_qmin", weight_qmin, "weight_qmax", weight_qmax, WEIGHT_RANGE, "weights (qc8w int8)")
    if per_row and not is_dynamic:
        raise ValueError("per_row=True needs is_dynamic=True: only dynamic (qd8) activations are quantized per row")
    if act_observer not in _ACT_OBSERVERS:
        raise ValueError(f"act_observer={act_observer!r}; use one of {list(_ACT_OBSERVERS)}")
    return make_quantization_config(
        act_dtype=torch.int8, weight_dtype=torch.int8,
        act_range=(act_qmin, act_qmax), weight_range=(weight_qmin, weight_qmax),
        act_symmetric=False, weight_per_channel=is_per_channel, weight_symmetric=True,
        is_dynamic=is_dynamic, per_row=per_row, is_qat=is_qat,
        scale_min=SCALE_MIN, act_observer=act_observer,
    )


def get_int4_weight_only_quantization_config(group_size: int = 32) -> QuantizationConfig:
    """int4 weight-only linear (XNNPACK ``qb4w``): symmetric int4 weights in [-8, 7], one scale per group.

    :param group_size: input features per scale: 32, 64 or 128.
    """
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise ValueError(f"group_size={group_size!r}: XNNPACK's int4 kernels support {list(GROUP_SIZES)}")
    return make_quantization_config(
        act_dtype=torch.int8, weight_dtype=INT4, weight_range=INT4_RANGE, weight_symmetric=True,
        weight_group_size=group_size, weight_only=True,
    )


def get_int8_weight_only_quantization_config(is_per_channel: bool = True) -> QuantizationConfig:
    """int8 weight-only linear (XNNPACK ``f32_qc8w``): fp32 activations, symmetric int8 weights in [-127, 127].

    :param is_per_channel: one weight scale per output channel (default) or one per tensor.
    """
    if not isinstance(is_per_channel, bool):
        raise ValueError(f"is_per_channel must be a bool, got {is_per_channel!r}")
    return make_quantization_config(
        act_dtype=torch.int8, weight_dtype=torch.int8, weight_range=WEIGHT_RANGE, weight_symmetric=True,
        weight_per_channel=is_per_channel, weight_only=True, scale_min=SCALE_MIN,
    )


def _annotate_weighted(node: Node, config: QuantizationConfig, quantizer: PatternQuantizer) -> bool:
    """The core's linear/conv rule, except for int4 group-wise weights: only linears whose input
    features are a multiple of the group size (XNNPACK qb4w); other layers stay float."""
    group_size = config.weight.group_size if config.weight is not None else None
    if group_size is not None:
        weight = node.args[1] if len(node.args) > 1 else None
        val = weight.meta.get("val") if isinstance(weight, Node) else None
        if op_name(node) != "linear" or val is None or val.dim() != 2 or val.shape[1] % group_size:
            return False
    return DEFAULT_RULES[op_name(node)](node, config, quantizer)


class XNNPACKQuantizer(PatternQuantizer):
    """Annotates exported graphs for XNNPACK's int8 kernels (backend ``xnnpack``, alias ``arm_xnnpack``).

    The default config comes from the constructor options; ``set_global``,
    ``set_operator_type``, ``set_module_type`` and ``set_module_name`` work
    as in torch's quantizers (most specific wins; ``None`` keeps float).

    :param is_per_channel: per-output-channel weight scales (default) or per tensor.
    :param is_dynamic: dynamic linear (activations quantized per call).
    :param is_qat: quantization-aware training (fake quantization).
    :param per_row: with ``is_dynamic``: per-row activation scales (qd8).
    :param is_weight_only: weight-only linear, fp32 activations (other layers stay float).
    :param weight_only_dtype: with ``is_weight_only``: ``"int4"`` (group-wise, XNNPACK qb4w;
        linears whose input features are not a multiple of ``group_size`` stay float) or
        ``"int8"`` (per channel, XNNPACK f32_qc8w; every linear).
    :param group_size: with int4 weight-only: 32, 64 or 128.
    """

    backend_name = BACKEND_NAME
    # XNNPACK has no int8 hardsigmoid operator: it stays in float.
    rules = {**{op: rule for op, rule in DEFAULT_RULES.items() if op != "hardsigmoid"},
             "linear": _annotate_weighted, "conv1d": _annotate_weighted, "conv2d": _annotate_weighted}
    fixed_qparams = {
        "sigmoid": FixedQParamsQuantizationSpec(torch.int8, SIGMOID_QPARAMS[0], SIGMOID_QPARAMS[1], *ACT_RANGE,
                                                qscheme=torch.per_tensor_affine),
        "tanh": FixedQParamsQuantizationSpec(torch.int8, TANH_QPARAMS[0], TANH_QPARAMS[1], *ACT_RANGE,
                                             qscheme=torch.per_tensor_affine),
    }

    def __init__(self, *, is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False,
                 per_row: bool = False, is_weight_only: bool = False, weight_only_dtype: str = "int4",
                 group_size: int = 32) -> None:
        if weight_only_dtype not in ("int4", "int8"):
            raise ValueError(f"weight_only_dtype={weight_only_dtype!r}; use 'int4' (qb4w) or 'int8' (f32_qc8w)")
        if is_weight_only:
            for name, v in (("is_dynamic", is_dynamic), ("is_qat", is_qat), ("per_row", per_row)):
                if v:
                    raise ValueError(f"{name}=True cannot be combined with is_weight_only=True: XNNPACK's "
                                     f"weight-only kernels take fp32 activations and have no QAT flow here")
            config = (get_int4_weight_only_quantization_config(group_size) if weight_only_dtype == "int4"
                      else get_int8_weight_only_quantization_config(is_per_channel))
        else:
            config = get_symmetric_quantization_config(is_per_channel, is_dynamic, is_qat, per_row=per_row)
        super().__init__(config, get_arm_xnnpack_backend_config())
        self.is_dynamic, self.is_qat, self.is_weight_only = is_dynamic, is_qat, is_weight_only


#: The name following quantplug's ``<Pkg>Quantizer`` convention.
ArmXnnpackQuantizer = XNNPACKQuantizer
