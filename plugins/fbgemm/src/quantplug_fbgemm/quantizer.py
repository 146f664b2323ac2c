"""``FbgemmQuantizer``: the PT2E quantizer with FBGEMM's numerics.

Equivalent of ``torch.ao.quantization.get_default_qconfig("fbgemm")`` for the graph flow:
uint8 activations with reduce_range (0..127, HistogramObserver for PTQ, moving-average
min/max for QAT), int8 symmetric per-channel weights (-128..127), float bias rounded to
int32 by the kernels, per-tensor uint8 dynamic activations for dynamic linear.
"""

from __future__ import annotations

from typing import Any

import torch

from quantplug.annotators import DEFAULT_RULES, PatternQuantizer, make_quantization_config
from quantplug.specs import FixedQParamsQuantizationSpec, QuantizationConfig

from .backend_config import (
    ACT_QUANT_MAX,
    ACT_QUANT_MIN,
    BACKEND_NAME,
    FIXED_QPARAMS,
    SCALE_MIN,
    WEIGHT_QUANT_MAX,
    WEIGHT_QUANT_MIN,
    get_fbgemm_backend_config,
)

__all__ = ["FbgemmQuantizer", "get_fbgemm_quantization_config", "get_symmetric_quantization_config"]

_ACT_OBSERVERS = ("histogram", "minmax", "moving_average")


def _reject(option: str, value: Any, why: str) -> ValueError:
    return ValueError(f"fbgemm quantizer: {option}={value!r} is not supported: {why}")


def get_fbgemm_quantization_config(
    is_per_channel: bool = True,
    is_dynamic: bool = False,
    is_qat: bool = False,
    *,
    act_observer: str | None = None,
    reduce_range: bool = True,
    per_row: bool = False,
    weight_only: bool = False,
) -> QuantizationConfig:
    """The ``QuantizationConfig`` FBGEMM's kernels run.

    :param is_per_channel: per-output-channel weight scales (default) or one per tensor.
    :param is_dynamic: activations quantized per call (linear only), per tensor.
    :param is_qat: fake-quantize for quantization-aware training.
    :param act_observer: ``"histogram"`` (PTQ default), ``"minmax"`` or ``"moving_average"``
        (QAT default).
    :param reduce_range: must stay ``True``: FBGEMM's int16 pair sums need 7-bit activations.
    :param per_row: must stay ``False``: the graph flow's dynamic linear is per tensor on 0..127
        (per-row activations, on 0..255, are the eager flow's: ``quantize_`` with ``per_row=True``).
    :param weight_only: must stay ``False``: FBGEMM has no int8 weight-only linear.
    :raises ValueError: for an option FBGEMM's kernels cannot run, naming it.
    """
    if not reduce_range:
        raise _reject("reduce_range", reduce_range,
                      "FBGEMM's AVX2/AVX-512 kernels add u8*s8 product pairs in int16 (vpmaddubsw), "
                      "so activations are quantized to 0..127; use the x86_onednn backend for full-range uint8")
    if per_row:
        raise _reject("per_row", per_row, "the graph flow's fbgemm dynamic linear quantizes activations per "
                      "tensor (per-row activations: the eager flow, quantplug.quantize_ with per_row=True)")
    if weight_only:
        raise _reject("weight_only", weight_only,
                      "FBGEMM has no int8 weight-only linear (use is_dynamic=True)")
    if act_observer is not None and act_observer not in _ACT_OBSERVERS:
        raise _reject("act_observer", act_observer, f"choose one of {list(_ACT_OBSERVERS)}")
    if act_observer is None:
        act_observer = "moving_average" if is_qat else "histogram"
    return make_quantization_config(
        act_dtype=torch.uint8,
        act_range=(ACT_QUANT_MIN, ACT_QUANT_MAX),
        weight_dtype=torch.int8,
        weight_range=(WEIGHT_QUANT_MIN, WEIGHT_QUANT_MAX),
        act_symmetric=False,
        weight_per_channel=is_per_channel,
        weight_symmetric=True,
        is_dynamic=is_dynamic,
        is_qat=is_qat,
        scale_min=SCALE_MIN,
        act_observer=act_observer,
    )


def get_symmetric_quantization_config(
    is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False, **options: Any
) -> QuantizationConfig:
    """torchao's helper name, kept for porting: symmetric *weights*, FBGEMM's uint8 activations.

    Same as :func:`get_fbgemm_quantization_config`.
    """
    return get_fbgemm_quantization_config(is_per_channel, is_dynamic, is_qat, **options)


class FbgemmQuantizer(PatternQuantizer):
    """PT2E quantizer for the ``fbgemm`` backend.

    Example::

        from quantplug_fbgemm import FbgemmQuantizer
        quantizer = FbgemmQuantizer()                      # static PTQ
        quantizer = FbgemmQuantizer(is_dynamic=True)       # dynamic linear
        quantizer.set_module_name("head", None)            # keep a submodule in float
    """

    backend_name = BACKEND_NAME
    rules = dict(DEFAULT_RULES)
    fixed_qparams = {
        op: FixedQParamsQuantizationSpec(dtype=torch.uint8, scale=scale, zero_point=zp, quant_min=0, quant_max=255,
                                         qscheme=torch.per_tensor_affine)
        for op, (scale, zp) in FIXED_QPARAMS.items()
    }

    def __init__(self, *, is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False,
                 act_observer: str | None = None, reduce_range: bool = True, per_row: bool = False,
                 weight_only: bool = False) -> None:
        config = get_fbgemm_quantization_config(
            is_per_channel, is_dynamic, is_qat, act_observer=act_observer, reduce_range=reduce_range,
            per_row=per_row, weight_only=weight_only)
        super().__init__(config, get_fbgemm_backend_config())
        self.is_per_channel, self.is_dynamic, self.is_qat = is_per_channel, is_dynamic, is_qat

    def __repr__(self) -> str:
        mode = "qat" if self.is_qat else ("dynamic" if self.is_dynamic else "static")
        return (f"FbgemmQuantizer({mode}, act=uint8[{ACT_QUANT_MIN},{ACT_QUANT_MAX}] reduce_range, "
                f"weight=int8[{WEIGHT_QUANT_MIN},{WEIGHT_QUANT_MAX}] sym "
                f"{'per-channel' if self.is_per_channel else 'per-tensor'})")
