"""quantplug plugin entry point (group ``quantplug.backends``): registers the ``xnnpack`` backend."""

from __future__ import annotations

import quantplug

from ._version import __version__
from .backend_config import IMPLEMENTED_KERNELS, get_arm_xnnpack_backend_config
from .kernels import DISTRIBUTION, load_kernels
from .lowering import lower
from .quantizer import XNNPACKQuantizer


@quantplug.hookimpl
def quantplug_register_backends(register):
    """Register backend ``xnnpack`` (alias ``arm_xnnpack``) with its quantizer, pattern table and kernels."""
    register(quantplug.Backend(
        name="xnnpack",
        aliases=("arm_xnnpack",),
        distribution=DISTRIBUTION,
        version=__version__,
        description=("XNNPACK numerics: int8 asymmetric activations, narrow-range int8 per-channel "
                     "weights (qs8/qc8w), qd8 dynamic linear, int4 group-wise weight-only linear"),
        quantizer_factory=XNNPACKQuantizer,
        backend_config=get_arm_xnnpack_backend_config(),
        modes=("static", "dynamic", "weight_only", "qat"),
        kernels=load_kernels(),
        lowering=lower,
        extras={"implemented_kernels": IMPLEMENTED_KERNELS},
    ))
