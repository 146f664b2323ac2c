"""quantplug backend plugin with oneDNN / torch ``x86`` numerics.

Backend ``x86_onednn`` (aliases ``x86``, ``onednn``): uint8 activations over
the full 0..255 range, int8 symmetric per-channel weights, int32 bias, and the
x86 conv + add (+ relu) fusion. Kernels: scalar reference, AVX2, AVX-512,
AVX-512 VNNI and AVX-VNNI, chosen at run time.

Usage::

    import quantplug
    quantizer = quantplug.get_quantizer("x86")            # or X86OneDNNQuantizer()
    prepared = quantplug.prepare_pt2e(model, quantizer, (x,))
"""

from ._version import __version__
from .backend_config import get_x86_onednn_backend_config
from .quantizer import (
    X86OneDNNQuantizer,
    annotate_conv_add,
    get_default_x86_onednn_quantization_config,
    get_symmetric_quantization_config,
    get_weight_only_quantization_config,
)

__all__ = [
    "__version__",
    "X86OneDNNQuantizer",
    "get_x86_onednn_backend_config",
    "get_default_x86_onednn_quantization_config",
    "get_symmetric_quantization_config",
    "get_weight_only_quantization_config",
    "annotate_conv_add",
    "load_kernels",
    "PackedLinearWeight",
    "PackedConv2dWeight",
    "X86OneDNNKernels",
]


def __getattr__(name):  # kernels load lazily: importing the package must not need the .so
    if name in ("load_kernels", "PackedLinearWeight", "PackedConv2dWeight", "X86OneDNNKernels"):
        from . import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'quantplug_x86_onednn' has no attribute {name!r}")
