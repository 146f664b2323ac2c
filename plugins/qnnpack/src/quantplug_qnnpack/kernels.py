"""Python side of the qnnpack kernels: input checks, then one cffi call each.

Numerics (QNNPACK's):

* activations: ``torch.uint8``, asymmetric, per tensor, scale >= 2**-12
  (:data:`ACT_SCALE_MIN`; QNNPACK rejects smaller activation scales);
* weights: **uint8 with a zero point per output channel** inside the
  kernels, the representation of QNNPACK's q8 GEMM (one kernel zero point in
  the original library, one per channel in PyTorch's fork). The common
  kernel API hands over torch-side ``int8`` weights; :meth:`pack_linear_weight`
  converts them by adding 128 to values and zero points, exactly what torch's
  ``qnnpack`` engine does with ``qint8`` weights. ``uint8`` weights are also
  accepted as they are;
* requantization: ``quantplug.affine.requantize_reference`` (float32
  multiplier, round half to even), with multipliers and int32 bias from
  :func:`quantplug.kernels.requant_params`;
* dynamic linear: activations quantized per call to uint8, per tensor
  (QNNPACK's dynamic linear) or per row (``per_row=True``, an extension: one
  scale and zero point per row, chosen with the same arithmetic);
* add (QNNPACK's q8add) and mul (not in QNNPACK) on uint8, float32
  requantization; sigmoid / tanh / hardsigmoid as 256-entry lookup tables
  (QNNPACK's x8lut) with QNNPACK's fixed output qparams; max pooling and
  global average pooling are the core's shared NHWC kernels (inherited).

Every wrapper validates its inputs with :func:`quantplug.kernels.check_tensor`
before any pointer reaches C, and raises :class:`quantplug.KernelInputError`
naming the op and the tensor.
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from quantplug.errors import KernelInputError
from quantplug.kernels import CffiKernelLibrary, check_binary_operands, check_dense, check_tensor, requant_params
from quantplug.quant_ops import ops as qops

from ._version import __version__
from .backend_config import FIXED_QPARAMS

__all__ = ["PackedLinearWeight", "PackedConv2dWeight", "QNNPACKKernels", "ACT_SCALE_MIN", "load_kernels"]

#: Smallest activation scale QNNPACK accepts (inputs and outputs of static ops).
ACT_SCALE_MIN = 2.0**-12
#: Output channels per packed block and reduction bytes per group of the packed layout.
NR, KR = 16, 4

DISTRIBUTION = "quantplug-qnnpack"

#: float32 function of each lookup-table op (QNNPACK's sigmoid / tanh / hardsigmoid operators).
_LUT_FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardsigmoid": torch.nn.functional.hardsigmoid}


@dataclass
class PackedLinearWeight:
    """A linear weight packed for the qnnpack GEMM microkernels (picklable: plain tensors).

    :ivar packed: uint8 ``[ceil(n/16) * ceil(k/4) * 64]``: blocks of 16 output
        channels, groups of 4 reduction bytes (``c4``), zero padded. The values
        are QNNPACK's uint8 weights (torch int8 + 128).
    :ivar row_sums: int32 ``[ceil(n/16) * 16]``: ``sum_k w_u8[n, k]`` per
        output channel (weight rows), used to fold the zero points.
    :ivar scales: float32 ``[n]`` per-channel weight scales.
    :ivar zero_points: int32 ``[n]`` weight zero points in the uint8
        representation (0..255; torch int8 zero point + 128).
    """

    packed: Tensor
    row_sums: Tensor
    scales: Tensor
    zero_points: Tensor
    n: int
    k: int


@dataclass
class PackedConv2dWeight:
    """A conv2d weight packed for the qnnpack kernels, with its geometry (picklable: plain tensors and ints).

    Depthwise convs (``cin_per_group == 1`` and ``cout == groups``) hold int16
    ``w - w_zp`` as bytes, ``[kh * kw][cout rounded up to 16]``; the others one
    linear-layout GEMM weight per group, reduction ordered (ky, kx, ci) to
    match NHWC im2col rows.
    """

    packed: Tensor  # uint8 bytes
    row_sums: Tensor  # int32 per group, padded to 16 (zeros for depthwise)
    scales: Tensor  # float32 [cout]
    zero_points: Tensor  # int32 [cout], uint8 representation
    cout: int
    cin_per_group: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    groups: int

    @property
    def depthwise(self) -> bool:
        """True when the depthwise microkernels run this conv."""
        return self.cin_per_group == 1 and self.cout == self.groups


def _pair(value: Any, name: str, op: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise KernelInputError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise KernelInputError(f"{op}: {name}={value!r} must be >= {minimum}")
    return pair


def _packed_size(n: int, k: int) -> int:
    return -(-n // NR) * -(-k // KR) * NR * KR


def _check_scale(value: Any, name: str, op: str, minimum: float | None = None) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise KernelInputError(f"{op}: {name} must be a single number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise KernelInputError(f"{op}: {name} must be a float, got {type(value).__name__}") from None
    if not math.isfinite(f) or f <= 0:
        raise KernelInputError(f"{op}: {name}={f!r} must be finite and > 0")
    if minimum is not None and f < minimum:
        raise KernelInputError(
            f"{op}: {name}={f!r} is below QNNPACK's minimum activation scale 2**-12 = {minimum!r}; "
            f"calibrate with observers built with eps={minimum!r} (the qnnpack quantizer does)"
        )
    return f


def _check_zero_point(value: Any, name: str, op: str, lo: int = 0, hi: int = 255) -> int:
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point():
            raise KernelInputError(f"{op}: {name} must be a single integer")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise KernelInputError(f"{op}: {name} must be an int, got {value!r}")
    if not lo <= value <= hi:
        raise KernelInputError(f"{op}: {name}={value} is outside [{lo}, {hi}] (qnnpack activations are uint8)")
    return int(value)


def _binary_qparams(op: str, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point) -> tuple:
    """``(a_scale, a_zp, b_scale, b_zp, out_scale, out_zp)`` of a binary op, each checked (scales >= 2**-12)."""
    return (_check_scale(a_scale, "a_scale", op, ACT_SCALE_MIN), _check_zero_point(a_zero_point, "a_zero_point", op),
            _check_scale(b_scale, "b_scale", op, ACT_SCALE_MIN), _check_zero_point(b_zero_point, "b_zero_point", op),
            _check_scale(out_scale, "out_scale", op, ACT_SCALE_MIN),
            _check_zero_point(out_zero_point, "out_zero_point", op))


class QNNPACKKernels(CffiKernelLibrary):
    """The compiled qnnpack kernels (scalar, SSE2, AVX2, AVX-512, AVX-512 VNNI, NEON, NEON dot product)."""

    #: activation dtype and range of every static kernel
    act_dtype = torch.uint8
    act_range = (0, 255)
    #: ``linear_dynamic(per_row=True)`` quantizes each activation row with its own uint8 qparams
    supports_dynamic_per_row = True
    #: packed-weight dataclasses, for quantplug's lowered ops
    packed_linear_type = PackedLinearWeight
    packed_conv2d_type = PackedConv2dWeight

    def __init__(self, module) -> None:
        super().__init__(module, plugin_version=__version__, distribution=DISTRIBUTION)
        # (x_scale, out_scale, id(scales), id(bias)) -> (scales, bias, multipliers, bias_q);
        # the tensors are kept alive by the entry, so their ids cannot be reused.
        self._requant_cache: OrderedDict[tuple, tuple] = OrderedDict()
        # id(packed.packed) -> (weakref to it, row_sums, scales, zero_points, (n, k, shape)) it was
        # validated with; the entry goes away with the tensor (weakref callback).
        self._validated: dict[int, tuple] = {}
        # (op, x_scale, x_zp, out_scale, out_zp) -> uint8 [256] table of a lookup-table op
        self._tables: dict[tuple, Tensor] = {}
        self._ctypes = {c: self.ffi.typeof(c) for c in ("uint8_t *", "int8_t *", "int32_t *", "float *")}

    def ptr(self, t: Tensor, ctype: str):
        """A C pointer of type ``ctype`` to ``t``'s data (``t`` must stay alive)."""
        return self.ffi.cast(self._ctypes.get(ctype) or ctype, t.data_ptr())

    # ------------------------------------------------------------ packing --
    def pack_linear_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor) -> PackedLinearWeight:
        """Pack a quantized linear weight ``[N, K]`` for :meth:`linear` / :meth:`linear_dynamic`.

        ``w_q`` is ``int8`` (torch's qint8 side; zero points in [-128, 127]),
        converted to QNNPACK's uint8 by adding 128, or already ``uint8``
        (zero points in [0, 255]). ``w_scales``: float32 ``[N]``;
        ``w_zero_points``: int32 ``[N]``.
        """
        op = "qnnpack.pack_linear_weight"
        check_tensor(w_q, "w_q", dtype=(torch.int8, torch.uint8), ndim=2, op=op)
        n, k = w_q.shape
        if n == 0 or k == 0:
            raise KernelInputError(f"{op}: w_q has shape {tuple(w_q.shape)}; N and K must be >= 1")
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(n,), op=op)
        if not bool(torch.isfinite(w_scales).all()) or not bool((w_scales > 0).all()):
            raise KernelInputError(f"{op}: every entry of w_scales must be finite and > 0")
        signed = w_q.dtype == torch.int8
        lo, hi = (-128, 127) if signed else (0, 255)
        if n and (int(w_zero_points.min()) < lo or int(w_zero_points.max()) > hi):
            raise KernelInputError(f"{op}: w_zero_points must lie in [{lo}, {hi}] for {w_q.dtype} weights")
        size = _packed_size(n, k)
        npad = -(-n // NR) * NR
        packed = torch.empty(size, dtype=torch.uint8)
        row_sums = torch.empty(npad, dtype=torch.int32)
        fn = self.lib.qnnpack_pack_weight_s8 if signed else self.lib.qnnpack_pack_weight_u8
        status = fn(self.ptr(w_q, "int8_t *" if signed else "uint8_t *"), n, k, self.ptr(packed, "uint8_t *"), size,
                    self.ptr(row_sums, "int32_t *"), npad)
        self.check_status(status, op)
        zps = (w_zero_points + 128) if signed else w_zero_points.clone()
        return PackedLinearWeight(packed, row_sums, w_scales.clone(), zps.to(torch.int32).contiguous(), int(n), int(k))

    def unpack_linear_weight(self, packed: PackedLinearWeight) -> tuple[Tensor, Tensor, Tensor]:
        """``(uint8 weight [N, K], scales [N], uint8-representation zero points [N])`` of a packed weight."""
        op = "qnnpack.unpack_linear_weight"
        self._check_packed(packed, op)
        w = torch.empty(packed.n, packed.k, dtype=torch.uint8)
        status = self.lib.qnnpack_unpack_weight_u8(self.ptr(packed.packed, "uint8_t *"), packed.packed.numel(),
                                                   packed.n, packed.k, self.ptr(w, "uint8_t *"))
        self.check_status(status, op)
        return w, packed.scales, packed.zero_points

    def _check_packed(self, packed: Any, op: str) -> tuple:
        """Validate ``packed`` (once per set of tensors); returns C pointers to (packed, row_sums, zero_points)."""
        if not isinstance(packed, PackedLinearWeight):
            raise KernelInputError(
                f"{op}: packed must be a quantplug_qnnpack PackedLinearWeight (from pack_linear_weight), "
                f"got {type(packed).__name__}")
        # Fast path: these very tensors (and n, k) passed the checks before. Lowered models
        # rebuild the dataclass per call around the same buffers, so key on the tensors.
        seen = self._validated.get(id(packed.packed))
        if seen is not None and seen[0]() is packed.packed and seen[1] is packed.row_sums \
                and seen[2] is packed.scales and seen[3] is packed.zero_points \
                and seen[4] == (packed.n, packed.k, packed.packed.shape):
            return seen[5]
        n, k = packed.n, packed.k
        if not (isinstance(n, int) and isinstance(k, int) and n > 0 and k > 0):
            raise KernelInputError(f"{op}: packed has invalid n={n!r}, k={k!r}")
        check_tensor(packed.packed, "packed.packed", dtype=torch.uint8, shape=(_packed_size(n, k),), op=op)
        check_tensor(packed.row_sums, "packed.row_sums", dtype=torch.int32, shape=(-(-n // NR) * NR,), op=op)
        check_tensor(packed.scales, "packed.scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(packed.zero_points, "packed.zero_points", dtype=torch.int32, shape=(n,), op=op)
        if int(packed.zero_points.min()) < 0 or int(packed.zero_points.max()) > 255:
            raise KernelInputError(f"{op}: packed.zero_points must lie in [0, 255] (QNNPACK's uint8 weights)")
        key, cache = id(packed.packed), self._validated

        def forget(_ref, key=key, cache=cache):
            entry = cache.get(key)
            if entry is not None and entry[0] is _ref:
                del cache[key]

        # The C pointers too: three ffi casts cost more than the rest of a small call's checks.
        ptrs = (self.ptr(packed.packed, "uint8_t *"), self.ptr(packed.row_sums, "int32_t *"),
                self.ptr(packed.zero_points, "int32_t *"))
        cache[key] = (weakref.ref(packed.packed, forget), packed.row_sums, packed.scales, packed.zero_points,
                      (n, k, packed.packed.shape), ptrs)
        return ptrs

    # ------------------------------------------------------------- conv2d --
    def _check_packed_conv(self, p: "PackedConv2dWeight", op: str) -> tuple:
        """Validate a packed conv weight's tensors (once per set of tensors and geometry).

        Returns ``(packed size, sums size, packed, row_sums, zero_points pointers)``: a
        depthwise layer's whole call is ~130 us, and re-checking four tensors plus three
        ffi casts per call cost several of them.
        """
        geom = (p.cout, p.cin_per_group, p.kh, p.kw, p.groups)
        seen = self._validated.get(id(p.packed))
        if seen is not None and seen[0]() is p.packed and seen[1] is p.row_sums and seen[2] is p.scales \
                and seen[3] is p.zero_points and seen[4] == (geom, p.packed.shape):
            return seen[5]
        size = self.lib.qnnpack_conv2d_packed_size(*geom)
        nsums = self.lib.qnnpack_conv2d_sums_size(p.cout, p.cin_per_group, p.groups)
        check_tensor(p.packed, "packed.packed", dtype=torch.uint8, shape=(size,), op=op)
        check_tensor(p.row_sums, "packed.row_sums", dtype=torch.int32, shape=(nsums,), op=op)
        check_tensor(p.scales, "packed.scales", dtype=torch.float32, shape=(p.cout,), op=op)
        check_tensor(p.zero_points, "packed.zero_points", dtype=torch.int32, shape=(p.cout,), op=op)
        key, cache = id(p.packed), self._validated

        def forget(_ref, key=key, cache=cache):
            entry = cache.get(key)
            if entry is not None and entry[0] is _ref:
                del cache[key]

        out = (size, nsums, self.ptr(p.packed, "uint8_t *"), self.ptr(p.row_sums, "int32_t *"),
               self.ptr(p.zero_points, "int32_t *"))
        cache[key] = (weakref.ref(p.packed, forget), p.row_sums, p.scales, p.zero_points, (geom, p.packed.shape), out)
        return out

    def pack_conv2d_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor, stride=(1, 1),
                           padding=(0, 0), dilation=(1, 1), groups: int = 1) -> PackedConv2dWeight:
        """Pack a quantized conv2d weight ``[Cout, Cin / groups, kh, kw]`` (int8 + 128, or uint8) with its geometry."""
        op = "qnnpack.pack_conv2d_weight"
        check_tensor(w_q, "w_q", dtype=(torch.int8, torch.uint8), ndim=4, op=op)
        cout, cin_g, kh, kw = (int(d) for d in w_q.shape)
        if min(cout, cin_g, kh, kw) == 0:
            raise KernelInputError(f"{op}: w_q has an empty dimension: shape {tuple(w_q.shape)}")
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(cout,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(cout,), op=op)
        if not bool(torch.isfinite(w_scales).all()) or not bool((w_scales > 0).all()):
            raise KernelInputError(f"{op}: every entry of w_scales must be finite and > 0")
        sh, sw = _pair(stride, "stride", op, 1)
        ph, pw = _pair(padding, "padding", op, 0)
        dh, dw = _pair(dilation, "dilation", op, 1)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or cout % groups:
            raise KernelInputError(f"{op}: groups={groups!r} must be a positive int dividing Cout={cout}")
        signed = w_q.dtype == torch.int8
        lo, hi = (-128, 127) if signed else (0, 255)
        if int(w_zero_points.min()) < lo or int(w_zero_points.max()) > hi:
            raise KernelInputError(f"{op}: w_zero_points must lie in [{lo}, {hi}] for {w_q.dtype} weights")
        zps = ((w_zero_points + 128) if signed else w_zero_points.clone()).to(torch.int32).contiguous()
        size = self.lib.qnnpack_conv2d_packed_size(cout, cin_g, kh, kw, groups)
        nsums = self.lib.qnnpack_conv2d_sums_size(cout, cin_g, groups)
        if size == 0:
            raise KernelInputError(f"{op}: unsupported weight shape {tuple(w_q.shape)} with groups={groups}")
        packed = torch.empty(size, dtype=torch.uint8)
        row_sums = torch.empty(nsums, dtype=torch.int32)
        fn = self.lib.qnnpack_pack_conv2d_weight_s8 if signed else self.lib.qnnpack_pack_conv2d_weight_u8
        status = fn(self.ptr(w_q, "int8_t *" if signed else "uint8_t *"), self.ptr(zps, "int32_t *"), cout, cin_g,
                    kh, kw, groups, self.ptr(packed, "uint8_t *"), size, self.ptr(row_sums, "int32_t *"), nsums)
        self.check_status(status, op)
        return PackedConv2dWeight(packed, row_sums, w_scales.clone(), zps, cout, cin_g, kh, kw, sh, sw, ph, pw,
                                  dh, dw, int(groups))

    def conv2d(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedConv2dWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Static quantized conv2d: uint8 ``[N, C, H, W]`` in, uint8 ``[N, Cout, Ho, Wo]`` out.

        Runs on NHWC data: a ``channels_last`` input is used in place (an NCHW
        one is converted first) and the result is ``channels_last`` (its
        logical shape is NCHW, like the input's). Numerics as :meth:`linear`.
        """
        op = "qnnpack.conv2d"
        if not isinstance(packed, PackedConv2dWeight):
            raise KernelInputError(f"{op}: packed must be a PackedConv2dWeight (from pack_conv2d_weight), "
                                   f"got {type(packed).__name__}")
        p = packed
        if not isinstance(x_q, Tensor):
            raise KernelInputError(f"{op}: x_q must be a torch.Tensor, got {type(x_q).__name__}")
        if x_q.dim() != 4:
            raise KernelInputError(f"{op}: x_q must be 4-D [N, C, H, W], got shape {tuple(x_q.shape)}")
        cin = p.cin_per_group * p.groups
        if x_q.shape[1] != cin:
            raise KernelInputError(f"{op}: x_q has {x_q.shape[1]} channels, the weight expects {cin}")
        if x_q.is_contiguous(memory_format=torch.channels_last):
            nhwc = x_q.permute(0, 2, 3, 1)
        else:
            check_tensor(x_q, "x_q", dtype=torch.uint8, op=op)  # device / dtype / layout errors
            nhwc = x_q.permute(0, 2, 3, 1).contiguous()
        check_tensor(nhwc, "x_q (as NHWC)", dtype=torch.uint8, op=op)
        size, nsums, packed_p, sums_p, zps_p = self._check_packed_conv(p, op)
        x_scale = _check_scale(x_scale, "x_scale", op, ACT_SCALE_MIN)
        out_scale = _check_scale(out_scale, "out_scale", op, ACT_SCALE_MIN)
        x_zp = _check_zero_point(x_zero_point, "x_zero_point", op)
        out_zp = _check_zero_point(out_zero_point, "out_zero_point", op)
        if bias is not None:
            check_tensor(bias, "bias", dtype=torch.float32, shape=(p.cout,), op=op)
        n, _, h, w = (int(d) for d in x_q.shape)
        eff_h, eff_w = p.dilation_h * (p.kh - 1) + 1, p.dilation_w * (p.kw - 1) + 1
        if h + 2 * p.pad_h < eff_h or w + 2 * p.pad_w < eff_w:
            raise KernelInputError(f"{op}: input {h}x{w} (padding {p.pad_h}x{p.pad_w}) is smaller than the "
                                   f"dilated kernel {eff_h}x{eff_w}")
        oh = (h + 2 * p.pad_h - eff_h) // p.stride_h + 1
        ow = (w + 2 * p.pad_w - eff_w) // p.stride_w + 1
        mult, _, mult_p, bias_p = self._requant(x_scale, p.scales, out_scale, bias)
        out = torch.empty((n, p.cout, oh, ow), dtype=torch.uint8, memory_format=torch.channels_last)
        if out.numel() == 0:
            return out
        self.sync_threads()
        status = self.lib.qnnpack_conv2d_u8(
            self.ptr(nhwc, "uint8_t *"), n, h, w, cin, x_zp, packed_p, size, sums_p, nsums, zps_p, p.cout,
            p.kh, p.kw, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, p.groups,
            bias_p, mult_p, mult.numel(), out_zp, out_zp if relu else 0, 255, self.ptr(out, "uint8_t *"), oh, ow)
        self.check_status(status, f"{op} (multipliers x_scale*w_scale/out_scale must be finite and > 0)")
        return out

    # -------------------------------------------------------- elementwise --
    def add(self, a_q: Tensor, a_scale: float, a_zero_point: int, b_q: Tensor, b_scale: float, b_zero_point: int,
            out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Elementwise quantized add of two uint8 tensors of the same shape (QNNPACK's q8add).

        ``out = clamp(round((float(a - a_zp) * a_scale + float(b - b_zp) * b_scale) / out_scale) + out_zp)``
        in float32, the contract of :meth:`quantplug.reference_kernels.ReferenceKernels.add`
        (bit-exact with it). Dense inputs with the same layout (contiguous or
        ``channels_last``) are used in place and the output has that layout;
        broadcasting is not supported.
        """
        op = "qnnpack.add"
        a_q, b_q = check_binary_operands(a_q, b_q, ("a_q", "b_q"), dtype=torch.uint8, op=op)
        a_scale, a_zp, b_scale, b_zp, out_scale, out_zp = _binary_qparams(
            op, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point)
        out = torch.empty_like(a_q)
        self.sync_threads()
        status = self.lib.qnnpack_add_u8(
            self.ptr(a_q, "uint8_t *"), a_scale, a_zp, self.ptr(b_q, "uint8_t *"), b_scale, b_zp, a_q.numel(),
            out_scale, out_zp, out_zp if relu else 0, 255, self.ptr(out, "uint8_t *"))
        self.check_status(status, op)
        return out

    def mul(self, a_q: Tensor, a_scale: float, a_zero_point: int, b_q: Tensor, b_scale: float, b_zero_point: int,
            out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Elementwise quantized multiply of two uint8 tensors of the same shape.

        ``out = clamp(round(float((a - a_zp) * (b - b_zp)) * m) + out_zp)`` with
        ``m = a_scale * b_scale / out_scale`` in float32: the integer product
        is exact, then one rounding (the same contract as the fbgemm plugin's
        mul; the reference graph rounds ``dq(a) * dq(b) / out_scale`` in
        float32 instead, at most 1 LSB away). Layout rules as :meth:`add`.
        QNNPACK itself has no multiply operator: this kernel keeps a
        model's ``mul`` in uint8 instead of falling back to float.
        """
        op = "qnnpack.mul"
        a_q, b_q = check_binary_operands(a_q, b_q, ("a_q", "b_q"), dtype=torch.uint8, op=op)
        a_scale, a_zp, b_scale, b_zp, out_scale, out_zp = _binary_qparams(
            op, a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point)
        mult = float(torch.tensor(a_scale, dtype=torch.float32) * torch.tensor(b_scale, dtype=torch.float32)
                     / torch.tensor(out_scale, dtype=torch.float32))
        out = torch.empty_like(a_q)
        self.sync_threads()
        status = self.lib.qnnpack_mul_u8(self.ptr(a_q, "uint8_t *"), a_zp, self.ptr(b_q, "uint8_t *"), b_zp,
                                         a_q.numel(), mult, out_zp, out_zp if relu else 0, 255,
                                         self.ptr(out, "uint8_t *"))
        self.check_status(status, f"{op} (a_scale * b_scale / out_scale must be a finite float32 > 0)")
        return out

    # ------------------------------------------------- lookup-table ops --
    def lut_table(self, op_name: str, x_scale: float, x_zero_point: int, out_scale: float | None = None,
                  out_zero_point: int | None = None) -> Tensor:
        """The uint8 ``[256]`` table of ``op_name`` (sigmoid, tanh, hardsigmoid) for these qparams.

        ``table[v] = quantize(f(dequantize(v)))`` with quantplug's own
        quantize/dequantize ops and torch's float32 ``f``: the very
        arithmetic of the reference graph (dq -> f -> q), so a lowered op
        is bit-exact with it. Output qparams default to QNNPACK's fixed
        ones (:data:`quantplug_qnnpack.backend_config.FIXED_QPARAMS`).
        """
        op = f"qnnpack.{op_name}"
        fn = _LUT_FUNCTIONS.get(op_name)
        if fn is None:
            raise KernelInputError(f"qnnpack.lut_table: unknown op {op_name!r}; expected one of {sorted(_LUT_FUNCTIONS)}")
        fixed_scale, fixed_zp = FIXED_QPARAMS[op_name]
        x_scale = _check_scale(x_scale, "x_scale", op, ACT_SCALE_MIN)
        x_zp = _check_zero_point(x_zero_point, "x_zero_point", op)
        out_scale = _check_scale(fixed_scale if out_scale is None else out_scale, "out_scale", op)
        out_zp = _check_zero_point(fixed_zp if out_zero_point is None else out_zero_point, "out_zero_point", op)
        key = (op_name, x_scale, x_zp, out_scale, out_zp)
        table = self._tables.get(key)
        if table is None:
            levels = torch.arange(256, dtype=torch.int32).to(torch.uint8)
            x = qops.dequantize_per_tensor.default(levels, x_scale, x_zp, 0, 255, torch.uint8)
            table = qops.quantize_per_tensor.default(fn(x), out_scale, out_zp, 0, 255, torch.uint8).contiguous()
            if len(self._tables) >= 256:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = table
        return table

    def lookup(self, x_q: Tensor, table: Tensor) -> Tensor:
        """``out[i] = table[x_q[i]]`` (QNNPACK's x8lut) on a dense uint8 tensor; output has x_q's layout."""
        op = "qnnpack.lookup"
        # dense in place (contiguous or channels_last), anything else made contiguous: the table
        # lookup ignores the layout
        x_q = check_dense(x_q, "x_q", dtype=torch.uint8, op=op)
        check_tensor(table, "table", dtype=torch.uint8, shape=(256,), op=op)
        out = torch.empty_like(x_q)
        self.sync_threads()
        self.check_status(self.lib.qnnpack_lut_u8(self.ptr(x_q, "uint8_t *"), x_q.numel(),
                                                  self.ptr(table, "uint8_t *"), 256, self.ptr(out, "uint8_t *")), op)
        return out

    def sigmoid(self, x_q: Tensor, x_scale: float, x_zero_point: int) -> Tensor:
        """uint8 sigmoid; the output has QNNPACK's fixed qparams (scale 1/256, zero point 0)."""
        return self.lookup(x_q, self.lut_table("sigmoid", x_scale, x_zero_point))

    def tanh(self, x_q: Tensor, x_scale: float, x_zero_point: int) -> Tensor:
        """uint8 tanh; the output has QNNPACK's fixed qparams (scale 2/256, zero point 128)."""
        return self.lookup(x_q, self.lut_table("tanh", x_scale, x_zero_point))

    def hardsigmoid(self, x_q: Tensor, x_scale: float, x_zero_point: int) -> Tensor:
        """uint8 hardsigmoid; the output has QNNPACK's fixed qparams (scale 1/256, zero point 0)."""
        return self.lookup(x_q, self.lut_table("hardsigmoid", x_scale, x_zero_point))

    # ------------------------------------------------------------- linear --
    def _requant(self, x_scale: float, scales: Tensor, out_scale: float, bias: Tensor | None):
        """``(multipliers, bias_q, multipliers pointer, bias_q pointer or NULL)``, cached per qparams."""
        key = (x_scale, out_scale, id(scales), scales._version, id(bias), None if bias is None else bias._version)
        hit = self._requant_cache.get(key)
        if hit is not None and hit[0] is scales and hit[1] is bias:
            self._requant_cache.move_to_end(key)
            return hit[2]
        mult, bias_q = requant_params(x_scale, scales, out_scale, bias)
        entry = (mult, bias_q, self.ptr(mult, "float *"),
                 self.ffi.NULL if bias_q is None else self.ptr(bias_q, "int32_t *"))
        self._requant_cache[key] = (scales, bias, entry)
        if len(self._requant_cache) > 64:
            self._requant_cache.popitem(last=False)
        return entry

    def linear(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedLinearWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Static quantized linear: uint8 ``[..., K]`` in, uint8 ``[..., N]`` out.

        ``acc = bias_q + sum_k (x - x_zp) * (w - w_zp)`` in int32, then
        ``requantize_reference(acc, x_scale * w_scale / out_scale, out_zp)``;
        ``relu`` clamps at the output zero point (QNNPACK's output_min).
        ``bias`` is float32 ``[N]`` (quantized with ``requant_params``) or None.
        """
        op = "qnnpack.linear"
        packed_p, sums_p, zps_p = self._check_packed(packed, op)
        n, k = packed.n, packed.k
        check_tensor(x_q, "x_q", dtype=torch.uint8, op=op)
        if x_q.dim() < 1 or x_q.shape[-1] != k:
            raise KernelInputError(f"{op}: x_q has shape {tuple(x_q.shape)}, expected [..., {k}] (K of the packed weight)")
        x_scale = _check_scale(x_scale, "x_scale", op, ACT_SCALE_MIN)
        out_scale = _check_scale(out_scale, "out_scale", op, ACT_SCALE_MIN)
        x_zp = _check_zero_point(x_zero_point, "x_zero_point", op)
        out_zp = _check_zero_point(out_zero_point, "out_zero_point", op)
        if bias is not None:
            check_tensor(bias, "bias", dtype=torch.float32, shape=(n,), op=op)
        mult, _, mult_p, bias_p = self._requant(x_scale, packed.scales, out_scale, bias)
        m = x_q.numel() // k
        out = torch.empty((*x_q.shape[:-1], n), dtype=torch.uint8)
        if m == 0:
            return out
        self.sync_threads()
        status = self.lib.qnnpack_linear_u8(
            self.ptr(x_q, "uint8_t *"), m, k, x_zp, packed_p, packed.packed.numel(), sums_p, zps_p, n, bias_p,
            mult_p, mult.numel(), out_zp, out_zp if relu else 0, 255, self.ptr(out, "uint8_t *"))
        self.check_status(status, f"{op} (multipliers x_scale*w_scale/out_scale must be finite and > 0)")
        return out

    def choose_dynamic_qparams(self, x: Tensor) -> tuple[float, int]:
        """The uint8 per-tensor ``(scale, zero_point)`` :meth:`linear_dynamic` uses for ``x``.

        Same arithmetic as ``quantplug.affine.choose_qparams(min(x), max(x),
        quant_min=0, quant_max=255, symmetric=False, dtype=torch.uint8)``.
        """
        op = "qnnpack.choose_dynamic_qparams"
        check_tensor(x, "x", dtype=torch.float32, op=op)
        scale = self.ffi.new("float *")
        zp = self.ffi.new("int32_t *")
        status = self.lib.qnnpack_choose_qparams_u8(self.ptr(x, "float *"), x.numel(), scale, zp)
        self.check_status(status, f"{op} (x must not contain infinities)")
        return float(scale[0]), int(zp[0])

    def linear_dynamic(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None,
                       per_row: bool = False) -> Tensor:
        """Dynamic linear: float32 ``[..., K]`` in, float32 ``[..., N]`` out.

        ``x`` is quantized per call to uint8: per tensor (QNNPACK's dynamic
        linear, see :meth:`choose_dynamic_qparams`), or with ``per_row=True``
        one ``(scale, zero_point)`` per row of ``x.reshape(-1, K)`` chosen with
        the same arithmetic (one fused pass per row in C). ``out =
        float32(acc) * (x_scale * w_scale) + bias`` (multiply, then add).
        """
        op = "qnnpack.linear_dynamic"
        packed_p, sums_p, zps_p = self._check_packed(packed, op)
        n, k = packed.n, packed.k
        check_tensor(x, "x", dtype=torch.float32, op=op)
        if x.dim() < 1 or x.shape[-1] != k:
            raise KernelInputError(f"{op}: x has shape {tuple(x.shape)}, expected [..., {k}] (K of the packed weight)")
        if bias is not None:
            check_tensor(bias, "bias", dtype=torch.float32, shape=(n,), op=op)
        m = x.numel() // k
        out = torch.empty((*x.shape[:-1], n), dtype=torch.float32)
        if m == 0:
            return out
        self.sync_threads()
        null = self.ffi.NULL
        fn = self.lib.qnnpack_linear_dynamic_rows_f32 if per_row else self.lib.qnnpack_linear_dynamic_f32
        status = fn(self.ptr(x, "float *"), m, k, packed_p, packed.packed.numel(), sums_p, zps_p,
                    self.ptr(packed.scales, "float *"), n, null if bias is None else self.ptr(bias, "float *"), null,
                    self.ptr(out, "float *"), null, null)
        self.check_status(status, f"{op} (x must not contain infinities)")
        return out


_KERNELS: QNNPACKKernels | None = None


def load_kernels() -> QNNPACKKernels:
    """The process-wide kernel library (imports the compiled module once).

    Raises ``ImportError`` with a reinstall hint when the extension is
    missing, and :class:`quantplug.KernelBuildMismatchError` when it was
    built for another plugin version.
    """
    global _KERNELS
    if _KERNELS is None:
        try:
            from . import _kernels
        except ImportError as e:
            raise ImportError(
                f"quantplug_qnnpack: the compiled kernel module is missing or broken ({e}); "
                f"reinstall the plugin so pip compiles it: pip install --force-reinstall --no-deps {DISTRIBUTION}"
            ) from e
        _KERNELS = QNNPACKKernels(_kernels)
    return _KERNELS
