"""Fake quantization for quantization-aware training.

* :class:`FakeQuantize`: observer + quantize/dequantize in float, with
  straight-through-estimator gradients (torch.ao's ``FakeQuantize``).
* :class:`LearnableFakeQuantize`: LSQ (Esser et al., "Learned Step Size
  Quantization", ICLR 2020): the scale (and optionally the zero point) is a
  parameter trained by backprop, initialised from the observer on the first
  batches.
* :class:`FixedQParamsFakeQuantize`: fixed qparams (sigmoid, softmax...).

Forward values equal :func:`quantplug.affine.fake_quantize_affine` (and
therefore what the converted int8 model computes) for finite inputs.

Only torch, the standard library and the sibling modules
:mod:`quantplug.affine` / :mod:`quantplug.observers` are imported.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor, nn

from .affine import EPS, choose_qparams
from .observers import FixedQParamsObserver, MovingAverageMinMaxObserver

__all__ = ["FakeQuantize", "LearnableFakeQuantize", "FixedQParamsFakeQuantize"]


def _build_observer(owner: str, observer: Any, quant_min: int | None, quant_max: int | None, is_dynamic: bool,
                    observer_kwargs: dict) -> nn.Module:
    """An observer from an instance, or from a class / ``with_args`` factory plus keyword arguments."""
    if isinstance(observer, nn.Module):
        if observer_kwargs or quant_min is not None or quant_max is not None:
            raise ValueError(f"{owner}: got an observer instance together with observer arguments "
                             f"({sorted(observer_kwargs) + [k for k, v in (('quant_min', quant_min), ('quant_max', quant_max)) if v is not None]}); "
                             "pass a factory (Observer.with_args(...)) or configure the instance")
        return observer
    if not callable(observer):
        raise ValueError(f"{owner}: observer must be an observer module, class or factory, got {observer!r}")
    kwargs = dict(observer_kwargs)
    if (quant_min is None) != (quant_max is None):
        raise ValueError(f"{owner}: give both quant_min and quant_max or neither")
    if quant_min is not None:
        if quant_min > quant_max:
            raise ValueError(f"{owner}: quant_min ({quant_min}) must be <= quant_max ({quant_max})")
        kwargs.update(quant_min=quant_min, quant_max=quant_max)
    if is_dynamic:
        kwargs["is_dynamic"] = True
    return observer(**kwargs)


def _check_integer_observer(owner: str, obs: nn.Module) -> None:
    if getattr(obs, "quant_min", None) is None or getattr(obs, "quant_max", None) is None:
        raise ValueError(f"{owner}: the observer {type(obs).__name__} has no integer range "
                         f"(dtype {getattr(obs, 'dtype', None)}); fake quantization needs an integer dtype")


class _FakeQuantizeBase(nn.Module):
    """Enable/disable switches shared by the fake-quantize modules (uint8 buffers, as in torch.ao)."""

    fake_quant_enabled: Tensor
    observer_enabled: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.uint8))

    @classmethod
    def with_args(cls, **kwargs) -> functools.partial:
        """A zero-argument constructor with these keyword arguments (``functools.partial``)."""
        return functools.partial(cls, **kwargs)

    def enable_fake_quant(self, enabled: bool = True) -> _FakeQuantizeBase:
        """Quantize the forward output (``False``: pass the input through)."""
        self.fake_quant_enabled[0] = 1 if enabled else 0
        return self

    def disable_fake_quant(self) -> _FakeQuantizeBase:
        """Pass the input through unchanged (statistics may still be collected)."""
        return self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> _FakeQuantizeBase:
        """Update the statistics / qparams from each batch (``False``: freeze them)."""
        self.observer_enabled[0] = 1 if enabled else 0
        return self

    def disable_observer(self) -> _FakeQuantizeBase:
        """Freeze the qparams (usual for the last epochs of QAT)."""
        return self.enable_observer(False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # scale / zero_point become per-channel once data is seen: take the saved shapes.
        for store in (self._buffers, self._parameters):
            for name, t in list(store.items()):
                key = prefix + name
                if t is not None and key in state_dict and state_dict[key].shape != t.shape:
                    with torch.no_grad():
                        t.data = torch.empty(state_dict[key].shape, dtype=t.dtype, device=t.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class FakeQuantize(_FakeQuantizeBase):
    """Observe, then quantize and dequantize in float; gradients pass straight through inside the range.

    ``y = (clamp(round(x / scale) + zero_point, quant_min, quant_max) - zero_point) * scale``
    with ``1/scale`` in float32 and ties to even, per tensor or per channel
    (``observer.per_channel``, along ``observer.ch_axis``).

    :param observer: an observer instance, or a class / ``with_args`` factory
        called with ``observer_kwargs`` (default: ``MovingAverageMinMaxObserver``).
    :param quant_min, quant_max: forwarded to the observer factory.
    :param is_dynamic: qparams from each input's own min/max (dynamic QAT); no observer statistics.

    Attributes (as torch.ao): ``activation_post_process`` (the observer),
    ``scale``, ``zero_point`` (buffers), ``dtype``, ``qscheme``, ``ch_axis``,
    ``is_per_channel``, ``quant_min``, ``quant_max``, ``is_dynamic``.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(self, observer: Any = MovingAverageMinMaxObserver, quant_min: int | None = None,
                 quant_max: int | None = None, is_dynamic: bool = False, **observer_kwargs) -> None:
        super().__init__()
        name = type(self).__name__
        self.activation_post_process = _build_observer(name, observer, quant_min, quant_max, is_dynamic,
                                                       observer_kwargs)
        obs = self.activation_post_process
        _check_integer_observer(name, obs)
        self.quant_min, self.quant_max = int(obs.quant_min), int(obs.quant_max)
        self.dtype = obs.dtype
        self.is_dynamic = bool(is_dynamic or getattr(obs, "is_dynamic", False))
        self.is_per_channel = bool(getattr(obs, "per_channel", False))
        self.ch_axis = obs.ch_axis if self.is_per_channel else -1
        self.qscheme = getattr(obs, "qscheme", torch.per_tensor_affine)
        if self.is_dynamic and self.is_per_channel:
            raise ValueError(f"{name}: dynamic fake quantization is per tensor only")
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int32))

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """The observer's ``(scale, zero_point)`` (dynamic: those of the last input)."""
        if self.is_dynamic:
            return self.scale.clone(), self.zero_point.clone()
        return self.activation_post_process.calculate_qparams()

    def _set_qparams(self, scale: Tensor, zero_point: Tensor) -> None:
        scale = scale.detach().to(device=self.scale.device, dtype=torch.float32).reshape(-1)
        zero_point = zero_point.detach().to(device=self.zero_point.device, dtype=torch.int32).reshape(-1)
        if self.scale.shape != scale.shape:
            self.scale, self.zero_point = scale.clone(), zero_point.clone()
        else:
            self.scale.copy_(scale)
            self.zero_point.copy_(zero_point)

    def _dynamic_qparams(self, x: Tensor) -> tuple[Tensor, Tensor]:
        obs = self.activation_post_process
        lo, hi = torch.aminmax(x.detach().to(torch.float32))
        return choose_qparams(lo, hi, quant_min=self.quant_min, quant_max=self.quant_max,
                              symmetric=bool(getattr(obs, "symmetric", False)), eps=float(getattr(obs, "eps", EPS)),
                              scale_min=getattr(obs, "scale_min", None), dtype=self.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Observe ``x`` (if enabled) and return its fake-quantized value (if enabled)."""
        if self.observer_enabled[0] == 1:
            if self.is_dynamic:
                if x.numel():
                    self._set_qparams(*self._dynamic_qparams(x))
            else:
                self.activation_post_process(x.detach())
                self._set_qparams(*self.activation_post_process.calculate_qparams())
        if self.fake_quant_enabled[0] == 0:
            return x
        # torch's fused fake-quantize ops: the same numerics as quantplug.affine (float32
        # 1/scale, ties to even, clamp), a mask-based straight-through estimator for the
        # backward (gradient 1 inside [quant_min, quant_max], 0 where the value was
        # clamped), and far faster than composing round/clamp with a custom Function.
        if self.is_per_channel:
            return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.ch_axis,
                                                          self.quant_min, self.quant_max)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled[0])}, observer_enabled={int(self.observer_enabled[0])}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
                f"ch_axis={self.ch_axis}, scale={self.scale}, zero_point={self.zero_point}")


class FixedQParamsFakeQuantize(FakeQuantize):
    """Fake quantization with qparams fixed up front (ops whose output range is known).

    :param observer: a :class:`~quantplug.observers.FixedQParamsObserver`
        instance or factory (``FixedQParamsObserver.with_args(scale=..., zero_point=...)``).
    """

    def __init__(self, observer: Any, **observer_kwargs) -> None:
        super().__init__(observer=observer, **observer_kwargs)
        obs = self.activation_post_process
        if not isinstance(obs, FixedQParamsObserver):
            raise ValueError(f"FixedQParamsFakeQuantize needs a FixedQParamsObserver, got {type(obs).__name__}")
        self._set_qparams(*obs.calculate_qparams())

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantize ``x`` with the fixed qparams (nothing to observe)."""
        if self.fake_quant_enabled[0] == 0:
            return x
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """The fixed ``(scale, zero_point)``."""
        return self.scale.clone(), self.zero_point.clone()


# --------------------------------------------------------------------- LSQ --


class _LSQFakeQuantize(torch.autograd.Function):
    """Fake quantization with gradients for x, scale and zero point (LSQ / LSQ+).

    Forward: as :class:`FakeQuantize`, with the zero point rounded (ties to
    even) and clamped into the range. Backward, per element, with
    ``q = round(x / s) + z`` before clamping:

    * ``dx = dy`` if ``quant_min <= q <= quant_max`` else 0 (straight through);
    * ``ds = dy * (fq(x) - x) / s`` inside, ``dy * (quant_min - z)`` below,
      ``dy * (quant_max - z)`` above;
    * ``dz = 0`` inside, ``-dy * s`` outside;

    ``ds`` and ``dz`` are multiplied by ``grad_factor`` and summed over all
    elements (per tensor) or all but the channel axis (per channel). These are
    the formulas of torch's ``_fake_quantize_learnable_*`` ops; unlike torch's
    per-tensor op, the backward uses the same rounded zero point as the
    forward (torch's per-tensor backward rounds ``z + 0.5`` towards zero,
    which differs for negative or exactly-half zero points; its per-channel
    op agrees with us).
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, zero_point: Tensor, axis: int | None, quant_min: int, quant_max: int,
                grad_factor: float) -> Tensor:
        shape = [1] * x.dim()
        if axis is not None:
            shape[axis] = -1
        s = scale.detach().to(torch.float32).reshape(shape)
        z = zero_point.detach().to(torch.float32).round().clamp(quant_min, quant_max).reshape(shape)
        xf = x.detach().to(torch.float32)
        q = torch.round(xf * torch.reciprocal(s)) + z
        ctx.save_for_backward(xf, s, z)
        ctx.params = (axis, quant_min, quant_max, grad_factor, scale.shape, zero_point.shape, x.dtype)
        return ((q.clamp(quant_min, quant_max) - z) * s).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        xf, s, z = ctx.saved_tensors
        axis, quant_min, quant_max, grad_factor, scale_shape, zp_shape, x_dtype = ctx.params
        g = grad_out.to(torch.float32)
        inv = torch.reciprocal(s)
        q = torch.round(xf * inv) + z
        below, above = q < quant_min, q > quant_max
        inside = ~(below | above)
        grad_x = (g * inside).to(x_dtype)
        dims = [d for d in range(xf.dim()) if d != axis]  # all dims per tensor, all but the channel's otherwise

        def reduce(t: Tensor) -> Tensor:
            return (t.sum(dim=dims) if dims else t).reshape(scale_shape)

        grad_s = grad_z = None
        if ctx.needs_input_grad[1]:
            fq = (q.clamp(quant_min, quant_max) - z) * s
            clipped = torch.where(below, g * (quant_min - z), g * (quant_max - z))
            grad_s = reduce(torch.where(inside, g * (fq - xf) * inv, clipped) * grad_factor)
        if ctx.needs_input_grad[2]:
            grad_z = reduce(torch.where(inside, torch.zeros_like(g), -g * s) * grad_factor).reshape(zp_shape)
        return grad_x, grad_s, grad_z, None, None, None, None


class LearnableFakeQuantize(_FakeQuantizeBase):
    """LSQ fake quantization: the scale (and, for affine schemes, the zero point) is learned.

    The first ``init_batches`` forward calls feed the observer and copy its
    qparams into the parameters (LSQ needs a sensible starting step size);
    after that the observer is switched off and the parameters train by
    backprop. ``enable_observer()`` returns to observer estimates.

    Gradients of the scale and zero point are multiplied by
    ``1 / sqrt(x.numel() * quant_max)`` when ``use_grad_scaling`` (the LSQ
    paper's ``g = 1/sqrt(N * Q_P)``, which keeps the step-size update on the
    scale of the weight updates), as torch's ``_LearnableFakeQuantize`` does.

    :param observer: observer instance or factory (default ``MovingAverageMinMaxObserver``).
    :param scale, zero_point: initial values (used if ``init_batches == 0``).
    :param channel_len: number of channels for per-channel observers; if not
        given, the parameters are sized by the first observation.
    :param learn_zero_point: default: True for affine schemes, False for
        symmetric ones (their zero point is fixed by the dtype).
    :param init_batches: batches observed before learning starts.

    ``scale`` and ``zero_point`` are ``nn.Parameter`` (float32); the zero
    point is rounded and clamped when used.
    """

    eps: Tensor
    batches_observed: Tensor

    def __init__(self, observer: Any = MovingAverageMinMaxObserver, quant_min: int | None = None,
                 quant_max: int | None = None, scale: float = 1.0, zero_point: float = 0.0, channel_len: int = -1,
                 use_grad_scaling: bool = True, learn_zero_point: bool | None = None, init_batches: int = 1,
                 **observer_kwargs) -> None:
        super().__init__()
        name = type(self).__name__
        self.activation_post_process = _build_observer(name, observer, quant_min, quant_max, False, observer_kwargs)
        obs = self.activation_post_process
        _check_integer_observer(name, obs)
        if getattr(obs, "is_dynamic", False):
            raise ValueError(f"{name}: LSQ learns static qparams; got a dynamic observer")
        self.quant_min, self.quant_max = int(obs.quant_min), int(obs.quant_max)
        self.dtype = obs.dtype
        self.symmetric = bool(getattr(obs, "symmetric", False))
        self.is_per_channel = bool(getattr(obs, "per_channel", False))
        self.ch_axis = obs.ch_axis if self.is_per_channel else -1
        self.qscheme = getattr(obs, "qscheme", torch.per_tensor_affine)
        self.use_grad_scaling = bool(use_grad_scaling)
        self.learn_zero_point = (not self.symmetric) if learn_zero_point is None else bool(learn_zero_point)
        if not isinstance(init_batches, int) or init_batches < 0:
            raise ValueError(f"{name}: init_batches must be an int >= 0, got {init_batches!r}")
        self.init_batches = init_batches
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{name}: initial scale must be positive, got {scale}")
        if channel_len != -1 and (not isinstance(channel_len, int) or channel_len <= 0):
            raise ValueError(f"{name}: channel_len must be a positive int, got {channel_len!r}")
        n = channel_len if channel_len > 0 else 1
        self.scale = nn.Parameter(torch.full((n,), float(scale)))
        self.zero_point = nn.Parameter(torch.full((n,), float(zero_point)), requires_grad=self.learn_zero_point)
        self.register_buffer("eps", torch.tensor([EPS]))
        self.register_buffer("batches_observed", torch.tensor([0], dtype=torch.int64))
        self.observer_enabled[0] = 1 if init_batches > 0 else 0

    def enable_param_learning(self) -> LearnableFakeQuantize:
        """Learn the qparams by backprop (observer off, fake quant on)."""
        return self.enable_observer(False).enable_fake_quant(True)

    def enable_static_estimate(self) -> LearnableFakeQuantize:
        """Take the qparams from the observer on every batch (fake quant on)."""
        return self.enable_observer(True).enable_fake_quant(True)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """Current ``(scale, zero_point)``: scale clamped to >= eps, zero point rounded and clamped (int32)."""
        scale = self.scale.detach().clamp(min=float(self.eps)).clone()
        zp = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).to(torch.int32)
        return scale, zp

    def _load_qparams(self, scale: Tensor, zero_point: Tensor) -> None:
        scale = scale.detach().to(device=self.scale.device, dtype=torch.float32).reshape(-1)
        zero_point = zero_point.detach().to(device=self.zero_point.device, dtype=torch.float32).reshape(-1)
        with torch.no_grad():
            if self.scale.shape != scale.shape:  # per-channel size known only now; keep the Parameter objects
                self.scale.data = scale.clone()
                self.zero_point.data = zero_point.clone()
            else:
                self.scale.copy_(scale)
                self.zero_point.copy_(zero_point)

    def forward(self, x: Tensor) -> Tensor:
        """Observe (during initialisation) and fake-quantize ``x`` with the learnable qparams."""
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x.detach())
            self._load_qparams(*self.activation_post_process.calculate_qparams())
            self.batches_observed += 1
            if int(self.batches_observed) == self.init_batches:
                self.observer_enabled[0] = 0  # initialisation done: learn from now on
        else:
            with torch.no_grad():
                self.scale.clamp_(min=float(self.eps))  # an optimizer step may push it to <= 0
        if self.fake_quant_enabled[0] == 0:
            return x
        grad_factor = 1.0 / math.sqrt(x.numel() * max(self.quant_max, 1)) if self.use_grad_scaling else 1.0
        axis = (self.ch_axis % x.dim()) if self.is_per_channel else None
        if axis is not None and self.scale.numel() != x.shape[axis]:
            raise ValueError(f"{type(self).__name__}: {self.scale.numel()} channel scales for {x.shape[axis]} "
                             f"channels on axis {axis}")
        return _LSQFakeQuantize.apply(x, self.scale, self.zero_point, axis, self.quant_min, self.quant_max,
                                      grad_factor)

    def extra_repr(self) -> str:
        return (f"fake_quant_enabled={int(self.fake_quant_enabled[0])}, observer_enabled={int(self.observer_enabled[0])}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
                f"learn_zero_point={self.learn_zero_point}, use_grad_scaling={self.use_grad_scaling}")
