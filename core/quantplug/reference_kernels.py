"""Pure-PyTorch kernels with the same Python API every backend plugin's kernels offer.

This is the *contract* of a backend kernel library (what the core's graph
lowering and eager modules call), written as plain integer PyTorch so it is
obviously right:

* ``pack_linear_weight(w_q, w_scales, w_zero_points) -> PackedLinearWeight``
* ``linear(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False)``
* ``linear_dynamic(x, packed, bias, per_row=False)``
* ``pack_conv2d_weight(w_q, w_scales, w_zero_points, stride, padding, dilation, groups) -> PackedConv2dWeight``
* ``conv2d(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False)``
  (NCHW logical shape; plugins may prefer channels_last memory and return it)
* ``add(a_q, a_scale, a_zero_point, b_q, b_scale, b_zero_point, out_scale, out_zero_point, relu=False)``

Plugins' C kernels are tested against it, and the eager flow uses it for the
``reference`` backend. The activation dtype and range are parameters because
backends differ (uint8 0..127 for fbgemm, int8 for xnnpack...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kernels import check_tensor, requant_params

__all__ = ["PackedLinearWeight", "PackedConv2dWeight", "ReferenceKernels"]


@dataclass
class PackedLinearWeight:
    """int8 weight [N, K] with per-output-channel scales and zero points."""

    weight: Tensor  # int8 [N, K]
    scales: Tensor  # float32 [N]
    zero_points: Tensor  # int32 [N]
    n: int
    k: int


@dataclass
class PackedConv2dWeight:
    """int8 conv weight [Cout, Cin/groups, kh, kw], per-output-channel qparams and geometry."""

    weight: Tensor  # int8 [Cout, Cin/groups, kh, kw]
    scales: Tensor  # float32 [Cout]
    zero_points: Tensor  # int32 [Cout]
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    groups: int


def _requantize(acc: Tensor, mult: Tensor, zp: int, lo: int, hi: int, dtype: torch.dtype) -> Tensor:
    v = (acc.to(torch.float32) * mult).clamp(lo - zp, hi - zp)
    return (torch.round(v) + zp).to(dtype)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ReferenceKernels:
    """The kernel API in pure PyTorch (integer arithmetic, exact)."""

    name = "quantplug.reference_kernels"

    def __init__(self, act_dtype: torch.dtype = torch.int8, act_range: tuple[int, int] = (-128, 127),
                 dynamic_symmetric: bool = False) -> None:
        self.act_dtype, self.act_range, self.dynamic_symmetric = act_dtype, act_range, dynamic_symmetric

    def selected_isa(self) -> str:
        """Always ``"pytorch"``: no SIMD dispatch here."""
        return "pytorch"

    def available_isas(self) -> list[str]:
        """Only the PyTorch path."""
        return ["pytorch"]

    def cpu_features(self) -> list[str]:
        """No CPU-specific features are used."""
        return []

    def pack_linear_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor) -> PackedLinearWeight:
        """Validate and keep the weight as is (no layout change)."""
        op = "reference.pack_linear_weight"
        check_tensor(w_q, "w_q", dtype=torch.int8, ndim=2, op=op)
        n, k = w_q.shape
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(n,), op=op)
        return PackedLinearWeight(w_q, w_scales, w_zero_points, n, k)

    def _acc(self, x_q: Tensor, x_zp, packed: PackedLinearWeight) -> Tensor:
        x = x_q.reshape(-1, packed.k).to(torch.int64) - (x_zp if isinstance(x_zp, Tensor) else int(x_zp))
        w = packed.weight.to(torch.int64) - packed.zero_points.to(torch.int64).reshape(-1, 1)
        return x @ w.t()  # exact: int64 accumulation

    def linear(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedLinearWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Static int8 linear: int32 accumulate, add int32 bias, requantize (float32, ties to even)."""
        check_tensor(x_q, "x_q", dtype=self.act_dtype, op="reference.linear")
        mult, bias_q = requant_params(x_scale, packed.scales, out_scale, bias)
        acc = self._acc(x_q, x_zero_point, packed).to(torch.int32)
        if bias_q is not None:
            acc = acc + bias_q
        lo, hi = self._out_range(out_zero_point, relu)
        out = _requantize(acc, mult, int(out_zero_point), lo, hi, self.act_dtype)
        return out.reshape(*x_q.shape[:-1], packed.n)

    def _out_range(self, out_zero_point: int, relu: bool) -> tuple[int, int]:
        lo, hi = self.act_range
        return (max(lo, int(out_zero_point)) if relu else lo), hi

    def pack_conv2d_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor, stride=(1, 1), padding=(0, 0),
                           dilation=(1, 1), groups: int = 1) -> PackedConv2dWeight:
        """Validate and keep the conv weight with its geometry."""
        op = "reference.pack_conv2d_weight"
        check_tensor(w_q, "w_q", dtype=torch.int8, ndim=4, op=op)
        cout = w_q.shape[0]
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(cout,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(cout,), op=op)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        dh, dw = _pair(dilation)
        return PackedConv2dWeight(w_q, w_scales, w_zero_points, sh, sw, ph, pw, dh, dw, int(groups))

    def conv2d(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedConv2dWeight, bias: Tensor | None,
               out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Static int8 conv2d; integer-exact (float64 conv of integers < 2**53)."""
        if x_q.dtype != self.act_dtype or x_q.dim() != 4:
            check_tensor(x_q, "x_q", dtype=self.act_dtype, ndim=4, op="reference.conv2d")
        x = x_q.to(torch.float64) - int(x_zero_point)
        w = packed.weight.to(torch.float64) - packed.zero_points.to(torch.float64).reshape(-1, 1, 1, 1)
        acc = torch.nn.functional.conv2d(x, w, None, (packed.stride_h, packed.stride_w), (packed.pad_h, packed.pad_w),
                                         (packed.dilation_h, packed.dilation_w), packed.groups)
        mult, bias_q = requant_params(x_scale, packed.scales, out_scale, bias)
        acc = acc.to(torch.int64)
        if bias_q is not None:
            acc = acc + bias_q.reshape(1, -1, 1, 1)
        lo, hi = self._out_range(out_zero_point, relu)
        return _requantize(acc.to(torch.int32), mult.reshape(1, -1, 1, 1), int(out_zero_point), lo, hi, self.act_dtype)

    def add(self, a_q: Tensor, a_scale: float, a_zero_point: int, b_q: Tensor, b_scale: float, b_zero_point: int,
            out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Quantized add: dequantize both in float32, add, requantize (ties to even)."""
        a = (a_q.to(torch.int32) - int(a_zero_point)).to(torch.float32) * torch.tensor(a_scale, dtype=torch.float32)
        b = (b_q.to(torch.int32) - int(b_zero_point)).to(torch.float32) * torch.tensor(b_scale, dtype=torch.float32)
        lo, hi = self._out_range(out_zero_point, relu)
        v = ((a + b) * torch.reciprocal(torch.tensor(out_scale, dtype=torch.float32))).clamp(lo - out_zero_point, hi - out_zero_point)
        return (torch.round(v) + int(out_zero_point)).to(self.act_dtype)

    def linear_dynamic(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None, per_row: bool = False) -> Tensor:
        """fp32 in, activations quantized per call (per tensor or per row), fp32 out."""
        from .affine import choose_qparams

        check_tensor(x, "x", dtype=torch.float32, op="reference.linear_dynamic")
        flat = x.reshape(-1, packed.k)
        lo, hi = self.act_range
        if per_row:
            mn, mx = flat.amin(1), flat.amax(1)
        else:
            mn, mx = flat.amin(), flat.amax()
        scale, zp = choose_qparams(mn, mx, quant_min=lo, quant_max=hi, symmetric=self.dynamic_symmetric, dtype=self.act_dtype)
        scale, zp = scale.reshape(-1, 1), zp.reshape(-1, 1)
        x_q = (torch.round(flat * torch.reciprocal(scale)) + zp).clamp(lo, hi)
        acc = (x_q.to(torch.int64) - zp) @ (packed.weight.to(torch.int64) - packed.zero_points.to(torch.int64).reshape(-1, 1)).t()
        out = acc.to(torch.float32) * (scale * packed.scales.reshape(1, -1))
        if bias is not None:
            out = out + bias
        return out.reshape(*x.shape[:-1], packed.n)
