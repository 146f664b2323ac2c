"""quantplug-fbgemm: the ``fbgemm`` backend of quantplug (FBGEMM numerics, x86 int8 kernels).

Public API::

    FbgemmQuantizer                       PT2E quantizer (static / dynamic / QAT)
    get_fbgemm_quantization_config(...)   its QuantizationConfig
    get_symmetric_quantization_config(..) same, under torchao's helper name
    get_fbgemm_backend_config()           the BackendConfig (patterns + constraints)
    FbgemmKernels, PackedLinearWeight     the compiled kernels' Python API
    load_kernels()                        the process-wide FbgemmKernels instance

The compiled kernels are loaded lazily (on first use of ``load_kernels`` or the entry point),
so importing the quantizer works even where the extension failed to build.
"""

from ._version import __version__
from .backend_config import get_fbgemm_backend_config
from .quantizer import FbgemmQuantizer, get_fbgemm_quantization_config, get_symmetric_quantization_config

__all__ = [
    "__version__",
    "FbgemmQuantizer",
    "get_fbgemm_quantization_config",
    "get_symmetric_quantization_config",
    "get_fbgemm_backend_config",
    "FbgemmKernels",
    "PackedLinearWeight",
    "load_kernels",
]


def __getattr__(name):  # lazy: the kernel module is compiled C
    if name in ("FbgemmKernels", "PackedLinearWeight", "load_kernels"):
        from . import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'quantplug_fbgemm' has no attribute {name!r}")
