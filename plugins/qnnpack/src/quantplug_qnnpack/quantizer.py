"""The qnnpack quantizer: QNNPACK's numerics on quantplug's pattern rules.

Quick use::

    from quantplug_qnnpack import QNNPACKQuantizer
    quantizer = QNNPACKQuantizer()                    # static, per-channel int8 weights
    quantizer = QNNPACKQuantizer(is_dynamic=True)     # dynamic linear
    quantizer = QNNPACKQuantizer(is_qat=True)         # QAT (fake quant = the kernels' numerics)

or, as with torchao's XNNPACK quantizer::

    quantizer = QNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))
"""

from __future__ import annotations

from typing import ClassVar

import torch

from quantplug.annotators import DEFAULT_RULES, PatternQuantizer, make_quantization_config
from quantplug.specs import FixedQParamsQuantizationSpec, QuantizationConfig

from .backend_config import ACT_SCALE_MIN, BACKEND_NAME, FIXED_QPARAMS, get_qnnpack_backend_config

__all__ = ["QNNPACKQuantizer", "get_symmetric_quantization_config", "get_qnnpack_quantization_config"]

_ACT_OBSERVERS = ("histogram", "minmax", "moving_average")


def _fixed_spec(op: str) -> FixedQParamsQuantizationSpec:
    scale, zp = FIXED_QPARAMS[op]
    return FixedQParamsQuantizationSpec(dtype=torch.uint8, scale=scale, zero_point=zp, quant_min=0, quant_max=255,
                                        qscheme=torch.per_tensor_affine)


def _refuse(option: str, value, why: str) -> None:
    raise ValueError(f"qnnpack: {option}={value!r} is not supported: {why}")


def get_symmetric_quantization_config(
    is_per_channel: bool = True,
    is_dynamic: bool = False,
    is_qat: bool = False,
    *,
    weight_symmetric: bool = True,
    act_observer: str = "histogram",
    per_row: bool = False,
    reduce_range: bool = False,
    weight_group_size: int | None = None,
    weight_only: bool = False,
) -> QuantizationConfig:
    """A :class:`~quantplug.QuantizationConfig` with QNNPACK's numerics.

    Activations uint8 [0, 255] asymmetric per tensor; weights int8 [-128, 127]
    (converted to QNNPACK's uint8 + zero point at pack time), symmetric by
    default (``weight_symmetric=False`` gives affine weights, which QNNPACK's
    per-channel kernel zero points run too), per channel by default. Every
    observer is built with ``eps=2**-12``, QNNPACK's minimum scale.

    Name and first arguments follow torchao's XNNPACK quantizer helper.

    :raises ValueError: naming an option QNNPACK cannot run (``per_row``,
        ``reduce_range``, ``weight_group_size``, ``weight_only``,
        ``act_observer``).
    """
    if per_row:
        _refuse("per_row", per_row, "QNNPACK quantizes dynamic activations per tensor")
    if reduce_range:
        _refuse("reduce_range", reduce_range,
                "QNNPACK's 16-bit products cannot overflow, so activations use the full uint8 range")
    if weight_group_size is not None:
        _refuse("weight_group_size", weight_group_size, "QNNPACK has no per-group (blockwise) weights")
    if weight_only:
        _refuse("weight_only", weight_only, "QNNPACK has no weight-only kernels (use is_dynamic=True)")
    if act_observer not in _ACT_OBSERVERS:
        _refuse("act_observer", act_observer, f"choose one of {list(_ACT_OBSERVERS)}")
    return make_quantization_config(
        act_dtype=torch.uint8, act_range=(0, 255), act_symmetric=False,
        weight_dtype=torch.int8, weight_range=(-128, 127),
        weight_per_channel=is_per_channel, weight_symmetric=weight_symmetric,
        is_dynamic=is_dynamic, is_qat=is_qat, scale_min=ACT_SCALE_MIN, act_observer=act_observer,
    )


#: Alias with a backend-specific name (same function).
get_qnnpack_quantization_config = get_symmetric_quantization_config


class QNNPACKQuantizer(PatternQuantizer):
    """Quantizer of the ``qnnpack`` backend (QNNPACK numerics, see :mod:`quantplug_qnnpack`).

    Annotates linear / conv (+ batch_norm, relu, hardtanh), add (+ relu),
    mul, cat, pools, flatten / reshape / permute, and sigmoid / tanh /
    hardsigmoid with QNNPACK's fixed output qparams.
    """

    backend_name: ClassVar[str] = BACKEND_NAME
    rules = dict(DEFAULT_RULES)
    fixed_qparams: ClassVar[dict[str, FixedQParamsQuantizationSpec]] = {op: _fixed_spec(op) for op in FIXED_QPARAMS}

    def __init__(self, *, is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False,
                 weight_symmetric: bool = True, act_observer: str = "histogram", per_row: bool = False,
                 reduce_range: bool = False, weight_group_size: int | None = None,
                 weight_only: bool = False) -> None:
        config = get_symmetric_quantization_config(
            is_per_channel, is_dynamic, is_qat, weight_symmetric=weight_symmetric, act_observer=act_observer,
            per_row=per_row, reduce_range=reduce_range, weight_group_size=weight_group_size,
            weight_only=weight_only)
        super().__init__(config, get_qnnpack_backend_config())
        self.is_per_channel, self.is_dynamic, self.is_qat = is_per_channel, is_dynamic, is_qat

    def __repr__(self) -> str:
        return (f"QNNPACKQuantizer(is_per_channel={self.is_per_channel}, is_dynamic={self.is_dynamic}, "
                f"is_qat={self.is_qat})")
