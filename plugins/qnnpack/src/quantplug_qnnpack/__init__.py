"""quantplug backend plugin with QNNPACK numerics (backend name ``qnnpack``).

* activations: uint8, asymmetric, per tensor, scale >= 2**-12;
* weights: QNNPACK's uint8 with a zero point per output channel (torch-side
  int8 weights are converted by adding 128, as torch's qnnpack engine does);
* fixed qparams: sigmoid / hardsigmoid (1/256, 0), tanh (2/256, 128);
* dynamic linear: uint8 per-tensor activations.

Public API::

    QNNPACKQuantizer(is_per_channel=True, is_dynamic=False, is_qat=False, ...)
    get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False, is_qat=False, ...)
    get_qnnpack_backend_config()
    load_kernels() -> QNNPACKKernels   (pack_linear_weight, linear, linear_dynamic, pack_conv2d_weight,
                                        conv2d, add, mul, sigmoid, tanh, hardsigmoid, lut_table, lookup,
                                        max_pool2d, global_avg_pool)

Converted models are lowered to these kernels: the core's generic patterns
(``quantplug::linear`` / ``conv2d`` / ``add`` / ``mul`` / pools) plus the
plugin's own ``quantplug_qnnpack::lookup`` for sigmoid / tanh / hardsigmoid
(:mod:`quantplug_qnnpack.lowering`).
"""

from ._version import __version__
from .backend_config import ACT_SCALE_MIN, FIXED_QPARAMS, get_qnnpack_backend_config
from .quantizer import QNNPACKQuantizer, get_qnnpack_quantization_config, get_symmetric_quantization_config


def load_kernels():
    """The compiled kernel library (:class:`quantplug_qnnpack.kernels.QNNPACKKernels`)."""
    from .kernels import load_kernels as _load

    return _load()


__all__ = [
    "__version__",
    "QNNPACKQuantizer",
    "get_symmetric_quantization_config",
    "get_qnnpack_quantization_config",
    "get_qnnpack_backend_config",
    "load_kernels",
    "ACT_SCALE_MIN",
    "FIXED_QPARAMS",
]
