"""Fake-quantized modules for module-swap QAT (``quantplug.prepare_qat``).

Each module computes in float what the backend's converted module will
compute in integers, so training sees the quantization error the deployed
model will have:

* weights: the backend's weight range and symmetry (fbgemm int8 -128..127,
  xnnpack -127..127, qnnpack uint8 asymmetric), per channel, or int4 groups;
* static target: the input and output fake-quantized with the backend's
  activation dtype and range (fbgemm reduce_range 0..127...), relu fused
  before the output fake-quant as the kernel clamps;
* dynamic target: the input fake-quantized per call (per row or per tensor)
  with the backend's dynamic activation range;
* conv-bn: BN folding simulated while training (the weight is fake-quantized
  *after* scaling by ``gamma / sqrt(running_var + eps)``, as the folded int8
  conv will use it), BN still learning from batch statistics.

Modules are plain ``nn.Module`` subclasses holding ordinary parameters and
buffers, so they work under DDP / FSDP like any other layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..affine import choose_qparams
from ._common import BackendNumerics

__all__ = [
    "QATLinear",
    "QATConv2d",
    "QATEmbedding",
    "DynamicFakeQuantize",
    "GroupwiseFakeQuantize",
    "QATNumerics",
]


class QATNumerics:
    """Builds the fake-quantize modules for one backend and one ``QATConfig`` (not saved with the model)."""

    def __init__(self, static: BackendNumerics, dynamic: BackendNumerics | None, config: Any, *,
                 row_equalize: bool = False) -> None:
        self.static, self.dynamic, self.config = static, dynamic, config
        #: the backend's dynamic kernel is per tensor only, so the converted per-row module equalizes rows
        self.row_equalize = bool(row_equalize)

    def _observer_cls(self, per_channel: bool):
        from .. import observers as ob

        return ob.MovingAveragePerChannelMinMaxObserver if per_channel else ob.MovingAverageMinMaxObserver

    def weight_fake_quant(self, channels: int) -> nn.Module:
        """Fake quant for an int8 weight with ``channels`` output channels (backend numerics)."""
        from .. import fake_quant as fq

        n = self.static
        if not self.config.learn_ranges and n.weight_spec is not None:
            return n.weight_spec.observer_or_fake_quant_ctr()  # the backend's own QAT weight fake-quant
        lo, hi = n.weight_range
        per_channel = n.weight_per_channel
        qs = ((torch.per_channel_symmetric if n.weight_symmetric else torch.per_channel_affine) if per_channel else
              (torch.per_tensor_symmetric if n.weight_symmetric else torch.per_tensor_affine))
        kwargs: dict[str, Any] = dict(dtype=n.weight_dtype, qscheme=qs, quant_min=lo, quant_max=hi)
        if per_channel:
            kwargs["ch_axis"] = 0
        if n.scale_min is not None:
            kwargs["scale_min"] = n.scale_min
        obs = self._observer_cls(per_channel).with_args(**kwargs)
        if self.config.learn_ranges:
            return fq.LearnableFakeQuantize(observer=obs, channel_len=channels if per_channel else -1)
        return fq.FakeQuantize(observer=obs)

    def act_fake_quant(self) -> nn.Module:
        """Fake quant for a static activation (backend dtype and range, moving-average observer)."""
        from .. import fake_quant as fq

        n = self.static
        if not self.config.learn_ranges and n.act_spec is not None:
            return n.act_spec.observer_or_fake_quant_ctr()
        lo, hi = n.act_range
        kwargs: dict[str, Any] = dict(dtype=n.act_dtype, quant_min=lo, quant_max=hi,
                                      qscheme=torch.per_tensor_symmetric if n.act_symmetric else torch.per_tensor_affine)
        if n.scale_min is not None:
            kwargs["scale_min"] = n.scale_min
        obs = self._observer_cls(False).with_args(**kwargs)
        if self.config.learn_ranges:
            return fq.LearnableFakeQuantize(observer=obs)
        return fq.FakeQuantize(observer=obs)

    def dynamic_fake_quant(self) -> "DynamicFakeQuantize":
        """Per-call fake quant with the backend's dynamic activation numerics."""
        n = self.dynamic or self.static
        return DynamicFakeQuantize(n.act_range, n.act_dtype, symmetric=n.act_symmetric, per_row=self.config.per_row,
                                   scale_min=n.scale_min, row_equalize=self.row_equalize and self.config.per_row)


class DynamicFakeQuantize(nn.Module):
    """Fake quantization with qparams from each call's own data (per row or per tensor).

    Per row it simulates the converted module: a backend with per-row
    kernels quantizes each row with its own asymmetric qparams (range widened
    to include 0). On a per-tensor kernel (``row_equalize=True``) the
    converted module maps each row affinely onto [-1, 1] and the kernel
    quantizes that per tensor, a grid that spans exactly the row's
    [min, max] (not widened to 0); this module reproduces that grid.
    Gradients pass straight through (torch's fused fake-quantize ops).
    """

    def __init__(self, act_range: tuple[int, int], dtype: torch.dtype, *, symmetric: bool = False,
                 per_row: bool = True, scale_min: float | None = None, row_equalize: bool = False) -> None:
        super().__init__()
        self.quant_min, self.quant_max = int(act_range[0]), int(act_range[1])
        self.dtype, self.symmetric, self.per_row, self.scale_min = dtype, symmetric, per_row, scale_min
        self.row_equalize = bool(row_equalize and per_row)
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))

    def _equalized(self, flat: Tensor) -> Tensor:
        # Same steps as DynamicLinear._row_equalized: x' = (x - c) / r, per-tensor quantization of x'.
        f = flat.detach().to(torch.float32)
        hi, lo = f.amax(1, keepdim=True), f.amin(1, keepdim=True)
        center, radius = (hi + lo) * 0.5, (hi - lo) * 0.5
        inv = torch.where(radius > 0, torch.reciprocal(radius), torch.ones_like(radius))
        xe = torch.addcmul(-center * inv, flat, inv)  # bit-identical to the converted module's x'
        e = xe.detach()
        scale, zp = choose_qparams(e.amin(), e.amax(), quant_min=self.quant_min, quant_max=self.quant_max,
                                   symmetric=self.symmetric, scale_min=self.scale_min, dtype=self.dtype)
        q = torch.fake_quantize_per_tensor_affine(xe, float(scale), int(zp), self.quant_min, self.quant_max)
        return q * radius + center

    def forward(self, x: Tensor) -> Tensor:
        """``x`` snapped to this call's grid."""
        if self.fake_quant_enabled[0] == 0 or x.numel() == 0:
            return x
        if getattr(self, "row_equalize", False):
            return self._equalized(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        flat = x.reshape(-1, x.shape[-1]) if self.per_row else x.reshape(1, -1)
        f = flat.detach().to(torch.float32)
        lo, hi = f.amin(1), f.amax(1)  # faster than aminmax(dim=1) on CPU
        scale, zp = choose_qparams(lo, hi, quant_min=self.quant_min, quant_max=self.quant_max,
                                   symmetric=self.symmetric, scale_min=self.scale_min, dtype=self.dtype)
        out = torch.fake_quantize_per_channel_affine(flat, scale, zp, 0, self.quant_min, self.quant_max)
        return out.reshape(x.shape)

    def extra_repr(self) -> str:
        """Range and granularity."""
        gran = "per-row (rows equalized)" if getattr(self, "row_equalize", False) else (
            "per-row" if self.per_row else "per-tensor")
        return f"quant_min={self.quant_min}, quant_max={self.quant_max}, {gran}, symmetric={self.symmetric}"


class GroupwiseFakeQuantize(nn.Module):
    """Symmetric int4 per-group fake quantization of a weight ``[N, K]`` (groups along K).

    Qparams follow the current weight (``scale = max|w| / 7.5`` per group,
    the converted module's choice), or, with ``learnable=True``, are LSQ
    parameters initialised from it on the first call.
    """

    def __init__(self, out_features: int, in_features: int, group_size: int, *, learnable: bool = False) -> None:
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"in_features={in_features} is not a multiple of group_size={group_size}")
        self.group_size, self.learnable = int(group_size), bool(learnable)
        self.quant_min, self.quant_max = -8, 7
        groups = out_features * (in_features // group_size)
        self.scale = nn.Parameter(torch.ones(groups), requires_grad=self.learnable)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))

    def _minmax_scale(self, w: Tensor) -> Tensor:
        g = w.detach().to(torch.float32).reshape(-1, self.group_size)
        scale, _ = choose_qparams(g.amin(1), g.amax(1), quant_min=self.quant_min, quant_max=self.quant_max,
                                  symmetric=True, dtype="int4")
        return scale

    def calculate_qparams(self, w: Tensor) -> Tensor:
        """Group scales ``[N, K / group_size]`` the converted module should use for weight ``w``."""
        s = self.scale.detach().clamp_min(1e-12) if self.learnable and bool(self.initialized) else self._minmax_scale(w)
        return s.reshape(w.shape[0], -1).clone()

    def forward(self, w: Tensor) -> Tensor:
        """``w`` on its int4 grid."""
        if self.fake_quant_enabled[0] == 0:
            return w
        groups = w.reshape(-1, self.group_size)
        zp = torch.zeros(groups.shape[0], dtype=torch.int32, device=w.device)
        if not self.learnable:
            scale = self._minmax_scale(w)
            return torch.fake_quantize_per_channel_affine(groups, scale, zp, 0, -8, 7).reshape(w.shape)
        if not bool(self.initialized):
            with torch.no_grad():
                self.scale.copy_(self._minmax_scale(w))
                self.initialized.fill_(True)
        grad_factor = 1.0 / math.sqrt(self.group_size * self.quant_max)
        return torch._fake_quantize_learnable_per_channel_affine(
            groups, self.scale, zp.to(torch.float32), 0, -8, 7, grad_factor).reshape(w.shape)

    def extra_repr(self) -> str:
        """Group size and whether scales learn."""
        return f"int4 symmetric, group_size={self.group_size}, learnable={self.learnable}"


def _fq_set(module: nn.Module, input_fq: nn.Module | None, output_fq: nn.Module | None, relu: bool) -> None:
    module.input_fake_quant = input_fq
    module.output_fake_quant = output_fq
    module.relu = bool(relu)


class QATLinear(nn.Linear):
    """``nn.Linear`` training with fake-quantized weight (and activations, per the target).

    Attributes: ``weight_fake_quant``, ``input_fake_quant`` (static: observer
    fake-quant; dynamic: :class:`DynamicFakeQuantize`; weight-only: ``None``),
    ``output_fake_quant`` (static only), ``relu`` (fused), ``target``,
    ``weight_dtype``, ``backend_name``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, target: str = "static",
                 weight_dtype: str = "int8", group_size: int | None = None, backend_name: str = "reference",
                 relu: bool = False, numerics: QATNumerics | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.target, self.weight_dtype, self.group_size, self.backend_name = target, weight_dtype, group_size, backend_name
        self.per_row = bool(getattr(numerics.config, "per_row", True)) if numerics is not None else True
        if weight_dtype == "int4":
            self.weight_fake_quant = GroupwiseFakeQuantize(out_features, in_features, group_size,
                                                           learnable=bool(numerics and numerics.config.learn_ranges))
        else:
            self.weight_fake_quant = numerics.weight_fake_quant(out_features)
        input_fq = output_fq = None
        if target == "static":
            input_fq, output_fq = numerics.act_fake_quant(), numerics.act_fake_quant()
        elif target == "dynamic":
            input_fq = numerics.dynamic_fake_quant()
        _fq_set(self, input_fq, output_fq, relu)

    @classmethod
    def from_float(cls, mod: nn.Linear, numerics: QATNumerics, *, target: str, weight_dtype: str = "int8",
                   group_size: int | None = None, relu: bool = False) -> "QATLinear":
        """A QAT copy of ``mod`` sharing its parameters' values."""
        q = cls(mod.in_features, mod.out_features, mod.bias is not None, target=target, weight_dtype=weight_dtype,
                group_size=group_size, backend_name=numerics.static.backend, relu=relu, numerics=numerics)
        q.weight = mod.weight
        q.bias = mod.bias
        return q

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantized linear (+ fused relu)."""
        if self.input_fake_quant is not None:
            x = self.input_fake_quant(x)
        y = F.linear(x, self.weight_fake_quant(self.weight), self.bias)
        if self.relu:
            y = F.relu(y)
        if self.output_fake_quant is not None:
            y = self.output_fake_quant(y)
        return y

    def extra_repr(self) -> str:
        """Shapes, target and backend."""
        return (super().extra_repr() + f", target={self.target}, weight={self.weight_dtype}"
                + (f" group_size={self.group_size}" if self.group_size else "") + f", relu={self.relu}, "
                f"backend={self.backend_name}")


class QATConv2d(nn.Conv2d):
    """``nn.Conv2d`` (optionally with a BatchNorm2d folded by simulation, and relu) with fake quantization.

    With ``bn``: ``y = bn(conv(x, fq(w * g)) / g + b)`` where
    ``g = gamma / sqrt(running_var + eps)``; in eval mode this equals the
    folded int8 conv the converted model runs.
    """

    def __init__(self, conv: nn.Conv2d, numerics: QATNumerics, *, bn: nn.BatchNorm2d | None = None,
                 relu: bool = False) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                         padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                         padding_mode=conv.padding_mode, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        self.bn = bn
        self.backend_name, self.target = numerics.static.backend, numerics.config.target
        self.weight_fake_quant = numerics.weight_fake_quant(conv.out_channels)
        _fq_set(self, numerics.act_fake_quant() if self.target == "static" else None,
                numerics.act_fake_quant() if self.target == "static" else None, relu)

    def _bn_factor(self) -> Tensor:
        bn = self.bn
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        return gamma / torch.sqrt(bn.running_var + bn.eps)

    def forward(self, x: Tensor) -> Tensor:
        """Fake-quantized conv (+ simulated bn folding, + relu)."""
        if self.input_fake_quant is not None:
            x = self.input_fake_quant(x)
        if self.bn is None:
            y = self._conv_forward(x, self.weight_fake_quant(self.weight), self.bias)
        else:
            factor = self._bn_factor()
            w = self.weight_fake_quant(self.weight * factor.reshape(-1, 1, 1, 1))
            y = self._conv_forward(x, w, None) / factor.reshape(1, -1, 1, 1)
            if self.bias is not None:
                y = y + self.bias.reshape(1, -1, 1, 1)
            y = self.bn(y)
        if self.relu:
            y = F.relu(y)
        if self.output_fake_quant is not None:
            y = self.output_fake_quant(y)
        return y

    def folded_weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias with bn folded in (running statistics): what the converted conv uses."""
        if self.bn is None:
            return self.weight.detach(), None if self.bias is None else self.bias.detach()
        with torch.no_grad():
            factor = self._bn_factor()
            w = self.weight * factor.reshape(-1, 1, 1, 1)
            b0 = self.bias if self.bias is not None else torch.zeros_like(factor)
            beta = self.bn.bias if self.bn.bias is not None else torch.zeros_like(factor)
            b = (b0 - self.bn.running_mean) * factor + beta
        return w.detach(), b.detach()

    def extra_repr(self) -> str:
        """Geometry, fused bn/relu, target and backend."""
        return (super().extra_repr() + f", bn={'folded-sim' if self.bn is not None else None}, relu={self.relu}, "
                f"target={self.target}, backend={self.backend_name}")


class QATEmbedding(nn.Embedding):
    """``nn.Embedding`` with int8 per-row asymmetric fake-quantized rows (as :class:`QuantizedEmbedding`)."""

    def __init__(self, mod: nn.Embedding, backend_name: str) -> None:
        super().__init__(mod.num_embeddings, mod.embedding_dim, padding_idx=mod.padding_idx, max_norm=mod.max_norm,
                         norm_type=mod.norm_type, scale_grad_by_freq=mod.scale_grad_by_freq, sparse=mod.sparse,
                         _weight=mod.weight)
        self.backend_name = backend_name
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))

    def _fq_weight(self) -> Tensor:
        w = self.weight
        if self.fake_quant_enabled[0] == 0:
            return w
        wd = w.detach().to(torch.float32)
        lo, hi = wd.amin(1), wd.amax(1)
        scale, zp = choose_qparams(lo, hi, quant_min=-128, quant_max=127, symmetric=False, dtype=torch.int8)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -128, 127)

    def forward(self, indices: Tensor) -> Tensor:
        """Look up fake-quantized rows (only the rows used get gradients, as usual)."""
        return F.embedding(indices, self._fq_weight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        """Size and scheme."""
        return super().extra_repr() + f", weight=int8 per-row asymmetric (fake), backend={self.backend_name}"
