"""The qnnpack ``BackendConfig``: which patterns QNNPACK runs, with which numerics.

Faithful to QNNPACK (and to torch's ``get_qnnpack_backend_config``):

* activations ``torch.uint8`` in [0, 255], asymmetric, per tensor, with a
  **minimum scale of 2**-12** (``scale_min_lower_bound``): QNNPACK rejects
  smaller activation scales, so observers must be built with
  ``eps=2**-12`` (:func:`quantplug_qnnpack.get_symmetric_quantization_config`
  does);
* weights ``torch.int8`` in [-128, 127] on the torch side (the kernels add
  128 and run QNNPACK's uint8 weights with a kernel zero point), per tensor
  or per channel, symmetric or asymmetric (QNNPACK takes a zero point per
  output channel), same 2**-12 scale floor;
* int32 bias;
* fixed output qparams: sigmoid and hardsigmoid (scale 1/256, zero point 0),
  tanh (scale 2/256, zero point 128) — QNNPACK's lookup-table operators
  require exactly these (``scale_exact_match`` / ``zero_point_exact_match``);
* dynamic linear: uint8 per-tensor activations (no per-row mode).

``kernel`` names what runs the pattern after lowering: ``qnnpack.<op>`` for
the plugin's C kernels, ``None`` where the pattern stays in the reference
representation (quantize / float op / dequantize).
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
    "ACT_SCALE_MIN",
    "FIXED_QPARAMS",
    "qnnpack_act_constraints",
    "qnnpack_weight_constraints",
    "get_qnnpack_backend_config",
]

BACKEND_NAME = "qnnpack"
#: QNNPACK's smallest activation (and weight) scale.
ACT_SCALE_MIN = 2.0**-12

#: op -> (scale, zero_point) QNNPACK's fixed-qparams operators produce (uint8).
FIXED_QPARAMS: dict[str, tuple[float, int]] = {
    "sigmoid": (1.0 / 256.0, 0),
    "hardsigmoid": (1.0 / 256.0, 0),
    "tanh": (2.0 / 256.0, 128),
}


def qnnpack_act_constraints() -> DTypeWithConstraints:
    """uint8 activations, full range, scale >= 2**-12."""
    return DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
                                scale_min_lower_bound=ACT_SCALE_MIN)


def qnnpack_weight_constraints() -> DTypeWithConstraints:
    """int8 weights (torch side), full range, per tensor or per channel, scale >= 2**-12."""
    return DTypeWithConstraints(torch.int8, quant_min_lower_bound=-128, quant_max_upper_bound=127,
                                scale_min_lower_bound=ACT_SCALE_MIN, per_channel=None)


def _fixed_output(op: str) -> DTypeWithConstraints:
    scale, zp = FIXED_QPARAMS[op]
    return DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=255,
                                scale_exact_match=scale, zero_point_exact_match=zp)


def get_qnnpack_backend_config() -> BackendConfig:
    """Every pattern the qnnpack backend supports, with QNNPACK's dtype constraints."""
    act = qnnpack_act_constraints()
    weight = qnnpack_weight_constraints()
    static = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=weight, bias_dtype=torch.int32)
    dynamic = DTypeConfig(input_dtype=DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0,
                                                           quant_max_upper_bound=255),
                          weight_dtype=weight, is_dynamic=True)
    act_only = DTypeConfig(input_dtype=act, output_dtype=act)

    configs: list[BackendPatternConfig] = []
    # Fully connected: QNNPACK's q8 GEMM with the fused clamp (relu / relu6 via output_min/max).
    for tail in ((), ("relu",), ("hardtanh",)):
        configs.append(BackendPatternConfig(("linear", *tail), dtype_configs=[static, dynamic],
                                            kernel="qnnpack.linear" if tail != ("hardtanh",) else None))
    # Convolutions (batch norm folded before lowering): conv2d runs QNNPACK-style NHWC
    # kernels (depthwise microkernels, or im2col + the q8 GEMM); conv1d stays reference.
    for conv in ("conv1d", "conv2d"):
        kernel = "qnnpack.conv2d" if conv == "conv2d" else None
        tails: list[tuple[str, ...]] = [(), ("relu",), ("batch_norm",), ("batch_norm", "relu")]
        for tail in tails:
            configs.append(BackendPatternConfig((conv, *tail), dtype_configs=[static], kernel=kernel))
        for tail in ((("hardtanh",), ("batch_norm", "hardtanh")) if conv == "conv2d" else (("hardtanh",),)):
            configs.append(BackendPatternConfig((conv, *tail), dtype_configs=[static], kernel=None))
    # Elementwise: QNNPACK's q8add, and a uint8 multiply (QNNPACK has none; the plugin's keeps
    # a model's mul in uint8 rather than falling back to float).
    configs += [
        BackendPatternConfig(("add",), dtype_configs=[act_only], kernel="qnnpack.add"),
        BackendPatternConfig(("add", "relu"), dtype_configs=[act_only], kernel="qnnpack.add"),
        BackendPatternConfig(("mul",), dtype_configs=[act_only], kernel="qnnpack.mul"),
    ]
    # Value-preserving ops: the output shares the input's qparams. Max pooling and global
    # average pooling run quantplug's shared NHWC C kernels; the layout ops run on the integers.
    pool_kernels = {"max_pool2d": "qnnpack.max_pool2d", "adaptive_avg_pool2d": "qnnpack.global_avg_pool"}
    for op in ("cat", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "permute"):
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT,
                                            [act_only], kernel=pool_kernels.get(op)))
    # Lookup-table operators with fixed output qparams (QNNPACK's x8lut; lowered by the
    # plugin's own pass to quantplug_qnnpack::lookup).
    for op in FIXED_QPARAMS:
        configs.append(BackendPatternConfig(
            (op,), ObservationType.OUTPUT_FIXED_QPARAMS,
            [DTypeConfig(input_dtype=act, output_dtype=_fixed_output(op))], kernel="qnnpack.lookup"))
    return BackendConfig(BACKEND_NAME, configs)
