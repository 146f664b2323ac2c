"""The ``Backend`` record a plugin registers, and the kernel-library protocol.

A ``Backend`` is plain data: what the backend is called, which distribution
ships it, what quantizer it offers, which op patterns its kernels run
(``BackendConfig``) and which kernel library executes them. It holds no
behaviour of its own beyond small conveniences, so a newcomer can read one
plugin's registration and know everything the core knows about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from .backend_config import BackendConfig
    from .quantizer import Quantizer

__all__ = ["Backend", "KernelLibrary", "MODES"]

#: The quantization modes a backend may offer. ``static``: int8 activations
#: with calibrated qparams; ``dynamic``: activations quantized per call;
#: ``weight_only``: float activations, int8/int4 weights; ``qat``: training
#: with fake quantization that matches the backend's kernels.
MODES = ("static", "dynamic", "weight_only", "qat")


@runtime_checkable
class KernelLibrary(Protocol):
    """What the core needs to know about a backend's compiled kernels.

    Plugins implement this (usually by subclassing
    :class:`quantplug.kernels.CffiKernelLibrary`).
    """

    #: short library name, e.g. ``"quantplug_fbgemm._kernels"``
    name: str

    def selected_isa(self) -> str:
        """The instruction-set path the kernels use on this CPU (``"avx512vnni"``, ``"scalar"``...)."""

    def available_isas(self) -> Sequence[str]:
        """Every path compiled in, best first, whether or not this CPU can run it."""

    def cpu_features(self) -> Sequence[str]:
        """The CPU features detected at run time that the kernels care about."""


@dataclass(frozen=True)
class Backend:
    """A registered quantization backend.

    :param name: canonical name, e.g. ``"xnnpack"``.
    :param distribution: the pip distribution that provides it, e.g.
        ``"quantplug-arm-xnnpack"``; error messages tell users to install it.
    :param version: the plugin version (saved in recipes, checked on load).
    :param description: one line for ``quantplug backends``.
    :param quantizer_factory: ``factory(**options) -> Quantizer``; options
        select the mode, e.g. ``is_dynamic=True`` or ``is_qat=True``.
    :param backend_config: the op patterns and dtype constraints the kernels
        support; the core validates every annotation against it.
    :param aliases: other names that resolve to this backend.
    :param modes: a subset of :data:`MODES`.
    :param kernels: the compiled kernel library, or ``None`` for a backend
        that only produces the reference representation.
    :param lowering: optional ``lower(graph_module) -> graph_module`` that
        replaces reference quantized patterns with the backend's fused kernels.
    :param extras: free-form plugin data (kept out of the core's logic).
    """

    name: str
    distribution: str
    version: str
    description: str
    quantizer_factory: Callable[..., "Quantizer"]
    backend_config: "BackendConfig"
    aliases: tuple[str, ...] = ()
    modes: tuple[str, ...] = ("static",)
    kernels: KernelLibrary | None = None
    lowering: Callable[..., Any] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise ValueError(f"backend name {self.name!r} must be a non-empty identifier")
        unknown = set(self.modes) - set(MODES)
        if unknown:
            raise ValueError(
                f"backend {self.name!r} declares unknown modes {sorted(unknown)}; "
                f"valid modes are {list(MODES)}"
            )
        object.__setattr__(self, "aliases", tuple(self.aliases))
        object.__setattr__(self, "modes", tuple(self.modes))

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name followed by the aliases."""
        return (self.name, *self.aliases)

    def get_quantizer(self, **options: Any) -> "Quantizer":
        """Build this backend's quantizer; ``options`` go to ``quantizer_factory``."""
        return self.quantizer_factory(**options)

    def kernel_isa(self) -> str:
        """The kernel path chosen on this CPU, or ``"none"`` without kernels."""
        return self.kernels.selected_isa() if self.kernels is not None else "none"

    def cpu_features(self) -> list[str]:
        """CPU features the kernels detected here (empty without kernels)."""
        return list(self.kernels.cpu_features()) if self.kernels is not None else []
