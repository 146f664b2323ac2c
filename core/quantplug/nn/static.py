"""Static int8 modules: calibrated activation qparams, int8 weights.

Calibration: :class:`ObservedLinear` / :class:`ObservedConv` run the float
(bn-folded, relu-fused) module and record the input and output ranges with
the backend's observers. ``quantplug.convert`` turns each into a
:class:`QuantizedLinear` / :class:`QuantizedConv1d` / :class:`QuantizedConv2d`.

Every converted module takes and returns float tensors. Inside, it quantizes
the input with the calibrated qparams, runs the backend's int8 kernel
(quantized in, quantized out: int32 accumulation, bias, requantization to the
calibrated output qparams, fused relu as the output clamp) and dequantizes.
So any model structure works without QuantStub/DeQuantStub, and the numbers
between quantize and dequantize are exactly those of the backend's kernel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import QuantplugError
from ..quant_ops import ops as qops
from ._common import BackendNumerics, QuantizedModule, quantize_weight
from ._traced import is_tracing, packed_tensors
from ._traced import ops as traced

__all__ = [
    "ObservedLinear",
    "ObservedConv",
    "QuantizedLinear",
    "QuantizedConv1d",
    "QuantizedConv2d",
    "make_activation_observer",
    "LINEAR_OPS",
    "CONV_OPS",
]

#: kernel methods of the static int8 linear / conv modules
LINEAR_OPS = ("pack_linear_weight", "linear")
CONV_OPS = ("pack_conv2d_weight", "conv2d")


def make_activation_observer(numerics: BackendNumerics, kind: str = "histogram", **extra: Any) -> nn.Module:
    """An activation observer with ``numerics``' dtype, range, qscheme and scale floor.

    :param kind: ``"histogram"``, ``"minmax"`` or ``"moving_average"``.
    """
    from .. import observers as ob

    cls = {"histogram": ob.HistogramObserver, "minmax": ob.MinMaxObserver,
           "moving_average": ob.MovingAverageMinMaxObserver}[kind]
    lo, hi = numerics.act_range
    kwargs: dict[str, Any] = dict(dtype=numerics.act_dtype, quant_min=lo, quant_max=hi,
                                  qscheme=torch.per_tensor_symmetric if numerics.act_symmetric else torch.per_tensor_affine)
    if numerics.scale_min is not None:
        kwargs["scale_min"] = numerics.scale_min
    kwargs.update(extra)
    return cls(**kwargs)


class _ObservedBase(nn.Module):
    """Float module + input/output observers (calibration stage of the static flow)."""

    def __init__(self, float_module: nn.Module, relu: bool, backend_name: str, numerics: BackendNumerics,
                 act_observer: str, weight_per_channel: bool) -> None:
        super().__init__()
        self.float_module = float_module
        self.relu = bool(relu)
        self.backend_name = backend_name
        self.weight_per_channel = weight_per_channel
        self.input_observer = make_activation_observer(numerics, act_observer)
        self.output_observer = make_activation_observer(numerics, act_observer)

    def forward(self, x: Tensor) -> Tensor:
        """Observe ``x``, run the float op (+ relu), observe and return the output."""
        self.input_observer(x)
        y = self.float_module(x)
        if self.relu:
            y = F.relu(y)
        self.output_observer(y)
        return y

    def extra_repr(self) -> str:
        """Backend and fused relu."""
        return f"backend={self.backend_name}, relu={self.relu} (calibrating: run data, then quantplug.convert)"


class ObservedLinear(_ObservedBase):
    """``nn.Linear`` (optionally + relu) being calibrated for the static flow."""


class ObservedConv(_ObservedBase):
    """``nn.Conv1d`` / ``nn.Conv2d`` (bn folded, optionally + relu) being calibrated."""


def _qparams(obs: nn.Module) -> tuple[float, int]:
    scale, zp = obs.calculate_qparams()
    return float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])


class _StaticBase(QuantizedModule):
    """Input quantize -> backend int8 op -> dequantize, with qparams kept as buffers."""

    def _init_qparams(self, in_q: tuple[float, int], out_q: tuple[float, int], relu: bool) -> None:
        self.relu = bool(relu)
        self.register_buffer("input_scale", torch.tensor(float(in_q[0])))
        self.register_buffer("input_zero_point", torch.tensor(int(in_q[1]), dtype=torch.int32))
        self.register_buffer("output_scale", torch.tensor(float(out_q[0])))
        self.register_buffer("output_zero_point", torch.tensor(int(out_q[1]), dtype=torch.int32))
        self._warm_runtime()

    def _q(self) -> tuple[float, int, float, int]:
        q = self._runtime.get("qparams")
        if q is None:  # read once: python floats for the kernel call
            if is_tracing(self.input_scale):
                raise QuantplugError(
                    f"{type(self).__name__}: its activation qparams were not read before tracing started "
                    f"(buffers replaced after construction?); run the model once eagerly, then export it")
            q = self._runtime["qparams"] = (float(self.input_scale), int(self.input_zero_point),
                                            float(self.output_scale), int(self.output_zero_point))
        return q

    def _warm_runtime(self) -> None:
        """Read the activation qparams into Python numbers while the buffers hold real values."""
        t = getattr(self, "input_scale", None)
        if isinstance(t, Tensor) and not is_tracing(t) and t.device.type == "cpu":
            self._q()

    def _quantize(self, k: Any, x: Tensor, scale: float, zp: int) -> Tensor:
        n = self.numerics
        lo, hi = n.act_range
        if k is not None and self.uses_plugin_kernel and hasattr(k, "quantize_per_tensor"):
            if _is_nhwc(x):  # a conv's channels_last output: quantize its dense buffer, keep the layout
                return k.quantize_per_tensor(x.permute(0, 2, 3, 1), scale, zp, n.act_dtype, lo, hi).permute(0, 3, 1, 2)
            return k.quantize_per_tensor(x.contiguous(), scale, zp, n.act_dtype, lo, hi)
        return qops.quantize_per_tensor(x, scale, zp, lo, hi, n.act_dtype)

    def _dequantize(self, k: Any, q: Tensor, scale: float, zp: int) -> Tensor:
        if k is not None and self.uses_plugin_kernel and hasattr(k, "dequantize_per_tensor"):
            # conv kernels return channels_last: the elementwise kernel runs on the dense NHWC buffer
            if _is_nhwc(q):
                return k.dequantize_per_tensor(q.permute(0, 2, 3, 1), scale, zp).permute(0, 3, 1, 2)
            if q.is_contiguous():
                return k.dequantize_per_tensor(q, scale, zp)
        lo, hi = self.numerics.act_range
        return qops.dequantize_per_tensor(q, scale, zp, lo, hi, q.dtype)

    def _qparams_repr(self) -> str:
        s_in, z_in, s_out, z_out = self._q()
        return f"input=(scale={s_in:.4g}, zp={z_in}), output=(scale={s_out:.4g}, zp={z_out}), relu={self.relu}"


class QuantizedLinear(_StaticBase):
    """Static int8 ``nn.Linear`` (float in/out; int8 kernel with calibrated qparams inside)."""

    def __init__(self, in_features: int, out_features: int, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor,
                 bias: Tensor | None, input_qparams: tuple[float, int], output_qparams: tuple[float, int], *,
                 relu: bool, backend: Any, numerics: BackendNumerics) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._init_backend(backend, numerics, LINEAR_OPS, op_label="int8 linear")
        self._store_packed("packed", self.kernels().pack_linear_weight(w_q, w_scales, w_zero_points))
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous().clone())
        self._init_qparams(input_qparams, output_qparams, relu)

    @classmethod
    def from_observed(cls, obs: ObservedLinear, backend: Any, numerics: BackendNumerics) -> "QuantizedLinear":
        """Quantize the weight with the backend's observer and take the calibrated activation qparams."""
        lin = obs.float_module
        w_q, s, z = quantize_weight(lin.weight, numerics)
        return cls(lin.in_features, lin.out_features, w_q, s, z, lin.bias, _qparams(obs.input_observer),
                   _qparams(obs.output_observer), relu=obs.relu, backend=backend, numerics=numerics)

    def forward(self, x: Tensor) -> Tensor:
        """Float ``[..., in_features]`` -> float ``[..., out_features]``."""
        s_in, z_in, s_out, z_out = self._q()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        if self.uses_plugin_kernel and is_tracing(x):  # torch.export / compile: the registered op
            y_q = traced.linear(self._quantize(None, x2, s_in, z_in), s_in, z_in, packed_tensors(self, "packed"),
                                self.bias, s_out, z_out, self.relu, self.out_features, self.backend_name)
            return self._dequantize(None, y_q, s_out, z_out).reshape(*lead, self.out_features)
        k = self._runtime.get("kernels") or self.kernels()
        y_q = k.linear(self._quantize(k, x2, s_in, z_in), s_in, z_in, self._packed("packed"), self.bias,
                       s_out, z_out, relu=self.relu)
        return self._dequantize(k, y_q, s_out, z_out).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        """Shape, qparams, backend, dtypes and kernel path."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, {self._qparams_repr()}, "
                f"{self._backend_repr()}")


def _is_nhwc(t: Tensor) -> bool:
    """A 4-D tensor stored channels_last (and not also plain contiguous, as a 1x1 image is)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class QuantizedConv2d(_StaticBase):
    """Static int8 ``nn.Conv2d`` (bn folded, optional fused relu), float NCHW in/out."""

    def __init__(self, conv: nn.Conv2d, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor,
                 input_qparams: tuple[float, int], output_qparams: tuple[float, int], *, relu: bool, backend: Any,
                 numerics: BackendNumerics) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = conv.kernel_size, conv.stride, conv.dilation, conv.groups
        self._init_backend(backend, numerics, CONV_OPS, op_label="int8 conv2d")
        # Non-zero padding modes and padding='same' with even kernels are applied to the float input
        # before quantization; the kernel then runs with zero padding of its own.
        self.pre_pad: tuple[int, ...] | None = None
        self.pad_mode = "constant"
        padding = conv.padding
        rev = tuple(int(p) for p in conv._reversed_padding_repeated_twice)
        symmetric = rev[0::2] == rev[1::2]
        if conv.padding_mode != "zeros" or isinstance(padding, str) and not symmetric:
            self.pre_pad = rev
            self.pad_mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
            padding = (0, 0)
        elif isinstance(padding, str):
            padding = (rev[2], rev[0])  # (pad_h, pad_w) from the reversed (w_l, w_r, h_t, h_b)
        self.padding = _pair(padding)
        packed = self.kernels().pack_conv2d_weight(w_q, w_scales, w_zero_points, _pair(conv.stride), self.padding,
                                                   _pair(conv.dilation), conv.groups)
        self._store_packed("packed", packed)
        # the 2-d geometry the kernel runs (a Conv1d subclass keeps its own 1-d attributes for repr)
        self.geometry_2d = ((int(conv.kernel_size[0]), int(conv.kernel_size[1])), _pair(conv.stride),
                            _pair(conv.dilation))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().float().contiguous().clone())
        self._init_qparams(input_qparams, output_qparams, relu)

    @classmethod
    def from_observed(cls, obs: ObservedConv, backend: Any, numerics: BackendNumerics) -> "QuantizedConv2d":
        """Quantize the (bn-folded) weight and take the calibrated activation qparams."""
        conv = obs.float_module
        w_q, s, z = quantize_weight(conv.weight, numerics)
        return cls(conv, w_q, s, z, _qparams(obs.input_observer), _qparams(obs.output_observer), relu=obs.relu,
                   backend=backend, numerics=numerics)

    def _run(self, x: Tensor) -> Tensor:
        s_in, z_in, s_out, z_out = self._q()
        x = x.to(torch.float32)
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad, mode=self.pad_mode)
        if self.uses_plugin_kernel and is_tracing(x):  # torch.export / compile: the registered op
            (kh, kw), stride, dilation = self.geometry_2d
            x_q = self._quantize(None, x.contiguous(), s_in, z_in)
            y_q = traced.conv2d(x_q, s_in, z_in, packed_tensors(self, "packed"), self.bias, s_out, z_out, self.relu,
                                self.out_channels, [kh, kw], list(stride), list(self.padding), list(dilation),
                                self.backend_name)
            return self._dequantize(None, y_q, s_out, z_out)
        k = self._runtime.get("kernels") or self.kernels()
        x_q = self._quantize(k, x, s_in, z_in)  # NCHW or channels_last: the kernels take both
        y_q = k.conv2d(x_q, s_in, z_in, self._packed("packed"), self.bias, s_out, z_out, relu=self.relu)
        return self._dequantize(k, y_q, s_out, z_out)

    def forward(self, x: Tensor) -> Tensor:
        """Float ``[N, C, H, W]`` (or unbatched ``[C, H, W]``) -> float output."""
        if x.dim() == 3:
            return self._run(x.unsqueeze(0)).squeeze(0)
        return self._run(x)

    def extra_repr(self) -> str:
        """Geometry, qparams, backend, dtypes and kernel path."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, {self._qparams_repr()}, {self._backend_repr()}")


class QuantizedConv1d(QuantizedConv2d):
    """Static int8 ``nn.Conv1d``, run as a conv2d with a height of 1."""

    def __init__(self, conv: nn.Conv1d, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor,
                 input_qparams: tuple[float, int], output_qparams: tuple[float, int], *, relu: bool, backend: Any,
                 numerics: BackendNumerics) -> None:
        conv2d = _conv1d_as_2d(conv)
        super().__init__(conv2d, w_q.unsqueeze(2).contiguous(), w_scales, w_zero_points, input_qparams,
                         output_qparams, relu=relu, backend=backend, numerics=numerics)
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation

    @classmethod
    def from_observed(cls, obs: ObservedConv, backend: Any, numerics: BackendNumerics) -> "QuantizedConv1d":
        """Quantize the (bn-folded) weight and take the calibrated activation qparams."""
        conv = obs.float_module
        w_q, s, z = quantize_weight(conv.weight, numerics)
        return cls(conv, w_q, s, z, _qparams(obs.input_observer), _qparams(obs.output_observer), relu=obs.relu,
                   backend=backend, numerics=numerics)

    def forward(self, x: Tensor) -> Tensor:
        """Float ``[N, C, L]`` (or ``[C, L]``) -> float output."""
        if x.dim() == 2:
            return self._run(x.unsqueeze(0).unsqueeze(2)).squeeze(2).squeeze(0)
        return self._run(x.unsqueeze(2)).squeeze(2)


def _conv1d_as_2d(conv: nn.Conv1d) -> nn.Conv2d:
    """A Conv2d with kernel (1, k) and the same geometry; weights are not needed (meta device)."""
    if isinstance(conv.padding, str):
        rev = conv._reversed_padding_repeated_twice
        if conv.padding_mode == "zeros" and rev[0] == rev[1]:
            padding = (0, int(rev[0]))
        else:
            padding = conv.padding
    else:
        padding = (0, conv.padding[0])
    c2 = nn.Conv2d(conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), stride=(1, conv.stride[0]),
                   padding=padding, dilation=(1, conv.dilation[0]), groups=conv.groups, bias=conv.bias is not None,
                   padding_mode=conv.padding_mode, device="meta")
    c2.bias = conv.bias
    return c2


def check_conv_supported(conv: nn.Module) -> None:
    """Raise a clear error for conv variants the static int8 path does not run."""
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d)) or type(conv) not in (nn.Conv1d, nn.Conv2d):
        raise QuantplugError(f"static quantization runs nn.Conv1d / nn.Conv2d, not {type(conv).__name__}")
