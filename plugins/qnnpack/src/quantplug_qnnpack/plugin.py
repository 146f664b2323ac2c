"""Entry point of the ``quantplug-qnnpack`` distribution (group ``quantplug.backends``).

Registers the ``qnnpack`` backend: QNNPACK's numerics (uint8 asymmetric
activations with scale >= 2**-12, uint8 weights with per-channel kernel zero
points, fixed qparams for sigmoid / tanh / hardsigmoid) and the plugin's C
kernels. Loading the compiled kernels here means a missing or stale build
is reported by quantplug (a ``PluginLoadWarning`` naming this distribution
and how to rebuild it) instead of failing later inside a model.
"""

from __future__ import annotations

import quantplug

from ._version import __version__
from .backend_config import BACKEND_NAME, get_qnnpack_backend_config
from .kernels import DISTRIBUTION, load_kernels
from .lowering import lower_qnnpack  # also defines the quantplug_qnnpack:: ops (needed by quantplug.load)
from .quantizer import QNNPACKQuantizer


@quantplug.hookimpl
def quantplug_register_backends(register):
    """Register the ``qnnpack`` backend (no aliases)."""
    register(quantplug.Backend(
        name=BACKEND_NAME,
        aliases=(),
        distribution=DISTRIBUTION,
        version=__version__,
        description="QNNPACK numerics: uint8 asym activations (scale >= 2**-12), uint8 weights + zero points",
        quantizer_factory=QNNPACKQuantizer,
        backend_config=get_qnnpack_backend_config(),
        modes=("static", "dynamic", "qat"),
        kernels=load_kernels(),
        lowering=lower_qnnpack,
        extras={"torch_engine": "qnnpack", "act_scale_min": 2.0**-12},
    ))
