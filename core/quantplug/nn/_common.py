"""Shared machinery of the eager quantized modules.

* :class:`BackendNumerics`: the numbers a backend's kernels compute with
  (activation dtype and range, weight range, symmetric or not), read from the
  backend's own quantizer so the eager flow and the graph flow agree.
* :class:`QuantizedModule`: base class that resolves the backend's kernel
  library lazily (so modules pickle without the cffi handle), runs
  :class:`quantplug.reference_kernels.ReferenceKernels` only on the reference
  backend (a plugin without the kernel is refused), and keeps a plugin's
  packed-weight dataclass as ordinary registered buffers plus a small
  ``extra_state`` dict, so ``state_dict`` / ``load_state_dict`` / pickle work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import QuantplugError

__all__ = [
    "BackendNumerics",
    "backend_numerics",
    "QuantizedModule",
    "quantize_weight",
    "observer_from_spec",
    "kernel_op_available",
    "missing_kernel_ops",
    "require_kernel_ops",
]

_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


def _spec_kwargs(spec: Any) -> dict[str, Any]:
    """Keyword arguments baked into a spec's observer / fake-quant constructor (partials unwrapped).

    ``FakeQuantize.with_args(observer=Obs.with_args(...))`` nests one partial
    inside another; the observer's own keywords win.
    """
    ctr = getattr(spec, "observer_or_fake_quant_ctr", None)
    kwargs: dict[str, Any] = {}
    stack = [ctr]
    while stack:
        c = stack.pop()
        while c is not None:
            kw = getattr(c, "keywords", None)
            if kw is None:
                kw = getattr(c, "p", None) and getattr(c.p, "keywords", None)
            if kw:
                for k, v in kw.items():
                    if k == "observer":
                        stack.append(v)
                    else:
                        kwargs.setdefault(k, v)
            nxt = getattr(c, "func", None) or getattr(getattr(c, "p", None), "func", None)
            c = nxt if nxt is not c else None
    return kwargs


@dataclass(frozen=True)
class BackendNumerics:
    """What a backend's kernels compute with, for one mode.

    :param backend: canonical backend name.
    :param act_dtype: activation storage dtype (``torch.uint8`` / ``torch.int8``).
    :param act_range: ``(quant_min, quant_max)`` of activations (fbgemm's
        reduce_range gives ``(0, 127)``).
    :param act_symmetric: activation zero point fixed at the midpoint.
    :param weight_dtype: weight storage dtype as the backend quantizes it.
    :param weight_range: ``(quant_min, quant_max)`` of weights (xnnpack: -127..127).
    :param weight_symmetric: symmetric weights (zero point 0 for int8).
    :param scale_min: smallest scale the kernels accept (qnnpack: 2**-12).
    :param weight_spec: the backend's weight ``QuantizationSpec`` (its observer
        constructor is used to quantize weights exactly as the graph flow does).
    :param act_spec: the backend's activation spec (static/QAT: its observer or
        fake-quant constructor).
    """

    backend: str
    act_dtype: torch.dtype
    act_range: tuple[int, int]
    act_symmetric: bool
    weight_dtype: torch.dtype
    weight_range: tuple[int, int]
    weight_symmetric: bool
    weight_per_channel: bool
    scale_min: float | None
    weight_spec: Any = None
    act_spec: Any = None

    def describe(self) -> str:
        """Short text for ``repr``: ``act=uint8[0,127] w=int8[-127,127] sym/ch``."""
        a_lo, a_hi = self.act_range
        w_lo, w_hi = self.weight_range
        act = f"{str(self.act_dtype).replace('torch.', '')}[{a_lo},{a_hi}]{' sym' if self.act_symmetric else ''}"
        w = (f"{str(self.weight_dtype).replace('torch.', '')}[{w_lo},{w_hi}]"
             f"{' sym' if self.weight_symmetric else ' asym'}{' per-channel' if self.weight_per_channel else ' per-tensor'}")
        return f"act={act}, weight={w}"


_MODE_OPTIONS = {
    "static": {},
    "dynamic": {"is_dynamic": True},
    "qat": {"is_qat": True},
}


# (id(backend), mode, per_channel) -> (backend, numerics). Keyed by the Backend object, not its
# name: a registry reset (tests, register_plugin) may bring a different backend under the same name.
_NUMERICS_CACHE: dict[tuple[int, str, bool], tuple[Any, BackendNumerics]] = {}


def _cached_numerics(backend: Any, mode: str, per_channel: bool) -> BackendNumerics:
    key = (id(backend), mode, per_channel)
    hit = _NUMERICS_CACHE.get(key)
    if hit is not None and hit[0] is backend:
        return hit[1]
    numerics = _compute_numerics(backend, mode, per_channel)
    _NUMERICS_CACHE[key] = (backend, numerics)
    return numerics


def _compute_numerics(backend: Any, mode: str, per_channel: bool) -> BackendNumerics:
    from ..configs import BackendCapabilityError

    options = dict(_MODE_OPTIONS[mode])
    if not per_channel:
        options["is_per_channel"] = False
    try:
        quantizer = backend.get_quantizer(**options)
    except (TypeError, ValueError) as exc:
        raise BackendCapabilityError(
            f"backend {backend.name!r} ({backend.distribution}) cannot build a {mode} quantizer with "
            f"options {options}: {exc}") from exc
    cfg = getattr(quantizer, "global_config", None)
    if cfg is None or cfg.weight is None:
        raise BackendCapabilityError(f"backend {backend.name!r}: its {mode} quantizer has no global weight config, "
                                     f"so the eager flow cannot tell its numerics")
    w = cfg.weight
    act = cfg.input_activation
    if act is None:  # weight-only quantizers: activations stay float, pick int8 for the record
        act_dtype, act_range, act_sym = torch.int8, (-128, 127), False
    else:
        act_dtype = act.dtype if isinstance(act.dtype, torch.dtype) else torch.int8
        act_range = act.range
        act_sym = act.qscheme in _SYMMETRIC
    kw = _spec_kwargs(w)
    kw_a = _spec_kwargs(act) if act is not None else {}
    scale_min = kw.get("eps", kw_a.get("eps"))
    if scale_min is None:
        scale_min = kw.get("scale_min", kw_a.get("scale_min"))
    w_dtype = w.dtype if isinstance(w.dtype, torch.dtype) else torch.int8
    return BackendNumerics(
        backend=backend.name, act_dtype=act_dtype, act_range=tuple(act_range), act_symmetric=act_sym,
        weight_dtype=w_dtype, weight_range=tuple(w.range), weight_symmetric=w.qscheme in _SYMMETRIC,
        weight_per_channel=w.is_per_channel, scale_min=scale_min, weight_spec=w, act_spec=act,
    )


def backend_numerics(backend: Any, mode: str, *, per_channel: bool = True) -> BackendNumerics:
    """The numerics of ``backend`` (a ``Backend`` or name) in ``mode`` (``static``/``dynamic``/``qat``).

    Read from the backend's quantizer (``get_quantizer(is_dynamic=...)``), so
    a third-party backend gets the eager flow without extra code.
    """
    if isinstance(backend, str):
        from ..registry import get_backend

        backend = get_backend(backend)
    if mode not in _MODE_OPTIONS:
        raise ValueError(f"mode must be one of {sorted(_MODE_OPTIONS)}, got {mode!r}")
    return _cached_numerics(backend, mode, bool(per_channel))


def observer_from_spec(spec: Any) -> nn.Module:
    """Instantiate the observer / fake-quant module a spec describes."""
    ctr = spec.observer_or_fake_quant_ctr
    if ctr is None:
        raise QuantplugError(f"spec {spec!r} has no observer constructor")
    return ctr()


def _calculate(obs: nn.Module) -> tuple[Tensor, Tensor]:
    scale, zp = obs.calculate_qparams()
    return scale.detach().to(torch.float32).reshape(-1), zp.detach().to(torch.int32).reshape(-1)


def quantize_weight(weight: Tensor, numerics: BackendNumerics, *, observer: nn.Module | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """Quantize a float weight ``[N, ...]`` the way ``numerics``' backend does.

    The backend's own weight observer chooses the qparams (so eager and graph
    flows agree), unless ``observer`` (e.g. a trained fake-quant's) is given.
    Returns ``(w_q int8 [N, ...], scales float32 [N], zero_points int32 [N])``:
    one scale per output channel (a per-tensor scheme is broadcast). Weights a
    backend keeps in uint8 (qnnpack) are shifted by -128 into int8 storage with
    the zero point shifted alike: ``w_q - zero_point`` and so every product is
    unchanged.
    """
    from ..affine import quantize_affine

    w = weight.detach().to(torch.float32).contiguous()
    n = w.shape[0]
    if observer is None:
        observer = observer_from_spec(numerics.weight_spec)
        obs = getattr(observer, "activation_post_process", observer)
        obs(w)
        observer = obs
    scale, zp = _calculate(observer)
    if scale.numel() == 1:
        scale, zp = scale.expand(n).contiguous(), zp.expand(n).contiguous()
    if scale.numel() != n:
        raise QuantplugError(f"weight observer returned {scale.numel()} scales for a weight with {n} output channels")
    lo, hi = numerics.weight_range
    q = quantize_affine(w, scale, zp, quant_min=lo, quant_max=hi, dtype=numerics.weight_dtype, axis=0)
    if q.dtype == torch.uint8:
        q = (q.to(torch.int16) - 128).to(torch.int8)
        zp = zp - 128
    return q.contiguous(), scale.contiguous(), zp.to(torch.int32).contiguous()


def kernel_op_available(backend: Any, *ops: str) -> bool:
    """True when ``backend`` has a kernel library offering every method in ``ops``."""
    kernels = getattr(backend, "kernels", None)
    return kernels is not None and all(callable(getattr(kernels, op, None)) for op in ops)


def missing_kernel_ops(backend: Any, ops: tuple[str, ...]) -> list[str]:
    """The methods of ``ops`` a plugin backend's kernel library lacks (``[]`` for the reference backend).

    The reference backend (``kernels is None``) runs everything as PyTorch by
    design, so nothing is "missing" there.
    """
    kernels = getattr(backend, "kernels", None)
    if kernels is None:
        return []
    return [op for op in ops if not callable(getattr(kernels, op, None))]


def require_kernel_ops(backend: Any, ops: tuple[str, ...], what: str, fix: str) -> None:
    """Raise ``BackendCapabilityError`` when a plugin backend has no kernel for ``what``.

    A module on a plugin backend must run that plugin's C kernels: a silent
    fallback to PyTorch reference code would be slow and hide a missing
    kernel. Called by the eager handlers before any module is swapped, so the
    model is left unchanged.

    :param what: the layer and operation, e.g. ``"Conv2d 'features.0' (int8 conv2d)"``.
    :param fix: what the user can do instead (exclude it with ``filter_fn``...).
    """
    missing = missing_kernel_ops(backend, ops)
    if missing:
        from ..configs import BackendCapabilityError

        raise BackendCapabilityError(
            f"backend {backend.name!r} ({backend.distribution}) has no kernel for {what}: its kernel library lacks "
            f"{', '.join(missing)}. {fix}. Nothing was changed.")


# ------------------------------------------------------------ base module --


class QuantizedModule(nn.Module):
    """Base of quantplug's eager quantized modules (inference only).

    Subclasses call :meth:`_init_backend` with the kernel ops they need; a
    plugin backend whose kernels lack one is refused
    (``BackendCapabilityError``), and only the reference backend runs the
    pure-PyTorch reference. Packed weights are stored with
    :meth:`_store_packed` and read back with :meth:`_packed`.

    What pickles / saves: buffers, the backend *name* and plain attributes.
    The kernel library (a cffi handle) is looked up again after loading, so a
    saved model needs the same backend installed to run.
    """

    _version = 1

    def _init_backend(self, backend: Any, numerics: BackendNumerics | None, ops: tuple[str, ...],
                      *, op_label: str) -> None:
        self.backend_name: str = backend.name
        # keep only plain data: the specs' observer constructors are not needed after quantization
        self.numerics = dataclasses.replace(numerics, weight_spec=None, act_spec=None) if numerics is not None else None
        self.op_label = op_label
        # Never fall back silently: a plugin backend without the kernel is an error (the eager handlers
        # check this before swapping anything; this is the last line of defence for direct construction).
        require_kernel_ops(backend, ops, f"{type(self).__name__} ({op_label})",
                           "Use a backend that has it, or keep this layer float")
        self.uses_plugin_kernel = backend.kernels is not None
        if self.uses_plugin_kernel:
            self.kernel_path = f"{backend.name} {op_label} kernel ({backend.kernel_isa()})"
        else:
            self.kernel_path = f"pytorch reference ({backend.name} is the reference backend, no C kernels)"
        self._packed_meta: dict[str, dict[str, Any]] = {}
        self._packed_types: dict[str, type] = {}
        self._packed_fields: dict[str, tuple[str, ...]] = {}  # field order, for the traced ops' tensor list
        self._runtime: dict[str, Any] = {}

    # -- kernels -----------------------------------------------------------------
    def kernels(self):
        """The object whose methods run this module: the plugin's kernels or a ``ReferenceKernels``."""
        k = self._runtime.get("kernels")
        if k is None:
            if self.uses_plugin_kernel:
                from ..registry import get_backend

                k = get_backend(self.backend_name).kernels
            else:
                from ..reference_kernels import ReferenceKernels

                n = self.numerics
                k = (ReferenceKernels(n.act_dtype, n.act_range, dynamic_symmetric=n.act_symmetric)
                     if n is not None else ReferenceKernels())
            self._runtime["kernels"] = k
        return k

    # -- packed weights as buffers ---------------------------------------------------
    def _store_packed(self, prefix: str, packed: Any) -> None:
        """Keep ``packed`` (a dataclass) as buffers ``{prefix}_{field}`` + plain fields in extra state."""
        if not dataclasses.is_dataclass(packed):
            raise QuantplugError(f"{type(self).__name__}: packed weights must be a dataclass, "
                                 f"got {type(packed).__name__} from backend {self.backend_name!r}")
        meta: dict[str, Any] = {}
        for f in dataclasses.fields(packed):
            v = getattr(packed, f.name)
            if isinstance(v, Tensor):
                self.register_buffer(f"{prefix}_{f.name}", v)
            elif v is None or isinstance(v, (bool, int, float, str)):
                meta[f.name] = v
            else:
                raise QuantplugError(f"{type(packed).__name__}.{f.name} is a {type(v).__name__}; packed-weight "
                                     f"fields must be tensors or plain int/float/bool/str")
        self._packed_meta[prefix] = meta
        self._packed_types[prefix] = type(packed)
        self._packed_fields[prefix] = tuple(f.name for f in dataclasses.fields(packed))
        self._runtime.pop(f"packed:{prefix}", None)

    def _packed(self, prefix: str) -> Any:
        """The packed dataclass rebuilt from the buffers (cached until buffers change)."""
        key = f"packed:{prefix}"
        p = self._runtime.get(key)
        if p is None:
            cls = self._packed_types[prefix]
            meta = self._packed_meta[prefix]
            kwargs = {}
            for f in dataclasses.fields(cls):
                kwargs[f.name] = meta[f.name] if f.name in meta else getattr(self, f"{prefix}_{f.name}")
            p = self._runtime[key] = cls(**kwargs)
        return p

    def get_extra_state(self) -> dict[str, Any]:
        """Backend name and the plain fields of packed weights (saved in ``state_dict``)."""
        return {"backend": self.backend_name, "kernel_path": self.kernel_path, "packed_meta": self._packed_meta,
                "packed_types": {k: f"{v.__module__}.{v.__qualname__}" for k, v in self._packed_types.items()},
                "version": self._version}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Check that the saved weights were packed by the same backend and layout, then adopt them."""
        if state.get("backend") != self.backend_name:
            raise QuantplugError(
                f"{type(self).__name__}: this state_dict was packed by backend {state.get('backend')!r}, "
                f"but the module runs on {self.backend_name!r}; convert the float model with the same backend "
                f"before loading, or re-quantize from the float weights")
        mine = {k: f"{v.__module__}.{v.__qualname__}" for k, v in self._packed_types.items()}
        if state.get("packed_types", mine) != mine:
            raise QuantplugError(f"{type(self).__name__}: saved packed-weight types {state.get('packed_types')} "
                                 f"differ from this module's {mine} (different kernel path); re-quantize instead")
        self._packed_meta = {k: dict(v) for k, v in state.get("packed_meta", {}).items()}
        self._runtime = {}

    def _load_from_state_dict(self, *args, **kwargs):  # noqa: D401 - torch hook
        self._runtime = {}
        super()._load_from_state_dict(*args, **kwargs)
        self._warm_runtime()

    def _apply(self, fn, recurse=True):
        self._runtime = {}
        out = super()._apply(fn, recurse)
        self._warm_runtime()
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_runtime"] = {}  # the kernel handle and cached dataclasses are rebuilt after loading
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_packed_fields" not in state:  # pickled by quantplug 0.1 before the field order was recorded
            self._packed_fields = {k: tuple(f.name for f in dataclasses.fields(cls))
                                   for k, cls in self._packed_types.items()}
        self._warm_runtime()

    def _warm_runtime(self) -> None:
        """Refill caches that read buffer *values* into Python numbers (subclasses: activation qparams).

        Called whenever buffers may have changed (construction, ``load_state_dict``,
        ``.to()``, unpickling, deep copies): a forward traced by ``torch.export``
        sees fake buffers whose values it cannot read, so the numbers must be
        known before tracing starts.
        """

    # -- repr -------------------------------------------------------------------------
    def _backend_repr(self) -> str:
        num = f", {self.numerics.describe()}" if self.numerics is not None else ""
        return f"backend={self.backend_name}{num}, kernel={self.kernel_path}"

    def train(self, mode: bool = True):
        """Quantized modules run inference only; ``train()`` is allowed but changes nothing numerically."""
        return super().train(mode)
