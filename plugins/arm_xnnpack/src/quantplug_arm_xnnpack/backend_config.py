"""The xnnpack ``BackendConfig``: which op patterns XNNPACK's int8 operators run, with their constraints.

Numerics follow XNNPACK (the ``qs8`` / ``qc8w`` operators ExecuTorch's XNNPACK
delegate lowers to) and the constraints torch's own executorch/qnnpack
backend configs declare for it:

* activations: ``torch.int8``, range within [-128, 127], asymmetric (any zero
  point), scale at least ``2**-12`` (the quantizer's observers use
  ``eps=2**-12``);
* weights: ``torch.int8`` symmetric (zero point 0), narrow range
  [-127, 127], scale at least ``2**-12``, per output channel or per tensor;
* bias: fp32 in the graph, quantized by the kernel to int32 with scale
  ``x_scale * w_scale``;
* dynamic linear (``qd8``): int8 asymmetric activations quantized per call
  (per tensor or per row), fp32 output;
* int4 weight-only linear (``qb4w``): symmetric int4 weights in [-8, 7],
  group-wise scales with group size 32, 64 or 128, fp32 activations;
* fixed output qparams where XNNPACK's operators require them: sigmoid
  ``scale=1/256, zero_point=-128``; tanh ``scale=1/128, zero_point=0``;
* outputs that share their input's qparams: max pooling, concatenation and
  data movement (flatten, reshape, permute), and the average pools as the
  annotator observes them.

Each pattern names the XNNPACK-style microkernel family that runs it
(``kernel``). :data:`IMPLEMENTED_KERNELS` lists those this version of the
plugin implements in C and lowers; the other patterns are validated and run
in quantplug's reference form until their kernels land.
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
from quantplug.specs import INT4

__all__ = [
    "BACKEND_NAME",
    "SCALE_MIN",
    "ACT_RANGE",
    "WEIGHT_RANGE",
    "INT4_RANGE",
    "GROUP_SIZES",
    "SIGMOID_QPARAMS",
    "TANH_QPARAMS",
    "KERNELS",
    "IMPLEMENTED_KERNELS",
    "get_arm_xnnpack_backend_config",
    "get_xnnpack_backend_config",
]

BACKEND_NAME = "xnnpack"
#: Smallest activation / weight scale XNNPACK's qs8 operators accept here.
SCALE_MIN = 2.0**-12
ACT_RANGE = (-128, 127)
#: qc8w weights are narrow range: the NEON mlal microkernel adds two int8 products in int16.
WEIGHT_RANGE = (-127, 127)
INT4_RANGE = (-8, 7)
GROUP_SIZES = (32, 64, 128)
#: (scale, zero_point) XNNPACK requires for the int8 outputs of sigmoid and tanh.
SIGMOID_QPARAMS = (1.0 / 256.0, -128)
TANH_QPARAMS = (1.0 / 128.0, 0)

#: kernel family per op (XNNPACK naming: datatypes, operation, clamp).
KERNELS = {
    "linear": "xnnpack.qs8_qc8w_gemm_minmax",
    "linear_dynamic": "xnnpack.qd8_f32_qc8w_gemm",
    "linear_int4": "xnnpack.f32_qb4w_gemm",
    "linear_weight_only": "xnnpack.f32_qc8w_gemm",
    "conv": "xnnpack.qs8_qc8w_igemm_minmax",
    "add": "xnnpack.qs8_vadd_minmax",
    "mul": "xnnpack.qs8_vmul_minmax",
    "cat": "xnnpack.x8_copy",
    "max_pool2d": "xnnpack.s8_maxpool_minmax",
    "avg_pool2d": "xnnpack.qs8_avgpool_minmax",
    "adaptive_avg_pool2d": "xnnpack.qs8_gavgpool_minmax",
    "flatten": "xnnpack.copy (reshape: no data movement)",
    "reshape": "xnnpack.copy (reshape: no data movement)",
    "permute": "xnnpack.x8_transpose",
    "sigmoid": "xnnpack.x8_lut (sigmoid table)",
    "tanh": "xnnpack.x8_lut (tanh table)",
}

#: Kernel families implemented in C by this version (``XNNPACKKernels`` methods). Graph
#: lowering reaches linear, dynamic linear, conv2d and add (core) and int4 linear (this
#: plugin); int8 weight-only linear (f32_qc8w) runs in the eager flow (``Int8WeightOnlyConfig``).
IMPLEMENTED_KERNELS = ("xnnpack.qs8_qc8w_gemm_minmax", "xnnpack.qd8_f32_qc8w_gemm", "xnnpack.f32_qb4w_gemm",
                       "xnnpack.f32_qc8w_gemm", "xnnpack.qs8_qc8w_igemm_minmax", "xnnpack.qs8_vadd_minmax")


def _act(**extra) -> DTypeWithConstraints:
    lo, hi = ACT_RANGE
    return DTypeWithConstraints(torch.int8, quant_min_lower_bound=lo, quant_max_upper_bound=hi, **extra)


def get_arm_xnnpack_backend_config() -> BackendConfig:
    """The table of patterns XNNPACK's int8 operators run, with their dtype constraints."""
    act = _act(scale_min_lower_bound=SCALE_MIN)
    dyn_act = _act()  # qparams computed per call: no observer, no scale bound to check
    weight = DTypeWithConstraints(torch.int8, quant_min_lower_bound=WEIGHT_RANGE[0],
                                  quant_max_upper_bound=WEIGHT_RANGE[1], scale_min_lower_bound=SCALE_MIN,
                                  symmetric_only=True)
    weight_int4 = DTypeWithConstraints(INT4, quant_min_lower_bound=INT4_RANGE[0], quant_max_upper_bound=INT4_RANGE[1],
                                       symmetric_only=True, group_sizes=GROUP_SIZES)
    static = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=weight, bias_dtype=torch.float32)
    dynamic = DTypeConfig(input_dtype=dyn_act, output_dtype=None, weight_dtype=weight, bias_dtype=torch.float32,
                          is_dynamic=True)
    weight_only = DTypeConfig(input_dtype=None, output_dtype=None, weight_dtype=weight_int4, bias_dtype=torch.float32)
    weight_only_int8 = DTypeConfig(input_dtype=None, output_dtype=None, weight_dtype=weight, bias_dtype=torch.float32)
    plain = DTypeConfig(input_dtype=act, output_dtype=act)

    configs: list[BackendPatternConfig] = []
    # Fully connected: static qs8, dynamic qd8, int4 (qb4w) and int8 (qc8w) weight-only; relu / relu6
    # (hardtanh) fuse as the output clamp.
    linear_kernels = ("linear", "linear_dynamic", "linear_int4", "linear_weight_only")
    configs.append(BackendPatternConfig(("linear",), dtype_configs=[static, dynamic, weight_only, weight_only_int8],
                                        kernel=" | ".join(KERNELS[k] for k in linear_kernels)))
    for tail in (("relu",), ("hardtanh",)):
        configs.append(BackendPatternConfig(("linear", *tail), dtype_configs=[static], kernel=KERNELS["linear"]))
    # Convolutions (NHWC igemm, depthwise included); batch norm folds into the weights.
    for root in ("conv1d", "conv2d"):
        for mid in ((), ("batch_norm",)):
            if root == "conv1d" and mid:
                continue
            for tail in ((), ("relu",), ("hardtanh",)):
                configs.append(BackendPatternConfig((root, *mid, *tail), dtype_configs=[static], kernel=KERNELS["conv"]))
    for op in ("add", "mul"):
        for tail in ((), ("relu",)):
            configs.append(BackendPatternConfig((op, *tail), dtype_configs=[plain], kernel=KERNELS[op]))
    share = ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT
    for op in ("cat", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "permute"):
        configs.append(BackendPatternConfig((op,), share, [plain], kernel=KERNELS[op]))
    for op, (scale, zp) in (("sigmoid", SIGMOID_QPARAMS), ("tanh", TANH_QPARAMS)):
        fixed_out = _act(scale_exact_match=scale, zero_point_exact_match=zp)
        configs.append(BackendPatternConfig((op,), ObservationType.OUTPUT_FIXED_QPARAMS,
                                            [DTypeConfig(input_dtype=act, output_dtype=fixed_out)], kernel=KERNELS[op]))
    return BackendConfig(BACKEND_NAME, configs)


#: Short name matching the backend name.
get_xnnpack_backend_config = get_arm_xnnpack_backend_config
