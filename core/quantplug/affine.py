"""Affine (scale / zero-point) quantization math in pure PyTorch.

This module is the numerical reference of quantplug: every C kernel, in the
core and in the plugins, is tested bit for bit against these functions. The
arithmetic is spelled out so that a scalar C loop can reproduce it exactly
(see ``csrc/include/quantplug/qp_requant.h``):

* **quantize**: ``q = clamp(round_half_even(x * inv_scale) + zero_point, quant_min, quant_max)``
  with ``inv_scale = 1.0f / scale`` computed once in float32 and the product
  taken in float32. This is also what torch's ``quantize_per_tensor`` and
  ``fake_quantize_per_tensor_affine`` compute, so the results agree with
  torch exactly. NaN maps to the zero point (C: ``qp_quantize``).
* **dequantize**: ``x = float32(q - zero_point) * scale`` (float32 multiply).
* **requantize** (int32 accumulator to the output grid):
  ``q = clamp(round_half_even(float32(acc) * multiplier) + zero_point, quant_min, quant_max)``
  with ``multiplier = input_scale * weight_scale / output_scale`` in float32.

Sub-byte dtypes: ``"int4"`` / ``"uint4"`` (the strings used by
:mod:`quantplug.specs`) and ``torch.int4`` / ``torch.uint4`` are accepted
everywhere a dtype is; their values live in int8 / uint8 storage and are packed
two per byte only by :func:`pack_int4`.

Only torch and the standard library are imported here, so the module can be
used on its own.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "quant_range",
    "normalize_dtype",
    "storage_dtype",
    "choose_qparams",
    "quantize_affine",
    "dequantize_affine",
    "fake_quantize_affine",
    "pack_int4",
    "unpack_int4",
    "pack_uint4",
    "unpack_uint4",
    "quantize_bias",
    "requantize_reference",
    "sqnr",
]

#: Default lower bound of a scale: float32 machine epsilon, as torch.ao observers use.
EPS = torch.finfo(torch.float32).eps

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

QDType = torch.dtype | str

# Canonical names: plain torch integer dtypes, or the strings "int4"/"uint4".
_RANGES: dict[Any, tuple[int, int]] = {
    torch.int8: (-128, 127),
    torch.uint8: (0, 255),
    torch.int32: (INT32_MIN, INT32_MAX),
    "int4": (-8, 7),
    "uint4": (0, 15),
}
_STORAGE: dict[Any, torch.dtype] = {
    torch.int8: torch.int8,
    torch.uint8: torch.uint8,
    torch.int32: torch.int32,
    "int4": torch.int8,
    "uint4": torch.uint8,
}
# Aliases users bring from torch.ao (quantized dtypes) and torch's sub-byte dtypes.
_ALIASES: dict[Any, Any] = {
    torch.qint8: torch.int8,
    torch.quint8: torch.uint8,
    torch.qint32: torch.int32,
}
for _name in ("int4", "uint4"):
    if isinstance(getattr(torch, _name, None), torch.dtype):
        _ALIASES[getattr(torch, _name)] = _name


def normalize_dtype(dtype: QDType) -> QDType:
    """Canonical form of a quantized dtype.

    ``torch.qint8 -> torch.int8``, ``torch.quint8 -> torch.uint8``,
    ``torch.qint32 -> torch.int32``, ``torch.int4 -> "int4"``,
    ``torch.uint4 -> "uint4"``; canonical values are returned unchanged.

    :raises ValueError: for anything that is not a supported quantized dtype.
    """
    d = _ALIASES.get(dtype, dtype)
    if d not in _RANGES:
        raise ValueError(
            f"unsupported quantized dtype {dtype!r}; use torch.int8, torch.uint8, torch.int32, "
            f"'int4' / torch.int4 or 'uint4' / torch.uint4"
        )
    return d


def storage_dtype(dtype: QDType) -> torch.dtype:
    """The torch dtype that holds values of ``dtype`` (int8 for int4, uint8 for uint4)."""
    return _STORAGE[normalize_dtype(dtype)]


def _is_signed(dtype: QDType) -> bool:
    return _RANGES[normalize_dtype(dtype)][0] < 0


def quant_range(dtype: QDType, *, reduce_range: bool = False, symmetric_narrow: bool = False) -> tuple[int, int]:
    """``(quant_min, quant_max)`` of a quantized dtype.

    int8 -> (-128, 127), uint8 -> (0, 255), int32 -> (-2**31, 2**31 - 1),
    int4 -> (-8, 7), uint4 -> (0, 15).

    :param reduce_range: drop one bit, as torch.ao does for x86 (``vpmaddubsw``
        overflow): both bounds are floor-halved, so int8 -> (-64, 63),
        uint8 -> (0, 127).
    :param symmetric_narrow: make a signed range symmetric around 0 by giving up
        the most negative value (int8 -> (-127, 127)), as XNNPACK's weights use.
    :raises ValueError: unknown dtype, or ``symmetric_narrow`` on an unsigned dtype.
    """
    lo, hi = _RANGES[normalize_dtype(dtype)]
    if reduce_range:
        lo, hi = lo // 2, hi // 2
    if symmetric_narrow:
        if lo >= 0:
            raise ValueError(f"symmetric_narrow applies to signed dtypes, not {dtype!r}")
        lo = -hi
    return lo, hi


# ------------------------------------------------------------- validation --


def _check_qrange(quant_min: Any, quant_max: Any, dtype: QDType | None = None, *,
                  strict: bool = False) -> tuple[int, int]:
    """Validate an integer range (and that it fits ``dtype``); returns it as Python ints."""
    try:
        quant_min, quant_max = operator.index(quant_min), operator.index(quant_max)
    except TypeError:
        raise ValueError(f"quant_min and quant_max must be integers, got {quant_min!r} and {quant_max!r}") from None
    if quant_min > quant_max or (strict and quant_min == quant_max):
        rel = "<" if strict else "<="
        raise ValueError(f"quant_min must be {rel} quant_max, got quant_min={quant_min}, quant_max={quant_max}")
    if dtype is not None:
        lo, hi = _RANGES[normalize_dtype(dtype)]
        if quant_min < lo or quant_max > hi:
            raise ValueError(
                f"[quant_min, quant_max] = [{quant_min}, {quant_max}] does not fit dtype {dtype!r} (range [{lo}, {hi}])"
            )
    return quant_min, quant_max


def _f32(v: Any, name: str) -> Tensor:
    t = v if isinstance(v, Tensor) else torch.as_tensor(v)
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real number tensor, got dtype {t.dtype}")
    return t.to(torch.float32)


def _check_scale(scale: Tensor) -> None:
    if scale.numel() == 0:
        raise ValueError("scale is empty")
    bad = ~(torch.isfinite(scale) & (scale > 0))
    if bool(bad.any()):
        first = scale.reshape(-1)[bad.reshape(-1)][0].item()
        raise ValueError(f"scale must be positive and finite, got {first} (at least one entry of {tuple(scale.shape)})")


def _zero_point_tensor(zero_point: Any) -> Tensor:
    z = zero_point if isinstance(zero_point, Tensor) else torch.as_tensor(zero_point)
    if z.is_floating_point():
        if not bool(torch.isfinite(z).all()) or bool((z != torch.round(z)).any()):
            raise ValueError(f"zero_point must hold integers, got {z}")
    elif z.dtype == torch.bool or z.is_complex():
        raise ValueError(f"zero_point must hold integers, got dtype {z.dtype}")
    return z.to(torch.int64)


def _check_zero_point(z: Tensor, quant_min: int, quant_max: int) -> None:
    if bool(((z < quant_min) | (z > quant_max)).any()):
        raise ValueError(f"zero_point must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}], got {z.reshape(-1).tolist()[:8]}")


def _qparam_views(x_shape: torch.Size, scale: Tensor, z: Tensor, axis: int | None, group_size: int | None):
    """Reshape ``x`` (as a shape), scale and zero point so that they broadcast.

    Returns ``(work_shape, scale_view, zero_point_view)``: ``x`` is viewed as
    ``work_shape`` for the computation and reshaped back afterwards.
    """
    ndim = len(x_shape)
    if axis is not None and group_size is not None:
        raise ValueError("give either axis (per-channel) or group_size (per-group), not both")
    if group_size is not None:
        if not isinstance(group_size, int) or group_size <= 0:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
        if ndim == 0:
            raise ValueError("per-group quantization needs a tensor with at least one dimension")
        cols = x_shape[-1]
        if cols % group_size:
            raise ValueError(f"group_size={group_size} does not divide the last dimension ({cols})")
        n_groups = math.prod(x_shape) // group_size
        for name, t in (("scale", scale), ("zero_point", z)):
            if t.numel() != n_groups and not (name == "zero_point" and t.numel() == 1):
                raise ValueError(
                    f"per-group {name} must have one entry per group ({n_groups} = rows x {cols // group_size}), "
                    f"got shape {tuple(t.shape)}"
                )
        work = (n_groups, group_size)
        return work, scale.reshape(-1, 1), z.reshape(-1, 1) if z.numel() > 1 else z.reshape(1, 1)
    if axis is not None:
        if not isinstance(axis, int) or not -ndim <= axis < ndim:
            raise ValueError(f"axis={axis!r} is out of range for a {ndim}-d tensor")
        axis %= ndim
        channels = x_shape[axis]
        shape = [1] * ndim
        shape[axis] = channels
        for name, t in (("scale", scale), ("zero_point", z)):
            if t.numel() != channels and not (name == "zero_point" and t.numel() == 1):
                raise ValueError(
                    f"per-channel {name} must have {channels} entries (size of axis {axis}), got shape {tuple(t.shape)}"
                )
        return tuple(x_shape), scale.reshape(shape), z.reshape(shape) if z.numel() > 1 else z.reshape([1] * ndim)
    if scale.numel() != 1 or z.numel() != 1:
        raise ValueError(
            f"per-tensor quantization takes one scale and one zero_point, got shapes {tuple(scale.shape)} and "
            f"{tuple(z.shape)}; pass axis= (per-channel) or group_size= (per-group)"
        )
    return tuple(x_shape), scale.reshape(()), z.reshape(())


def _quantized_values(x: Tensor, scale: Any, zero_point: Any, quant_min: int, quant_max: int,
                      axis: int | None, group_size: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Integer grid values of ``x`` held in a float tensor, plus the broadcast qparams.

    The working float type is float32, or float64 when the range does not fit
    float32's 24-bit integers (int32 outputs): the product ``x * inv_scale``
    and its rounding are float32 in both cases, only the zero-point add and
    the clamp are widened so that they stay exact.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a tensor, got {type(x).__name__}")
    s = _f32(scale, "scale")
    _check_scale(s)
    z = _zero_point_tensor(zero_point)
    _check_zero_point(z, quant_min, quant_max)
    work, s_v, z_v = _qparam_views(x.shape, s, z, axis, group_size)
    wide = torch.float32 if max(abs(quant_min), abs(quant_max)) < 2**24 else torch.float64
    xf = x.detach().to(torch.float32).reshape(work)
    inv = torch.reciprocal(s_v)  # 1.0f / scale, exactly as the C kernels and torch compute it
    v = torch.round(xf * inv)  # float32 product, round half to even
    zw = z_v.to(wide)
    q = (v.to(wide) + zw).clamp_(quant_min, quant_max)
    q = torch.where(torch.isnan(xf), zw, q)  # NaN -> zero point, like qp_quantize
    return q, s_v, zw


# ------------------------------------------------------------------- qparams --


def choose_qparams(
    min_val: Any,
    max_val: Any,
    *,
    quant_min: int,
    quant_max: int,
    symmetric: bool,
    eps: float = EPS,
    scale_min: float | None = None,
    dtype: QDType = torch.int8,
) -> tuple[Tensor, Tensor]:
    """Scale and zero point covering ``[min_val, max_val]`` (always widened to include 0).

    Same arithmetic as torch.ao's ``_calculate_qparams`` (float32 throughout),
    so results equal ``MinMaxObserver(...).calculate_qparams()`` for the same
    min/max, dtype, qscheme and range:

    * symmetric: ``scale = max(-min, max) / ((quant_max - quant_min) / 2)``;
      zero point 0 for signed dtypes, ``(quant_min + quant_max + 1) // 2``
      for unsigned ones (128 for uint8; torch.ao uses the same for the default
      range but rounds the midpoint down for custom ranges).
    * affine: ``scale = (max - min) / (quant_max - quant_min)``,
      ``zero_point = clamp(quant_min - round(min / scale), quant_min, quant_max)``.

    The scale is clamped from below by ``eps`` and, if given, ``scale_min``
    (QNNPACK needs ``2**-12``); the zero point is computed with the clamped scale.

    :param min_val: 0-d tensor (per tensor) or 1-d tensor (per channel / group), or a float.
    :param max_val: same shape as ``min_val``.
    :returns: ``(scale, zero_point)``: float32 and int32 tensors shaped like ``min_val``.
    :raises ValueError: bad range (or, when symmetric, a range outside ``dtype``,
        since the dtype decides the zero point), mismatched shapes, NaN/inf or
        ``min_val > max_val``.
    """
    d = normalize_dtype(dtype)
    # the dtype decides the symmetric zero point, so the range must belong to it
    quant_min, quant_max = _check_qrange(quant_min, quant_max, d if symmetric else None, strict=True)
    mn, mx = _f32(min_val, "min_val"), _f32(max_val, "max_val")
    if mn.shape != mx.shape:
        raise ValueError(f"min_val and max_val must have the same shape, got {tuple(mn.shape)} and {tuple(mx.shape)}")
    if not (bool(torch.isfinite(mn).all()) and bool(torch.isfinite(mx).all())):
        raise ValueError(f"min_val / max_val must be finite, got min={mn.tolist()} max={mx.tolist()}")
    if bool((mn > mx).any()):
        raise ValueError(f"min_val must be <= max_val, got min={mn.tolist()} max={mx.tolist()}")
    floor = float(eps)
    if scale_min is not None:
        if not scale_min > 0:
            raise ValueError(f"scale_min must be positive, got {scale_min}")
        floor = max(floor, float(scale_min))

    zero = torch.zeros_like(mn)
    min_neg = torch.minimum(mn, zero)  # the grid must represent 0 exactly (padding, relu)
    max_pos = torch.maximum(mx, zero)
    if symmetric:
        amax = torch.maximum(-min_neg, max_pos)
        scale = amax / (float(quant_max - quant_min) / 2)
        scale = torch.clamp_min(scale, floor)
        mid = 0 if _is_signed(d) else (quant_min + quant_max + 1) // 2
        zero_point = torch.full(mn.shape, mid, dtype=torch.int32)
    else:
        scale = (max_pos - min_neg) / float(quant_max - quant_min)
        scale = torch.clamp_min(scale, floor)
        zero_point = quant_min - torch.round(min_neg / scale).to(torch.int64)
        zero_point = zero_point.clamp(quant_min, quant_max).to(torch.int32)
    return scale, zero_point


# ----------------------------------------------------- quantize / dequantize --


def quantize_affine(
    x: Tensor,
    scale: Any,
    zero_point: Any,
    *,
    quant_min: int,
    quant_max: int,
    dtype: QDType,
    axis: int | None = None,
    group_size: int | None = None,
) -> Tensor:
    """Quantize ``x``: ``clamp(round_half_even(x * (1/scale)) + zero_point, quant_min, quant_max)``.

    * per tensor (``axis=None, group_size=None``): one scale / zero point;
    * per channel (``axis=k``): ``scale`` has ``x.shape[k]`` entries;
    * per group (``group_size=g``): groups of ``g`` contiguous elements along
      the last dim; ``scale`` / ``zero_point`` are ``[rows, cols // g]``
      (any shape with that many entries, row-major). A single zero point is
      broadcast for per-channel / per-group.

    ``1/scale`` is a float32 reciprocal and ``x * (1/scale)`` a float32
    product, as in the C kernels and in torch's quantize ops. NaN becomes the
    zero point; +-inf saturate.

    :param dtype: int8, uint8, int32, or int4/uint4 (returned in int8/uint8 storage).
    :returns: tensor of ``storage_dtype(dtype)``, shaped like ``x``.
    :raises ValueError: invalid range, scale <= 0 or non-finite, zero point out
        of range, shapes that do not match, group_size not dividing the last dim.
    """
    quant_min, quant_max = _check_qrange(quant_min, quant_max, dtype)
    q, _, _ = _quantized_values(x, scale, zero_point, quant_min, quant_max, axis, group_size)
    return q.to(storage_dtype(dtype)).reshape(x.shape)


def dequantize_affine(
    q: Tensor,
    scale: Any,
    zero_point: Any,
    *,
    axis: int | None = None,
    group_size: int | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Dequantize: ``float32(q - zero_point) * scale``, per tensor / channel / group as in :func:`quantize_affine`.

    The subtraction is exact (int64) and the multiply is float32, like the C
    kernels; with ``out_dtype=torch.float64`` the multiply is done in float64.

    :returns: tensor of ``out_dtype`` shaped like ``q``.
    :raises ValueError: non-integer ``q``, scale <= 0, or mismatched shapes.
    """
    if not isinstance(q, Tensor) or q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise ValueError(f"q must be an integer tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    if not out_dtype.is_floating_point:
        raise ValueError(f"out_dtype must be a floating dtype, got {out_dtype}")
    s = _f32(scale, "scale")
    _check_scale(s)
    z = _zero_point_tensor(zero_point)
    work, s_v, z_v = _qparam_views(q.shape, s, z, axis, group_size)
    compute = torch.float64 if out_dtype == torch.float64 else torch.float32
    diff = q.reshape(work).to(torch.int64) - z_v
    return (diff.to(compute) * s_v.to(compute)).to(out_dtype).reshape(q.shape)


def fake_quantize_affine(
    x: Tensor,
    scale: Any,
    zero_point: Any,
    *,
    quant_min: int,
    quant_max: int,
    axis: int | None = None,
    group_size: int | None = None,
) -> Tensor:
    """``dequantize(quantize(x))`` without leaving float: the value each element snaps to.

    Equal to ``torch.fake_quantize_per_tensor_affine`` /
    ``torch.fake_quantize_per_channel_affine`` for finite inputs. Plain math,
    no straight-through estimator: use :class:`quantplug.fake_quant.FakeQuantize`
    for training.

    :returns: ``x.dtype`` if ``x`` is floating (computed in float32), else float32.
    """
    quant_min, quant_max = _check_qrange(quant_min, quant_max)
    q, s_v, z_v = _quantized_values(x, scale, zero_point, quant_min, quant_max, axis, group_size)
    out = (q - z_v).to(torch.float32) * s_v
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    return out.reshape(x.shape).to(out_dtype)


# ---------------------------------------------------------------- int4 pack --


def pack_int4(q: Tensor) -> Tensor:
    """Pack int4 values (int8 tensor holding -8..7, last dim even) two per byte.

    Byte ``i`` of a row holds element ``2i`` in its low nibble and ``2i + 1``
    in its high nibble (two's complement nibbles).

    :returns: uint8 tensor of shape ``[..., n // 2]``.
    :raises ValueError: wrong dtype, odd last dim, or values outside -8..7.
    """
    if not isinstance(q, Tensor) or q.dtype != torch.int8:
        raise ValueError(f"pack_int4 expects an int8 tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    if q.dim() == 0 or q.shape[-1] % 2:
        raise ValueError(f"pack_int4 needs an even last dimension, got shape {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < -8 or int(q.max()) > 7):
        raise ValueError(f"pack_int4 values must lie in [-8, 7], got [{int(q.min())}, {int(q.max())}]")
    nib = q.to(torch.int16) & 0xF  # two's complement nibble
    pairs = nib.reshape(*q.shape[:-1], q.shape[-1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[..., m]`` -> int8 ``[..., 2m]`` holding -8..7."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise ValueError(f"unpack_int4 expects a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    if packed.dim() == 0:
        raise ValueError("unpack_int4 needs at least one dimension")
    b = packed.to(torch.int16)
    lo, hi = b & 0xF, (b >> 4) & 0xF
    both = torch.stack((lo, hi), dim=-1)
    signed = (both ^ 8) - 8  # sign-extend the nibble
    return signed.reshape(*packed.shape[:-1], packed.shape[-1] * 2).to(torch.int8)


def pack_uint4(codes: Tensor) -> Tensor:
    """Pack unsigned 4-bit codes (uint8 tensor holding 0..15, last dim even) two per byte.

    The layout of :func:`pack_int4` without the sign: byte ``i`` holds element
    ``2i`` in its low nibble and ``2i + 1`` in its high nibble. Asymmetric
    4-bit tables (row-wise int4 embeddings: a value is ``(code - zero_point) *
    scale``) store their codes this way, as torch's ``embedding_bag_4bit``
    tables do.

    :returns: uint8 tensor of shape ``[..., n // 2]``.
    :raises ValueError: wrong dtype, odd last dim, or codes above 15.
    """
    if not isinstance(codes, Tensor) or codes.dtype != torch.uint8:
        raise ValueError(f"pack_uint4 expects a uint8 tensor, got {getattr(codes, 'dtype', type(codes).__name__)}")
    if codes.dim() == 0 or codes.shape[-1] % 2:
        raise ValueError(f"pack_uint4 needs an even last dimension, got shape {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError(f"pack_uint4 codes must lie in [0, 15], got a maximum of {int(codes.max())}")
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_uint4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_uint4`: uint8 ``[..., m]`` -> uint8 ``[..., 2m]`` holding 0..15."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        raise ValueError(f"unpack_uint4 expects a uint8 tensor, got {getattr(packed, 'dtype', type(packed).__name__)}")
    if packed.dim() == 0:
        raise ValueError("unpack_uint4 needs at least one dimension")
    both = torch.stack((packed & 0xF, packed >> 4), dim=-1)
    return both.reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# ------------------------------------------------------------- bias / requant --


def quantize_bias(bias_fp32: Tensor, input_scale: Any, weight_scale: Any) -> Tensor:
    """Quantize a bias to int32 on the accumulator grid.

    ``scale = input_scale * weight_scale`` (float32 product; per output channel
    when ``weight_scale`` has one entry per channel) and
    ``bias_q = clamp(round_half_even(bias / scale), int32 range)``, the float32
    division being the one ``quantplug.kernels.requant_params`` uses.

    :raises ValueError: non-positive scales, NaN bias, or a per-channel weight
        scale whose length does not match the bias.
    """
    if not isinstance(bias_fp32, Tensor):
        raise ValueError(f"bias must be a tensor, got {type(bias_fp32).__name__}")
    b = bias_fp32.detach().to(torch.float32)
    s_in = _f32(input_scale, "input_scale")
    if s_in.numel() != 1:
        raise ValueError(f"input_scale must be a single value, got shape {tuple(s_in.shape)}")
    s_w = _f32(weight_scale, "weight_scale").reshape(-1)
    _check_scale(s_in)
    _check_scale(s_w)
    if s_w.numel() > 1:
        if b.dim() != 1 or b.numel() != s_w.numel():
            raise ValueError(f"per-channel weight_scale has {s_w.numel()} entries but bias has shape {tuple(b.shape)}")
        acc_scale = s_in.reshape(()) * s_w
    else:
        acc_scale = s_in.reshape(()) * s_w.reshape(())
    if bool(torch.isnan(b).any()):
        raise ValueError("bias contains NaN")
    q = torch.round(b / acc_scale)
    # clamp in float64: float32 cannot represent 2**31 - 1, and 2**31 would overflow int32
    return q.to(torch.float64).clamp(INT32_MIN, INT32_MAX).to(torch.int32)


def requantize_reference(
    acc_int32: Tensor,
    multiplier_fp32: Any,
    out_zero_point: int,
    quant_min: int,
    quant_max: int,
    *,
    dtype: torch.dtype = torch.int32,
) -> Tensor:
    """Requantize int32 accumulators: THE contract for every C kernel's requantization.

    ``q = clamp(round_half_even(float32(acc) * multiplier) + out_zero_point, quant_min, quant_max)``

    exactly as a C kernel computes ``nearbyintf((float)acc * m)``: the
    accumulator is converted to float32 (rounding to nearest for
    ``|acc| > 2**24``), multiplied by the float32 multiplier in one float32
    multiply (no FMA, no double), rounded half to even, offset and clamped.
    This is ``qp_requantize`` in ``csrc/include/quantplug/qp_requant.h``;
    kernels must match it bit for bit.

    :param acc_int32: accumulators, any integer dtype with values in int32 range;
        for per-channel multipliers the channel is the last dimension.
    :param multiplier_fp32: ``input_scale * weight_scale / output_scale`` as
        float32: a scalar or one entry per output channel.
    :param dtype: dtype of the result (int32 by default; pass the kernel's
        output dtype, e.g. ``torch.int8``, to compare directly).
    :raises ValueError: non-integer or out-of-int32 accumulators, bad
        multiplier, zero point outside the range.
    """
    if not isinstance(acc_int32, Tensor) or acc_int32.is_floating_point() or acc_int32.is_complex() \
            or acc_int32.dtype == torch.bool:
        raise ValueError(f"acc must be an integer tensor, got {getattr(acc_int32, 'dtype', type(acc_int32).__name__)}")
    quant_min, quant_max = _check_qrange(quant_min, quant_max)
    if acc_int32.dtype == torch.int64 and acc_int32.numel() and (
            int(acc_int32.min()) < INT32_MIN or int(acc_int32.max()) > INT32_MAX):
        raise ValueError("accumulators exceed the int32 range; the requantization contract is for int32 accumulators")
    m = _f32(multiplier_fp32, "multiplier")
    _check_scale(m)
    if m.numel() > 1:
        if acc_int32.dim() == 0 or m.numel() != acc_int32.shape[-1]:
            raise ValueError(f"per-channel multiplier has {m.numel()} entries, acc's last dim is "
                             f"{acc_int32.shape[-1] if acc_int32.dim() else 'missing'}")
        m = m.reshape(-1)
    else:
        m = m.reshape(())
    zp = int(out_zero_point)
    if not quant_min <= zp <= quant_max:
        raise ValueError(f"out_zero_point={zp} must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}]")
    v = torch.round(acc_int32.to(torch.float32) * m)  # one float32 multiply, ties to even
    q = (v.to(torch.float64) + zp).clamp_(quant_min, quant_max)
    return q.to(dtype)


# -------------------------------------------------------------------- metrics --


def sqnr(ref: Tensor, test: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: ``20 * log10(||ref|| / ||ref - test||)``.

    Computed in float64. ``+inf`` when ``test`` equals ``ref`` exactly,
    ``-inf`` when ``ref`` is all zeros but ``test`` is not.
    """
    if not isinstance(ref, Tensor) or not isinstance(test, Tensor):
        raise ValueError("sqnr takes two tensors")
    if ref.shape != test.shape:
        raise ValueError(f"sqnr: shapes differ: {tuple(ref.shape)} vs {tuple(test.shape)}")
    r = ref.detach().to(torch.float64)
    noise = float(torch.linalg.vector_norm(r - test.detach().to(torch.float64)))
    signal = float(torch.linalg.vector_norm(r))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 20.0 * math.log10(signal / noise)
