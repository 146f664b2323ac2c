"""The fbgemm ``BackendConfig``: which patterns the kernels run, with which numerics.

Faithful to FBGEMM as PyTorch drives it (``torch.ao.quantization.get_default_qconfig("fbgemm")``
and the native backend config):

* activations: ``quint8``, asymmetric, **reduce_range** -> quant range ``0..127``. The AVX2 /
  AVX-512 kernels sum pairs of u8*s8 products in int16 (``vpmaddubsw``), which saturates for
  8-bit activations; 7-bit activations keep every pair sum inside int16 (see
  ``csrc/fbgemm_kernels.h``).
* weights: ``qint8`` ``-128..127``, symmetric, per output channel (per tensor allowed).
* bias: float in the graph, rounded to int32 with scale ``x_scale * w_scale`` by the kernel.
* scales: at least float32 eps (torch's observers' floor; a zero scale would make the
  requantization multiplier infinite).
* dynamic linear: activations quantized per call, per tensor, uint8 ``0..127``; the eager
  flow's per-row mode (``kernels.linear_dynamic(per_row=True)``) uses ``0..255`` per row, which
  no ISA path can saturate (VNNI sums in int32, AVX2 / AVX-512 use their exact split form).
* sigmoid / hardsigmoid / tanh: PyTorch's fixed output qparams for quint8
  (``1/256, 0`` / ``1/256, 0`` / ``2/256, 128``).
"""

from __future__ import annotations

import torch

from quantplug.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    DTypeWithConstraints,
    ObservationType,
)

__all__ = [
    "BACKEND_NAME",
    "ACT_QUANT_MIN",
    "ACT_QUANT_MAX",
    "WEIGHT_QUANT_MIN",
    "WEIGHT_QUANT_MAX",
    "SCALE_MIN",
    "FIXED_QPARAMS",
    "get_fbgemm_backend_config",
]

BACKEND_NAME = "fbgemm"
ACT_QUANT_MIN, ACT_QUANT_MAX = 0, 127  # uint8 with reduce_range
WEIGHT_QUANT_MIN, WEIGHT_QUANT_MAX = -128, 127
SCALE_MIN = torch.finfo(torch.float32).eps

#: op -> (scale, zero_point) of its fixed uint8 output qparams (PyTorch's values for quint8).
FIXED_QPARAMS = {
    "sigmoid": (1.0 / 256.0, 0),
    "hardsigmoid": (1.0 / 256.0, 0),
    "tanh": (2.0 / 256.0, 128),
}

_K = "fbgemm."  # kernel names: methods of quantplug_fbgemm.FbgemmKernels

ACT = DTypeWithConstraints(
    torch.uint8, quant_min_lower_bound=ACT_QUANT_MIN, quant_max_upper_bound=ACT_QUANT_MAX,
    scale_min_lower_bound=SCALE_MIN,
)
#: dynamic activations: qparams are chosen by the kernel, so there is no observer eps to check
DYNAMIC_ACT = DTypeWithConstraints(torch.uint8, quant_min_lower_bound=ACT_QUANT_MIN,
                                   quant_max_upper_bound=ACT_QUANT_MAX)
WEIGHT = DTypeWithConstraints(
    torch.int8, quant_min_lower_bound=WEIGHT_QUANT_MIN, quant_max_upper_bound=WEIGHT_QUANT_MAX,
    scale_min_lower_bound=SCALE_MIN, symmetric_only=True,
)
BIAS = DTypeWithConstraints(torch.int32)

STATIC = DTypeConfig(input_dtype=ACT, output_dtype=ACT, weight_dtype=WEIGHT, bias_dtype=BIAS)
DYNAMIC = DTypeConfig(input_dtype=DYNAMIC_ACT, weight_dtype=WEIGHT, is_dynamic=True)
ACT_ONLY = DTypeConfig(input_dtype=ACT, output_dtype=ACT)

#: (pattern, kernel) for ops with weights
_WEIGHTED = [
    (("linear",), "linear"),
    (("linear", "relu"), "linear"),  # relu fused as the clamp's lower bound
    (("conv1d",), "conv2d"),  # conv1d runs as a 1xW conv2d
    (("conv1d", "relu"), "conv2d"),
    (("conv2d",), "conv2d"),
    (("conv2d", "relu"), "conv2d"),
    (("conv2d", "batch_norm"), "conv2d"),  # batch norm folded into the weights at convert
    (("conv2d", "batch_norm", "relu"), "conv2d"),
]
_BINARY = [
    (("add",), "add"),
    (("add", "relu"), "add"),
    (("mul",), "mul"),
    (("mul", "relu"), "mul"),
]
#: ops whose output keeps the input's qparams
_SHARING = [
    ("cat", None),  # shared qparams: torch.cat on the uint8 tensors, nothing to requantize
    ("max_pool2d", "max_pool2d"),
    ("avg_pool2d", "avg_pool2d"),
    ("adaptive_avg_pool2d", "adaptive_avg_pool2d"),
    ("flatten", None),  # views: no kernel, the uint8 tensor is reshaped
    ("reshape", None),
    ("permute", None),
]


def _fixed(op: str) -> DTypeConfig:
    scale, zp = FIXED_QPARAMS[op]
    out = DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
                               scale_exact_match=scale, zero_point_exact_match=zp)
    return DTypeConfig(input_dtype=ACT, output_dtype=out)


def get_fbgemm_backend_config() -> BackendConfig:
    """The patterns FBGEMM's kernels run and the dtype constraints they need."""
    configs = []
    for pattern, kernel in _WEIGHTED:
        dtype_configs = [STATIC] + ([DYNAMIC] if pattern == ("linear",) else [])
        configs.append(BackendPatternConfig(pattern, dtype_configs=dtype_configs, kernel=_K + kernel))
    for pattern, kernel in _BINARY:
        configs.append(BackendPatternConfig(pattern, dtype_configs=[ACT_ONLY], kernel=_K + kernel))
    for op, kernel in _SHARING:
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT,
                                            [ACT_ONLY], kernel=None if kernel is None else _K + kernel))
    for op in FIXED_QPARAMS:
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_FIXED_QPARAMS, [_fixed(op)],
                                            kernel=None))
    return BackendConfig(BACKEND_NAME, configs)
