"""The ``quantplug.backends`` entry point of quantplug-fbgemm: registers the ``fbgemm`` backend.

Importing this module loads the compiled kernels; a missing or stale build raises an
``ImportError`` naming the distribution to reinstall, which the registry reports as a
``PluginLoadWarning`` while the other backends keep working.
"""

from __future__ import annotations

import quantplug

from ._version import __version__
from .backend_config import BACKEND_NAME, get_fbgemm_backend_config
from .kernels import DISTRIBUTION, load_kernels
from .quantizer import FbgemmQuantizer

KERNELS = load_kernels()


@quantplug.hookimpl
def quantplug_register_backends(register):
    """Register ``fbgemm``: uint8 reduce_range activations, int8 per-channel weights."""
    register(quantplug.Backend(
        name=BACKEND_NAME,
        aliases=(),
        distribution=DISTRIBUTION,
        version=__version__,
        description="FBGEMM numerics: uint8 reduce_range (0..127) activations, int8 symmetric "
                    "per-channel weights; x86 kernels (AVX2 / AVX-512 / AVX-512 VNNI)",
        quantizer_factory=FbgemmQuantizer,
        backend_config=get_fbgemm_backend_config(),
        modes=("static", "dynamic", "qat"),
        kernels=KERNELS,
        extras={"torch_engine": "fbgemm", "gemm_ukernel": KERNELS.gemm_ukernel()},
    ))
