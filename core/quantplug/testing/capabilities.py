"""What a backend can do, read from the backend itself (never from its name).

The conformance suite skips a test when the backend lacks the capability the
test needs, so a backend with only a static int8 linear kernel runs the
linear tests and skips the conv ones, and a new kernel is tested the moment
the kernel library grows the method.

Most flags are *inferred* (modes from ``Backend.modes``, kernels from the
methods of the kernel library, numerics from the default quantizer). Three facts
cannot be inferred and are **declared** by the backend as plain class
attributes (absent means the default, which is what the suite then checks):

``supports_dynamic_per_row`` on the kernel library (default ``True``)
    ``linear_dynamic(x, packed, bias, per_row=True)`` quantizes each row of
    ``x`` with its own scale. A backend whose real library quantizes dynamic
    activations per tensor only declares ``False``; the suite
    then checks that ``per_row=True`` is *refused* with an error naming
    ``per_row`` (``KernelInputError``, ``ValueError`` or
    ``NotImplementedError``) instead of testing its numerics::

        class MyKernels(CffiKernelLibrary):
            supports_dynamic_per_row = False

``eager_only_modes`` on the quantizer class (default ``()``)
    Modes of ``Backend.modes`` that only the eager flow
    (``quantplug.quantize_``) runs; the graph quantizer (``prepare_pt2e``)
    cannot. The suite runs every declared mode through the eager flow, and
    only the other ones (:attr:`Capabilities.graph_modes`) through the graph
    flow::

        class MyQuantizer(PatternQuantizer):
            eager_only_modes = ("weight_only",)

``dynamic_per_row_act_range`` (kernel library, default ``None``)
    ``(qmin, qmax)`` of per-row dynamic activations when it differs from
    the per-tensor range (fbgemm: ``(0, 255)`` per row, reduce_range
    ``(0, 127)`` per tensor); the eager flow's repr and QAT follow it.

:data:`DECLARATIONS` lists them with their defaults.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..backend import Backend
from ..specs import INT4, UINT4

__all__ = ["Capabilities", "DECLARATIONS", "capabilities", "mode_options", "reference_kernels_for"]

#: Declared capabilities: attribute name -> (where it is declared, default when absent).
DECLARATIONS: dict[str, tuple[str, Any]] = {
    "supports_dynamic_per_row": ("kernel library", True),
    "dynamic_per_row_act_range": ("kernel library", None),
    "eager_only_modes": ("quantizer class", ()),
}

_MODE_OPTIONS: dict[str, dict[str, Any]] = {
    "static": {},
    "dynamic": {"is_dynamic": True},
    "qat": {"is_qat": True},
}


def mode_options(backend: Backend, mode: str) -> dict[str, Any] | None:
    """Keyword options of ``backend.get_quantizer`` that select ``mode``.

    ``static``/``dynamic``/``qat`` use the names every quantplug quantizer
    takes (``is_dynamic``, ``is_qat``). For ``weight_only`` the factory's
    signature is searched for ``is_weight_only`` or ``weight_only``; ``None``
    when there is no such option.
    """
    if mode in _MODE_OPTIONS:
        return dict(_MODE_OPTIONS[mode])
    if mode == "weight_only":
        try:
            params = inspect.signature(backend.quantizer_factory).parameters
        except (TypeError, ValueError):
            return None
        for name in ("is_weight_only", "weight_only"):
            if name in params:
                return {name: True}
    return None


@dataclass(frozen=True)
class Capabilities:
    """Capability flags of one backend; each test names the flags it needs.

    Kernel flags are true when the kernel library has the methods of the
    contract in :mod:`quantplug.reference_kernels`. Numerics come from the
    backend's own quantizer (what the flows will produce).
    """

    backend: str
    distribution: str
    #: modes the backend declares (``static``, ``dynamic``, ``weight_only``, ``qat``)
    modes: tuple[str, ...]
    #: declared modes the graph flow (``prepare_pt2e``) runs; the others are eager-only
    graph_modes: tuple[str, ...]
    #: the graph flow runs this mode (declared and not eager-only); the eager flow runs all ``modes``
    static: bool
    dynamic: bool
    weight_only: bool
    qat: bool
    #: a kernel library is present
    kernels: bool
    #: ``pack_linear_weight`` + ``linear``
    static_linear: bool
    #: ``pack_linear_weight`` + ``linear_dynamic``
    dynamic_linear: bool
    #: ``linear_dynamic(per_row=True)`` is supported (declared ``supports_dynamic_per_row``)
    dynamic_per_row: bool
    #: ``pack_conv2d_weight`` + ``conv2d``
    conv2d_kernel: bool
    #: ``add``
    add_kernel: bool
    #: the kernel library exposes ISA selection (``usable_isas`` / ``use_isa``)
    isa_selection: bool
    #: ``BackendConfig`` has a ``conv2d`` pattern
    conv_patterns: bool
    #: weights quantized per channel by the default quantizer
    per_channel: bool
    #: a weight dtype config accepts int4 / uint4
    int4: bool
    #: a dtype config keeps activations float with 8-bit weights (int8 weight-only)
    weight_only_int8: bool
    #: activation storage dtype and range of the static quantizer (int8 defaults otherwise)
    act_dtype: torch.dtype
    act_range: tuple[int, int]
    act_symmetric: bool
    weight_range: tuple[int, int]
    weight_symmetric: bool
    #: ISA paths compiled in and runnable on this CPU (best first)
    isas: tuple[str, ...]

    def has(self, name: str) -> bool:
        """The value of flag ``name`` (``AttributeError`` for an unknown flag)."""
        if name not in _FLAG_NAMES:
            raise AttributeError(f"unknown capability {name!r}; known: {sorted(_FLAG_NAMES)}")
        return bool(getattr(self, name))


_FLAG_NAMES = {f.name for f in fields(Capabilities) if f.type in ("bool", bool)}


def _has(obj: Any, *methods: str) -> bool:
    return obj is not None and all(callable(getattr(obj, m, None)) for m in methods)


def _default_quantizer(backend: Backend, graph_modes: tuple[str, ...]):
    for mode in ("static", "dynamic", "qat"):
        if mode in graph_modes:
            return backend.get_quantizer(**_MODE_OPTIONS[mode])
    return backend.get_quantizer()


def _declared(obj: Any, name: str) -> Any:
    """The declared value of ``name`` on ``obj`` (its default when ``obj`` does not declare it)."""
    default = DECLARATIONS[name][1]
    return default if obj is None else getattr(obj, name, default)


def _eager_only_modes(backend: Backend) -> tuple[str, ...]:
    modes = _declared(backend.quantizer_factory, "eager_only_modes")
    if isinstance(modes, str) or not all(isinstance(m, str) for m in modes):
        raise TypeError(f"backend {backend.name!r}: eager_only_modes must be a tuple of mode names, got {modes!r}")
    unknown = set(modes) - set(backend.modes)
    if unknown:
        raise ValueError(f"backend {backend.name!r} declares eager_only_modes {sorted(unknown)} that are not among "
                         f"its modes {list(backend.modes)}")
    return tuple(modes)


def capabilities(backend: Backend) -> Capabilities:
    """Read the capability flags of ``backend`` from its modes, kernels, config and quantizer.

    Declared facts (:data:`DECLARATIONS`) are read from the kernel library and
    the quantizer class; a malformed declaration raises ``TypeError`` /
    ``ValueError`` so it cannot silently disable tests.
    """
    k = backend.kernels
    eager_only = _eager_only_modes(backend)
    graph_modes = tuple(m for m in backend.modes if m not in eager_only)
    per_row = _declared(k, "supports_dynamic_per_row")
    if not isinstance(per_row, bool):
        raise TypeError(f"backend {backend.name!r}: supports_dynamic_per_row must be a bool, got {per_row!r}")
    quantizer = _default_quantizer(backend, graph_modes)
    cfg = getattr(quantizer, "global_config", None)
    act = getattr(cfg, "input_activation", None)
    weight = getattr(cfg, "weight", None)
    if act is not None and isinstance(act.dtype, torch.dtype) and not act.is_dynamic:
        act_dtype, act_range, act_sym = act.dtype, tuple(act.range), act.is_symmetric
    else:
        act_dtype, act_range, act_sym = torch.int8, (-128, 127), False
    if weight is not None:
        w_range, w_sym, per_channel = tuple(weight.range), weight.is_symmetric, weight.is_per_channel
    else:
        w_range, w_sym, per_channel = (-128, 127), True, False
    int4 = any(
        dc.weight_dtype is not None and dc.weight_dtype.dtype in (INT4, UINT4)
        for pc in backend.backend_config.configs for dc in pc.dtype_configs)
    weight_only_int8 = any(
        dc.input_dtype is None and dc.weight_dtype is not None and dc.weight_dtype.dtype in (torch.int8, torch.uint8)
        for pc in backend.backend_config.configs for dc in pc.dtype_configs)
    isa_selection = _has(k, "usable_isas", "use_isa")
    if isa_selection:
        isas = tuple(k.usable_isas())
    elif k is not None:
        isas = (k.selected_isa(),)
    else:
        isas = ()
    return Capabilities(
        backend=backend.name, distribution=backend.distribution,
        modes=tuple(backend.modes), graph_modes=graph_modes,
        static="static" in graph_modes, dynamic="dynamic" in graph_modes,
        weight_only="weight_only" in graph_modes, qat="qat" in graph_modes,
        kernels=k is not None,
        static_linear=_has(k, "pack_linear_weight", "linear"),
        dynamic_linear=_has(k, "pack_linear_weight", "linear_dynamic"),
        dynamic_per_row=_has(k, "pack_linear_weight", "linear_dynamic") and per_row,
        conv2d_kernel=_has(k, "pack_conv2d_weight", "conv2d"),
        add_kernel=_has(k, "add"),
        isa_selection=isa_selection,
        conv_patterns=backend.backend_config.get(("conv2d",)) is not None,
        per_channel=bool(per_channel), int4=int4, weight_only_int8=weight_only_int8,
        act_dtype=act_dtype, act_range=(int(act_range[0]), int(act_range[1])), act_symmetric=bool(act_sym),
        weight_range=(int(w_range[0]), int(w_range[1])), weight_symmetric=bool(w_sym),
        isas=isas,
    )


def reference_kernels_for(caps: Capabilities):
    """The pure-PyTorch kernels with this backend's activation dtype and range (the contract)."""
    from ..reference_kernels import ReferenceKernels

    return ReferenceKernels(act_dtype=caps.act_dtype, act_range=caps.act_range,
                            dynamic_symmetric=caps.act_symmetric)
