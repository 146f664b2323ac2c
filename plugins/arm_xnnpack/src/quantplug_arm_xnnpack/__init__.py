"""quantplug backend plugin with XNNPACK numerics (distribution ``quantplug-arm-xnnpack``).

Backend ``xnnpack`` (alias ``arm_xnnpack``): int8 asymmetric activations,
symmetric narrow-range int8 weights per channel (XNNPACK qs8 / qc8w), dynamic
linear with per-tensor or per-row activations (qd8), int4 group-wise (qb4w)
and int8 per-channel (f32_qc8w) weight-only linear. Kernels: scalar, AVX2,
AVX-512, AVX-512 VNNI on x86-64; NEON and NEON dot product on AArch64, chosen
at run time.
"""

from ._version import __version__
from .backend_config import get_arm_xnnpack_backend_config, get_xnnpack_backend_config
from . import lowering as _lowering  # registers the quantplug_arm_xnnpack:: ops (needed to load lowered models)
from .kernels import PackedConv2dWeight, PackedInt4LinearWeight, PackedLinearWeight, XNNPACKKernels, load_kernels
from .quantizer import (
    ArmXnnpackQuantizer,
    XNNPACKQuantizer,
    get_int4_weight_only_quantization_config,
    get_int8_weight_only_quantization_config,
    get_symmetric_quantization_config,
)

#: quantplug's ``<Pkg>Kernels`` naming.
ArmXnnpackKernels = XNNPACKKernels

__all__ = [
    "__version__",
    "XNNPACKQuantizer",
    "ArmXnnpackQuantizer",
    "get_symmetric_quantization_config",
    "get_int4_weight_only_quantization_config",
    "get_int8_weight_only_quantization_config",
    "get_arm_xnnpack_backend_config",
    "get_xnnpack_backend_config",
    "XNNPACKKernels",
    "ArmXnnpackKernels",
    "PackedLinearWeight",
    "PackedConv2dWeight",
    "PackedInt4LinearWeight",
    "load_kernels",
]
