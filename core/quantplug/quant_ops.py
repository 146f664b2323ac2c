"""The ``quantplug::`` ops of the reference representation.

A converted model in reference form has explicit quantize / dequantize calls
around float ops. They are ``torch.library`` ops (declared with
``Library.define``/``impl``, about 2 us a call, rather than
``torch.library.custom_op``, about 9 us) with fake implementations, so a
converted model still runs through ``torch.export`` and ``torch.compile``,
and lowering can find them by target.

Numerics are those of :mod:`quantplug.affine`: round half to even of
``x * (1/scale)``, then add the zero point and clamp. Every C kernel matches
them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LIB", "ops"]

LIB = torch.library.Library("quantplug", "DEF")

LIB.define("quantize_per_tensor(Tensor input, float scale, int zero_point, int quant_min, int quant_max, ScalarType dtype) -> Tensor")
LIB.define("dequantize_per_tensor(Tensor input, float scale, int zero_point, int quant_min, int quant_max, ScalarType dtype) -> Tensor")
LIB.define("quantize_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, int quant_min, int quant_max, ScalarType dtype) -> Tensor")
LIB.define("dequantize_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, int quant_min, int quant_max, ScalarType dtype) -> Tensor")
LIB.define("dequantize_per_group(Tensor input, Tensor scales, Tensor zero_points, int group_size, int quant_min, int quant_max) -> Tensor")
LIB.define("quantize_dequantize_dynamic(Tensor input, int quant_min, int quant_max, ScalarType dtype, bool per_row, bool symmetric) -> Tensor")


def _inv(scale: float) -> Tensor:
    return torch.reciprocal(torch.tensor(scale, dtype=torch.float32))


def _quantize_per_tensor(x: Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int, dtype: torch.dtype) -> Tensor:
    q = torch.round(x.to(torch.float32) * _inv(scale)) + zero_point
    return q.clamp_(quant_min, quant_max).to(dtype)


def _dequantize_per_tensor(q: Tensor, scale: float, zero_point: int, quant_min: int, quant_max: int, dtype: torch.dtype) -> Tensor:
    return (q.to(torch.int32) - zero_point).to(torch.float32) * torch.tensor(scale, dtype=torch.float32)


def _channel_shape(x: Tensor, axis: int) -> list[int]:
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return shape


def _quantize_per_channel(x: Tensor, scales: Tensor, zero_points: Tensor, axis: int, quant_min: int, quant_max: int, dtype: torch.dtype) -> Tensor:
    shape = _channel_shape(x, axis)
    inv = torch.reciprocal(scales.to(torch.float32)).reshape(shape)
    q = torch.round(x.to(torch.float32) * inv) + zero_points.reshape(shape)
    return q.clamp_(quant_min, quant_max).to(dtype)


def _dequantize_per_channel(q: Tensor, scales: Tensor, zero_points: Tensor, axis: int, quant_min: int, quant_max: int, dtype: torch.dtype) -> Tensor:
    shape = _channel_shape(q, axis)
    return (q.to(torch.int32) - zero_points.reshape(shape)).to(torch.float32) * scales.to(torch.float32).reshape(shape)


def _dequantize_per_group(q: Tensor, scales: Tensor, zero_points: Tensor, group_size: int, quant_min: int, quant_max: int) -> Tensor:
    rows, cols = q.shape[0], q.shape[-1]
    g = q.reshape(rows, cols // group_size, group_size).to(torch.int32)
    out = (g - zero_points.reshape(rows, -1, 1)).to(torch.float32) * scales.to(torch.float32).reshape(rows, -1, 1)
    return out.reshape(q.shape)


def _quantize_dequantize_dynamic(x: Tensor, quant_min: int, quant_max: int, dtype: torch.dtype, per_row: bool, symmetric: bool) -> Tensor:
    """Dynamic activation quantization in reference form: qparams from this call's data."""
    from .affine import choose_qparams

    xf = x.to(torch.float32)
    stats = xf.detach()  # qparams are data, not a function to differentiate
    if per_row:
        flat = stats.reshape(-1, xf.shape[-1])
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)
    else:
        lo, hi = stats.amin(), stats.amax()
    scale, zp = choose_qparams(lo, hi, quant_min=quant_min, quant_max=quant_max, symmetric=symmetric, dtype=dtype)
    if per_row:
        flat = xf.reshape(-1, xf.shape[-1])
        q = _quantize_per_channel(flat, scale, zp, 0, quant_min, quant_max, dtype)
        return _dequantize_per_channel(q, scale, zp, 0, quant_min, quant_max, dtype).reshape(x.shape)
    q = _quantize_per_tensor(xf, float(scale), int(zp), quant_min, quant_max, dtype)
    return _dequantize_per_tensor(q, float(scale), int(zp), quant_min, quant_max, dtype)


for _name, _fn in {
    "quantize_per_tensor": _quantize_per_tensor,
    "dequantize_per_tensor": _dequantize_per_tensor,
    "quantize_per_channel": _quantize_per_channel,
    "dequantize_per_channel": _dequantize_per_channel,
    "dequantize_per_group": _dequantize_per_group,
    "quantize_dequantize_dynamic": _quantize_dequantize_dynamic,
}.items():
    LIB.impl(_name, _fn, "CompositeExplicitAutograd")


@torch.library.register_fake("quantplug::quantize_per_tensor", lib=LIB)
def _(x, scale, zero_point, quant_min, quant_max, dtype):
    return torch.empty_like(x, dtype=dtype)


@torch.library.register_fake("quantplug::quantize_per_channel", lib=LIB)
def _(x, scales, zero_points, axis, quant_min, quant_max, dtype):
    return torch.empty_like(x, dtype=dtype)


for _name in ("dequantize_per_tensor", "dequantize_per_channel"):
    torch.library.register_fake(f"quantplug::{_name}", lambda q, *args: torch.empty_like(q, dtype=torch.float32), lib=LIB)
torch.library.register_fake("quantplug::dequantize_per_group", lambda q, *args: torch.empty_like(q, dtype=torch.float32), lib=LIB)
torch.library.register_fake("quantplug::quantize_dequantize_dynamic", lambda x, *args: torch.empty_like(x), lib=LIB)

#: ``ops.quantize_per_tensor`` etc.: the OpOverloadPackets of this library.
ops = torch.ops.quantplug
