"""Entry point of ``quantplug-x86-onednn``: registers the ``x86_onednn`` backend.

Found through the ``quantplug.backends`` entry-point group. Importing this
module loads the compiled kernels; a missing or stale build raises an
ImportError that tells how to rebuild (the registry reports it as a
``PluginLoadWarning`` naming this distribution, and other backends still load).
"""

from __future__ import annotations

import quantplug

from ._version import __version__
from .backend_config import BACKEND_NAME, get_x86_onednn_backend_config
from .kernels import DISTRIBUTION, load_kernels
from .lowering import lower_x86_onednn  # also defines the quantplug_x86_onednn:: ops (needed by load)
from .quantizer import X86OneDNNQuantizer

__all__ = ["quantplug_register_backends", "ALIASES"]

ALIASES = ("x86", "onednn")

_KERNELS = load_kernels()  # fail at import, with a clear message, if the build is missing or stale


@quantplug.hookimpl
def quantplug_register_backends(register):
    """Register the ``x86_onednn`` backend (aliases ``x86`` and ``onednn``)."""
    register(quantplug.Backend(
        name=BACKEND_NAME,
        aliases=ALIASES,
        distribution=DISTRIBUTION,
        version=__version__,
        description="oneDNN/x86 numerics: uint8 0..255 activations, int8 symmetric per-channel weights, "
                    "VNNI kernels, conv+add fusion, int8/int4 weight-only linear",
        quantizer_factory=X86OneDNNQuantizer,
        backend_config=get_x86_onednn_backend_config(),
        modes=("static", "dynamic", "weight_only", "qat"),
        kernels=_KERNELS,
        lowering=lower_x86_onednn,
        extras={"torch_engines": ("x86", "onednn"), "act_dtype": "uint8", "act_range": (0, 255)},
    ))
