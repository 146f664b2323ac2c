"""``get_x86_onednn_backend_config()``: the op patterns the x86/oneDNN kernels run.

Numerics follow oneDNN as used by torch's ``x86`` / ``onednn`` engines and its
X86InductorQuantizer:

* activations: ``torch.uint8``, per-tensor affine, the FULL range 0..255 — VNNI
  (``vpdpbusd``) accumulates u8*s8 products in int32 without the int16
  saturation that forces fbgemm's reduce_range (our AVX2 path widens instead);
  ``reduce_range`` (0..127) is accepted too, being a subset;
* weights: ``torch.int8`` symmetric (zero point 0, oneDNN rejects others), per
  channel or per tensor, range -128..127;
* bias: int32 with ``scale = act_scale * weight_scale`` (the kernels quantize a
  float bias this way; a float, unannotated bias is accepted);
* dynamic linear: activations quantized per call, per tensor, uint8 0..255;
* weight-only linear (fp32 activations): int8 symmetric per-channel weights, or
  int4 symmetric group-wise weights (-8..7, one scale per 32/64/128 inputs);
  the kernels dequantize the weight in registers and compute in fp32;
* fixed-qparams ops (sigmoid, hardsigmoid, tanh): quint8 outputs with torch's
  fixed qparams (1/256, 0) and (2/256, 128), matched exactly;
* x86 special: conv2d (+ batch_norm) + add (+ relu) is one fused kernel (the
  oneDNN "sum" post-op): the conv's output is never quantized, the add's other
  input is a quantized activation.

The kernels need no minimum scale (multipliers are float32), so no
``scale_min_lower_bound`` is declared; the quantizer still uses the observer
``eps=2**-12`` that X86InductorQuantizer uses.
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
from quantplug.configs import INT4_GROUP_SIZES
from quantplug.specs import INT4

__all__ = [
    "BACKEND_NAME",
    "get_x86_onednn_backend_config",
    "ACT",
    "WEIGHT",
    "STATIC_INT8",
    "DYNAMIC_INT8",
    "WEIGHT_ONLY_INT8",
    "WEIGHT_ONLY_INT4",
    "FIXED_QPARAMS",
    "CONV_ADD_PATTERNS",
]

BACKEND_NAME = "x86_onednn"

#: uint8 activations, full range allowed
ACT = DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=255)
#: int8 symmetric weights (per channel or per tensor)
WEIGHT = DTypeWithConstraints(torch.int8, quant_min_lower_bound=-128, quant_max_upper_bound=127,
                              symmetric_only=True)
BIAS = DTypeWithConstraints(torch.int32)

STATIC_INT8 = DTypeConfig(input_dtype=ACT, output_dtype=ACT, weight_dtype=WEIGHT, bias_dtype=BIAS)
DYNAMIC_INT8 = DTypeConfig(input_dtype=ACT, output_dtype=None, weight_dtype=WEIGHT, bias_dtype=None,
                           is_dynamic=True)
ACT_ONLY = DTypeConfig(input_dtype=ACT, output_dtype=ACT)
#: weight-only linear: fp32 in / out, int8 per-channel or int4 group-wise symmetric weights
WEIGHT_INT4 = DTypeWithConstraints(INT4, quant_min_lower_bound=-8, quant_max_upper_bound=7, symmetric_only=True,
                                   group_sizes=INT4_GROUP_SIZES)
WEIGHT_ONLY_INT8 = DTypeConfig(input_dtype=None, output_dtype=None, weight_dtype=WEIGHT, bias_dtype=torch.float32)
WEIGHT_ONLY_INT4 = DTypeConfig(input_dtype=None, output_dtype=None, weight_dtype=WEIGHT_INT4,
                               bias_dtype=torch.float32)

#: torch's fixed qparams for quint8 outputs of these ops
FIXED_QPARAMS = {
    "sigmoid": (1.0 / 256.0, 0),
    "hardsigmoid": (1.0 / 256.0, 0),
    "tanh": (2.0 / 256.0, 128),
}

#: conv (+bn) + add (+relu), fused by the x86 quantizer's extra rule
CONV_ADD_PATTERNS = (
    ("conv2d", "add"),
    ("conv2d", "add", "relu"),
    ("conv2d", "batch_norm", "add"),
    ("conv2d", "batch_norm", "add", "relu"),
)


def _kernel(name: str | None) -> str | None:
    return None if name is None else f"{BACKEND_NAME}.{name}"


def get_x86_onednn_backend_config() -> BackendConfig:
    """The ``BackendConfig`` of the ``x86_onednn`` backend (a new object each call)."""
    configs: list[BackendPatternConfig] = []

    # linear: static and dynamic int8 kernels; relu fused through the clamp range
    # (and the weight-only linear, int8 or int4, on a single linear: a following relu stays float)
    configs.append(BackendPatternConfig(("linear",), dtype_configs=[STATIC_INT8, DYNAMIC_INT8, WEIGHT_ONLY_INT8,
                                                                   WEIGHT_ONLY_INT4],
                                        kernel=" | ".join(_kernel(k) for k in (
                                            "linear", "linear_dynamic", "linear_weight_only",
                                            "linear_int4_weight_only"))))
    for pattern, kernel in [(("linear", "relu"), "linear"), (("linear", "hardtanh"), None)]:
        configs.append(BackendPatternConfig(pattern, dtype_configs=[STATIC_INT8, DYNAMIC_INT8],
                                            kernel=_kernel(kernel)))

    # convolutions (batch_norm is folded into the conv before the kernel runs)
    conv_patterns = []
    for conv in ("conv1d", "conv2d"):
        for mid in ((), ("batch_norm",)):
            for act in ((), ("relu",), ("hardtanh",)):
                conv_patterns.append((conv, *mid, *act))
    for pattern in conv_patterns:
        kernel = "conv2d" if "hardtanh" not in pattern else None  # conv1d runs as a 1xW conv2d
        configs.append(BackendPatternConfig(pattern, dtype_configs=[STATIC_INT8], kernel=_kernel(kernel)))

    # the x86 special: conv + add (+ relu) in one kernel (oneDNN sum post-op)
    for pattern in CONV_ADD_PATTERNS:
        configs.append(BackendPatternConfig(pattern, dtype_configs=[STATIC_INT8],
                                            kernel=_kernel("conv2d_add_relu" if pattern[-1] == "relu" else "conv2d_add")))

    # binary ops: quantized add/mul (reference form: dq -> op -> q)
    for pattern in [("add",), ("add", "relu"), ("mul",), ("mul", "relu")]:
        configs.append(BackendPatternConfig(pattern, dtype_configs=[ACT_ONLY], kernel=None))

    # ops whose output shares the input's qparams
    for op in ("cat", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "permute"):
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT,
                                            [ACT_ONLY], kernel=None))

    # fixed-qparams ops: exact quint8 output qparams
    for op, (scale, zp) in FIXED_QPARAMS.items():
        out = DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
                                   scale_exact_match=scale, zero_point_exact_match=zp)
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_FIXED_QPARAMS,
                                            [DTypeConfig(input_dtype=ACT, output_dtype=out)], kernel=None))
    return BackendConfig(BACKEND_NAME, configs)
