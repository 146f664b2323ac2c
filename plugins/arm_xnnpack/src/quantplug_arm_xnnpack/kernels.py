"""Python side of the xnnpack kernels: packed weights and checked wrappers.

Every wrapper validates its tensors with :func:`quantplug.kernels.check_tensor`
(dtype, shape, contiguity, device) and its qparams *before* a pointer reaches
C, raising :class:`quantplug.KernelInputError` that names the op and the
tensor. The C entry points validate again and return a status instead of
reading out of bounds.

Numerics (XNNPACK's qs8 / qc8w / qd8 / qb4w):

* activations int8 asymmetric, [-128, 127], any zero point;
* weights int8 symmetric (zero point 0), narrow range [-127, 127], per output
  channel (or one scale repeated: per tensor);
* static linear: int32 accumulation, int32 bias ``round(bias / (x_scale *
  w_scale))``, requantization ``clamp(round_half_even(acc * m) + zp)`` with
  ``m = x_scale * w_scale / out_scale`` in float32 (:func:`requant_params`);
* dynamic linear (qd8-f32-qc8w): fp32 input quantized per call to int8
  asymmetric per tensor or per row, fp32 output
  ``acc.float() * (x_scale * w_scale) + bias`` (two roundings, no FMA);
* int4 weight-only (f32-qb4w): symmetric int4 weights in [-8, 7] packed two
  per byte, fp32 scales per group of 32/64/128 input features.
"""

from __future__ import annotations

import math
import numbers
import operator
import threading
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from quantplug.errors import KernelInputError
from quantplug.kernels import CffiKernelLibrary, check_tensor, requant_params

from ._version import __version__

__all__ = [
    "DISTRIBUTION",
    "GROUP_SIZES",
    "MAX_REQUANT_SCALE",
    "PackedLinearWeight",
    "PackedConv2dWeight",
    "PackedInt4LinearWeight",
    "XNNPACKKernels",
    "load_kernels",
]

DISTRIBUTION = "quantplug-arm-xnnpack"
#: int4 group sizes the f32-qb4w kernel runs.
GROUP_SIZES = (32, 64, 128)
#: XNNPACK rejects a requantization scale (x_scale * w_scale / out_scale) of 256 or more.
MAX_REQUANT_SCALE = 256.0

_INT8 = torch.int8


@dataclass
class PackedLinearWeight:
    """Weights of a qs8/qd8 linear, packed for the microkernels (ordinary tensors, picklable).

    :param packed: int8, ``[ceil(N/16) * 16 * ceil(K/4) * 4]``: blocks of 16
        output channels, 4 input features per channel per 64-byte row.
    :param scales: fp32 ``[N]`` weight scales.
    :param zero_points: int32 ``[N]`` (always 0: qc8w weights are symmetric).
    :param row_sums: int32 ``[ceil(N/16) * 16]``, ``sum_k w[n, k]``.
    :param n: output features.
    :param k: input features.
    """

    packed: Tensor
    scales: Tensor
    zero_points: Tensor
    row_sums: Tensor
    n: int
    k: int

    def __getstate__(self) -> dict:
        # the cached linear plans hold raw addresses valid in this process only: never pickled
        return {k: v for k, v in self.__dict__.items() if k not in _LINEAR_PLANS}


@dataclass
class PackedConv2dWeight:
    """Weights of a qs8 conv2d, packed per group for the NHWC igemm (ordinary tensors, picklable).

    :param packed: int8, one packed gemm matrix per group (k ordered ky, kx, c).
    :param scales: fp32 ``[Cout]``; ``zero_points``: int32 ``[Cout]`` (all 0).
    :param row_sums: int32, per group ``ceil(Cout/groups / 16) * 16`` entries.
    :param cout, cin_per_group, kernel_h, kernel_w: weight shape ``[Cout, Cin/groups, kh, kw]``.
    :param stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups: geometry.
    """

    packed: Tensor
    scales: Tensor
    zero_points: Tensor
    row_sums: Tensor
    cout: int
    cin_per_group: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    pad_h: int
    pad_w: int
    dilation_h: int
    dilation_w: int
    groups: int

    def __getstate__(self) -> dict:
        # the cached depthwise plan holds raw addresses valid in this process only: never pickled
        return {k: v for k, v in self.__dict__.items() if k not in _DW_CACHES}


#: Attributes under which a PackedLinearWeight keeps its prepared static / dynamic linear plans
#: (see XNNPACKKernels._linear_plan / _dynamic_plan).
_PLAN, _DPLAN = "_xnnpack_plan", "_xnnpack_dplan"
_LINEAR_PLANS = (_PLAN, _DPLAN)
#: Attributes under which a PackedConv2dWeight keeps its prepared depthwise plan (see
#: XNNPACKKernels._dw_plan) and its last validated call (see XNNPACKKernels._conv2d_dw_repeat).
_DW_PLAN, _DW_CALL = "_xnnpack_dw_plan", "_xnnpack_dw_call"
_DW_CACHES = (_DW_PLAN, _DW_CALL)
# The geometry fields of a PackedConv2dWeight as one tuple, read at C speed by the repeat check.
_CONV_GEOMETRY = operator.attrgetter("cout", "cin_per_group", "kernel_h", "kernel_w", "stride_h", "stride_w",
                                     "pad_h", "pad_w", "dilation_h", "dilation_w", "groups")


@dataclass
class PackedInt4LinearWeight:
    """int4 group-wise weights of a weight-only linear (ordinary tensors, picklable).

    :param packed: uint8 ``[ceil(N/16), K / 8, 64]``: blocks of 16 output
        channels; each 64-byte row holds 8 input features of the 16 channels,
        one little-endian 32-bit word per channel with feature ``8 * row + q``
        in bits ``4q .. 4q + 3`` (two's complement). A SIMD lane is then one
        output channel (see ``csrc/xnnpack_internal.h``).
    :param scales: fp32 ``[ceil(N/16), K / group_size, 16]``: per block and
        group the 16 channels' scales (zero for the padded channels).
    :param group_size: 32, 64 or 128.
    :param n: output features.
    :param k: input features.
    """

    packed: Tensor
    scales: Tensor
    group_size: int
    n: int
    k: int


def _finite_positive(value: object, name: str, op: str) -> float:
    if type(value) is float and 0.0 < value < math.inf:
        return value
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KernelInputError(f"{op}: {name} must be a float, got {type(value).__name__}") from None
    if not (math.isfinite(v) and v > 0.0):
        raise KernelInputError(f"{op}: {name}={v} must be finite and > 0")
    return v


def _int8_zero_point(value: object, name: str, op: str) -> int:
    if type(value) is int and -128 <= value <= 127:
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise KernelInputError(f"{op}: {name} must be an integer, got {value!r}")
    v = int(value)
    if not -128 <= v <= 127:
        raise KernelInputError(f"{op}: {name}={v} is outside the int8 range [-128, 127] of XNNPACK qs8 activations")
    return v


class _IdentityCache:
    """Results computed from static tensors (packed weights, qparams), reused while the tensors are unchanged.

    Static qparams and packed weights do not change between calls, so their
    validation, :func:`requant_params` (a few torch ops) and the C pointer
    casts run on the first call only. Keys hold the tensors' ``id`` and
    version counter, and entries hold weak references checked on every hit,
    so a freed, replaced or modified tensor never matches a stale entry.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple] = {}

    @staticmethod
    def key(tensors: tuple, extra: tuple) -> tuple:
        return (*[(id(t), getattr(t, "_version", 0)) for t in tensors], *extra)

    def get(self, key: tuple, tensors: tuple):
        hit = self._entries.get(key)
        if hit is None:
            return None
        for ref, t in zip(hit[0], tensors):
            if (ref() if ref is not None else None) is not t:
                return None
        return hit[1]

    def put(self, key: tuple, tensors: tuple, value):
        refs = tuple(weakref.ref(t) if t is not None else None for t in tensors)
        with self._lock:
            if len(self._entries) >= self._size:
                self._entries.clear()
            self._entries[key] = (refs, value)
        return value


class XNNPACKKernels(CffiKernelLibrary):
    """The compiled xnnpack kernels (``quantplug_arm_xnnpack._kernels``).

    ISA paths: scalar (always), AVX2, AVX-512, AVX-512 VNNI on x86-64; NEON
    and NEON dot product on AArch64; chosen at run time (``set_isa`` /
    ``use_isa`` force one; every path gives bit-identical results).
    """

    #: packed-weight classes (read by the core's lowering to rebuild them from buffers)
    packed_linear_type = PackedLinearWeight
    packed_conv2d_type = PackedConv2dWeight
    packed_int4_linear_type = PackedInt4LinearWeight

    def __init__(self, module=None) -> None:
        if module is None:
            try:
                from . import _kernels as module  # type: ignore[no-redef]
            except ImportError as exc:
                raise ImportError(
                    f"{DISTRIBUTION}: the compiled kernels (quantplug_arm_xnnpack._kernels) are missing or cannot "
                    f"be loaded ({exc}). They are built by pip at install time (needs a C compiler): "
                    f"pip install --force-reinstall --no-deps {DISTRIBUTION}") from exc
        super().__init__(module, plugin_version=__version__, distribution=DISTRIBUTION)
        self.max_k = int(self.lib.xnnpack_max_k())
        self._cache = _IdentityCache()

    # ------------------------------------------------------------ packing --
    def pack_linear_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor) -> PackedLinearWeight:
        """Pack int8 weights ``[N, K]`` (qc8w: symmetric, values in [-127, 127]).

        ``w_scales`` fp32 ``[N]`` must be finite and > 0; ``w_zero_points``
        int32 ``[N]`` must be all 0 (XNNPACK weights are symmetric).
        """
        op = "xnnpack.pack_linear_weight"
        check_tensor(w_q, "w_q", dtype=_INT8, ndim=2, op=op)
        n, k = w_q.shape
        if n == 0 or k == 0:
            raise KernelInputError(f"{op}: w_q has shape {tuple(w_q.shape)}; N and K must be >= 1")
        if k > self.max_k:
            raise KernelInputError(f"{op}: K={k} exceeds the kernels' maximum {self.max_k} "
                                   f"(int32 accumulators must hold K * 255 * 127)")
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(n,), op=op)
        if not bool(torch.isfinite(w_scales).all()) or not bool((w_scales > 0).all()):
            raise KernelInputError(f"{op}: every w_scales entry must be finite and > 0")
        if bool((w_zero_points != 0).any()):
            raise KernelInputError(f"{op}: w_zero_points must be all 0: XNNPACK qc8w weights are symmetric "
                                   f"(quantize them with a symmetric qscheme)")
        if bool((w_q == -128).any()):
            raise KernelInputError(f"{op}: w_q contains -128; XNNPACK qc8w weights are narrow range [-127, 127] "
                                   f"(use quant_min=-127, as get_symmetric_quantization_config does)")
        packed = torch.empty(int(self.lib.xnnpack_qc8w_packed_size(n, k)), dtype=_INT8)
        row_sums = torch.empty(int(self.lib.xnnpack_qc8w_row_sums_size(n)), dtype=torch.int32)
        status = self.lib.xnnpack_pack_qc8w(self.ptr(w_q, "int8_t *"), n, k, self.ptr(packed, "int8_t *"),
                                            packed.numel(), self.ptr(row_sums, "int32_t *"), row_sums.numel())
        self.check_status(status, op)
        return PackedLinearWeight(packed, w_scales.clone(), w_zero_points.clone(), row_sums, int(n), int(k))

    def _packed_ptrs(self, packed: object, op: str) -> tuple:
        """Validate ``packed`` (once per set of tensors) and return its C pointers."""
        if not isinstance(packed, PackedLinearWeight):
            raise KernelInputError(f"{op}: packed must be a PackedLinearWeight from pack_linear_weight, "
                                   f"got {type(packed).__name__}")
        tensors = (packed.packed, packed.row_sums, packed.scales)
        key = _IdentityCache.key(tensors, ("packed", packed.n, packed.k))
        ptrs = self._cache.get(key, tensors)
        if ptrs is not None:
            return ptrs
        n, k = packed.n, packed.k
        if not (isinstance(n, int) and isinstance(k, int) and n >= 1 and 1 <= k <= self.max_k):
            raise KernelInputError(f"{op}: packed has invalid sizes n={n!r}, k={k!r}")
        n_pad = -(-n // 16) * 16  # layout of xnnpack_qc8w_packed_size: N to 16, K to 4
        check_tensor(packed.packed, "packed.packed", dtype=_INT8, shape=(n_pad * (-(-k // 4) * 4),), op=op)
        check_tensor(packed.row_sums, "packed.row_sums", dtype=torch.int32, shape=(n_pad,), op=op)
        check_tensor(packed.scales, "packed.scales", dtype=torch.float32, shape=(n,), op=op)
        if not bool(torch.isfinite(packed.scales).all()) or not bool((packed.scales > 0).all()):
            raise KernelInputError(f"{op}: every packed.scales entry must be finite and > 0")
        ptrs = (self.ptr(packed.packed, "int8_t *"), self.ptr(packed.row_sums, "int32_t *"),
                self.ptr(packed.scales, "float *"))
        return self._cache.put(key, tensors, ptrs)

    def _static_ptrs(self, packed: object, x_scale: float, out_scale: float, bias: object, op: str) -> tuple:
        """C pointers of the packed weight, multipliers and int32 bias for these static qparams (computed once)."""
        if not isinstance(packed, PackedLinearWeight):
            raise KernelInputError(f"{op}: packed must be a PackedLinearWeight from pack_linear_weight, "
                                   f"got {type(packed).__name__}")
        if bias is not None and not isinstance(bias, Tensor):
            self._check_bias(bias, packed.n, op)  # raises, naming the op
        tensors = (packed.packed, packed.row_sums, packed.scales, bias)
        key = _IdentityCache.key(tensors, ("static", packed.n, packed.k, x_scale, out_scale))
        hit = self._cache.get(key, tensors)
        if hit is not None:
            return hit
        w_ptr, rs_ptr, _ = self._packed_ptrs(packed, op)
        bias = self._check_bias(bias, packed.n, op)
        mult, bias_q = requant_params(x_scale, packed.scales, out_scale, bias)
        largest, smallest = float(mult.max()), float(mult.min())
        if not math.isfinite(largest) or largest >= MAX_REQUANT_SCALE:
            raise KernelInputError(
                f"{op}: requantization scale x_scale * w_scale / out_scale reaches {largest:.6g}; XNNPACK "
                f"supports < {MAX_REQUANT_SCALE:g} (out_scale={out_scale:g} is too small for x_scale={x_scale:g})")
        if smallest <= 0.0:
            raise KernelInputError(f"{op}: requantization scale underflows to 0 (x_scale={x_scale:g}, "
                                   f"out_scale={out_scale:g})")
        # mult and bias_q ride along in the entry so the pointers stay valid
        value = (w_ptr, rs_ptr, self.ptr(mult, "float *"), mult.numel(),
                 self.ptr(bias_q, "int32_t *") if bias_q is not None else self.ffi.NULL, mult, bias_q)
        return self._cache.put(key, tensors, value)

    def _check_bias(self, bias: object, n: int, op: str) -> Tensor | None:
        if bias is None:
            return None
        return check_tensor(bias, "bias", dtype=torch.float32, shape=(n,), op=op)

    @staticmethod
    def _rows(x: Tensor, k: int, name: str, op: str) -> tuple[int, tuple[int, ...]]:
        shape = x.shape
        if len(shape) == 2 and shape[1] == k:
            return shape[0], (shape[0],)
        if x.dim() < 1 or x.shape[-1] != k:
            raise KernelInputError(f"{op}: {name} has shape {tuple(x.shape)}; its last dim must be K={k}")
        lead = tuple(x.shape[:-1])
        return math.prod(lead), lead

    # ------------------------------------------------------- static linear --
    def linear(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedLinearWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """int8 linear (qs8-qc8w): ``x_q`` int8 ``[..., K]`` -> int8 ``[..., N]``.

        ``bias`` is fp32 ``[N]`` (quantized to int32 with scale
        ``x_scale * w_scale``) or ``None``; ``relu`` fuses a ReLU through the
        output clamp (``quant_min = max(-128, out_zero_point)``). Calls with plain Python
        scalar qparams run a C plan cached on ``packed`` (:meth:`_linear_plan`).
        """
        op = "xnnpack.linear"
        # Hot path: the cached C plan when the layer and its plain-scalar qparams are those it was
        # prepared for (identity, address and version of every tensor it derives from); anything
        # else, or a run C refuses (scalar ISA), takes the checked path below and its errors.
        if (type(packed) is PackedLinearWeight and type(x_scale) is float and type(out_scale) is float
                and type(x_zero_point) is int and type(out_zero_point) is int and type(relu) is bool):
            args = (x_scale, x_zero_point, out_scale, out_zero_point, relu)
            plan = packed.__dict__.get(_PLAN)
            if plan is None or not self._plan_current(plan, packed, bias, args):
                plan = self._linear_plan(packed, bias, args)
            k = packed.k
            if (plan is not None and type(x_q) is Tensor and x_q.dtype is _INT8 and x_q.is_cpu and x_q.dim() >= 1
                    and x_q.shape[-1] == k and x_q.is_contiguous()):
                m, n = x_q.numel() // k, packed.n
                out = x_q.new_empty((m, n))  # cheaper per call than torch.empty(..., dtype=...)
                self.sync_threads()
                if self.lib.xnnpack_linear_run(plan[6], x_q.data_ptr(), m, out.data_ptr()) == 0:
                    return out if x_q.dim() == 2 else out.view(x_q.shape[:-1] + (n,))
        x_scale = _finite_positive(x_scale, "x_scale", op)
        out_scale = _finite_positive(out_scale, "out_scale", op)
        w_ptr, rs_ptr, mult_ptr, n_mult, bias_ptr, _, _ = self._static_ptrs(packed, x_scale, out_scale, bias, op)
        check_tensor(x_q, "x_q", dtype=_INT8, op=op)
        m, lead = self._rows(x_q, packed.k, "x_q", op)
        x_zp = _int8_zero_point(x_zero_point, "x_zero_point", op)
        out_zp = _int8_zero_point(out_zero_point, "out_zero_point", op)
        out = torch.empty((*lead, packed.n), dtype=_INT8)
        self.sync_threads()
        status = self.lib.xnnpack_qs8_qc8w_linear(
            self.ptr(x_q, "int8_t *"), m, packed.k, x_zp, w_ptr, rs_ptr, packed.n, bias_ptr, mult_ptr, n_mult,
            out_zp, max(-128, out_zp) if relu else -128, 127, self.ptr(out, "int8_t *"))
        self.check_status(status, op)
        return out

    @staticmethod
    def _plan_key(packed: PackedLinearWeight, bias: Tensor | None) -> tuple:
        """What a linear plan derives from, besides the tensors' identity: their addresses and
        version counters (an in-place change re-prepares) and the sizes."""
        return (packed.packed.data_ptr(), packed.packed._version, packed.row_sums._version, packed.scales._version,
                -1 if bias is None else bias._version, packed.n, packed.k)

    def _plan_current(self, plan: tuple, packed: PackedLinearWeight, bias: Tensor | None, args: tuple) -> bool:
        """Whether a cached plan (see :meth:`_linear_plan`) still matches the layer and qparams."""
        return (plan[0] is packed.packed and plan[1] is packed.row_sums and plan[2] is packed.scales
                and plan[3] is bias and plan[4] == args and plan[5] == self._plan_key(packed, bias))

    def _linear_plan(self, packed: PackedLinearWeight, bias: Tensor | None, args: tuple) -> tuple | None:
        """Prepare and cache the static linear plan for plain-scalar ``args`` (x_scale,
        x_zero_point, out_scale, out_zero_point, relu), or None when any check fails (the
        checked path then raises the precise error)."""
        op = "xnnpack.linear"
        x_scale, x_zero_point, out_scale, out_zero_point, relu = args
        try:
            x_scale = _finite_positive(x_scale, "x_scale", op)
            out_scale = _finite_positive(out_scale, "out_scale", op)
            x_zp = _int8_zero_point(x_zero_point, "x_zero_point", op)
            out_zp = _int8_zero_point(out_zero_point, "out_zero_point", op)
            w_ptr, rs_ptr, mult_ptr, n_mult, bias_ptr, _, _ = self._static_ptrs(packed, x_scale, out_scale, bias, op)
        except KernelInputError:
            return None
        size = int(self.lib.xnnpack_linear_plan_size(packed.n))
        buf = torch.empty(size + 64, dtype=torch.uint8)
        addr = -(-buf.data_ptr() // 64) * 64  # the C side keeps its arrays aligned
        if self.lib.xnnpack_linear_prepare(addr, size, packed.k, x_zp, w_ptr, rs_ptr, packed.n, bias_ptr, mult_ptr,
                                           n_mult, out_zp, max(-128, out_zp) if relu else -128, 127) != 0:
            return None
        plan = (packed.packed, packed.row_sums, packed.scales, bias, args, self._plan_key(packed, bias), addr, buf)
        packed.__dict__[_PLAN] = plan
        return plan

    def _dynamic_plan(self, packed: PackedLinearWeight, bias: Tensor | None) -> tuple | None:
        """Prepare and cache the dynamic linear plan (weight scales and fp32 bias), or None when
        any check fails (the checked path then raises the precise error)."""
        op = "xnnpack.linear_dynamic"
        try:
            w_ptr, rs_ptr, scales_ptr = self._packed_ptrs(packed, op)
            bias = self._check_bias(bias, packed.n, op)
        except KernelInputError:
            return None
        size = int(self.lib.xnnpack_dynamic_plan_size(packed.n))
        buf = torch.empty(size + 64, dtype=torch.uint8)
        addr = -(-buf.data_ptr() // 64) * 64  # the C side keeps its arrays aligned
        if self.lib.xnnpack_dynamic_prepare(addr, size, packed.k, w_ptr, rs_ptr, packed.n, scales_ptr, packed.n,
                                            self.ptr(bias, "float *") if bias is not None else self.ffi.NULL) != 0:
            return None
        plan = (packed.packed, packed.row_sums, packed.scales, bias, None, self._plan_key(packed, bias), addr, buf)
        packed.__dict__[_DPLAN] = plan
        return plan

    # ------------------------------------------------------ dynamic linear --
    def quantize_dynamic(self, x: Tensor, per_row: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """The qd8 activation quantizer: fp32 ``[..., K]`` -> (int8 same shape, fp32 scales, int32 zero points).

        One (scale, zero point) per row of ``x.reshape(-1, K)`` when
        ``per_row``, else one for the tensor (repeated per row). qparams are
        those of :func:`quantplug.affine.choose_qparams` (range including 0,
        ``scale = (max - min) / 255``, at least float32 eps).
        """
        op = "xnnpack.quantize_dynamic"
        check_tensor(x, "x", dtype=torch.float32, op=op)
        if x.dim() < 1 or x.shape[-1] == 0:
            raise KernelInputError(f"{op}: x has shape {tuple(x.shape)}; need a non-empty last dim")
        k = x.shape[-1]
        m = x.numel() // k
        xq = torch.empty(x.shape, dtype=_INT8)
        scales = torch.empty(m, dtype=torch.float32)
        zps = torch.empty(m, dtype=torch.int32)
        status = self.lib.xnnpack_qd8_quantize(self.ptr(x, "float *"), m, k, int(bool(per_row)),
                                               self.ptr(xq, "int8_t *"), self.ptr(scales, "float *"),
                                               self.ptr(zps, "int32_t *"))
        if status == 1:
            raise KernelInputError(f"{op}: x contains inf or NaN; dynamic quantization needs finite inputs")
        self.check_status(status, op)
        return xq, scales, zps

    def _float_linear_args(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None, op: str) -> tuple:
        """Checked arguments of an fp32-in, fp32-out linear: (weight pointers, rows, bias, empty output)."""
        ptrs = self._packed_ptrs(packed, op)
        check_tensor(x, "x", dtype=torch.float32, op=op)
        m, lead = self._rows(x, packed.k, "x", op)
        bias = self._check_bias(bias, packed.n, op)
        out = torch.empty((*lead, packed.n), dtype=torch.float32)
        self.sync_threads()
        return ptrs, m, bias, out

    def linear_dynamic(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None,
                       per_row: bool = False) -> Tensor:
        """Dynamic linear (qd8-f32-qc8w): fp32 ``[..., K]`` -> fp32 ``[..., N]``.

        ``x`` is quantized on every call to int8 asymmetric, per row of
        ``x.reshape(-1, K)`` when ``per_row`` else per tensor.
        """
        op = "xnnpack.linear_dynamic"
        # Hot path as in linear: the cached plan, else (or on any status but 0, e.g. NaN input)
        # the checked path below with its precise errors.
        if type(packed) is PackedLinearWeight and type(per_row) is bool:
            plan = packed.__dict__.get(_DPLAN)
            if plan is None or not self._plan_current(plan, packed, bias, None):
                plan = self._dynamic_plan(packed, bias)
            k = packed.k
            if (plan is not None and type(x) is Tensor and x.dtype is torch.float32 and x.is_cpu and x.dim() >= 1
                    and x.shape[-1] == k and x.is_contiguous()):
                m, n = x.numel() // k, packed.n
                out = x.new_empty((m, n))
                self.sync_threads()
                if self.lib.xnnpack_dynamic_run(plan[6], x.data_ptr(), m, per_row, out.data_ptr()) == 0:
                    return out if x.dim() == 2 else out.view(x.shape[:-1] + (n,))
        (w_ptr, rs_ptr, scales_ptr), m, bias, out = self._float_linear_args(x, packed, bias, op)
        status = self.lib.xnnpack_qd8_f32_qc8w_linear(
            self.ptr(x, "float *"), m, packed.k, int(bool(per_row)), w_ptr, rs_ptr, packed.n, scales_ptr, packed.n,
            self.ptr(bias, "float *") if bias is not None else self.ffi.NULL, self.ptr(out, "float *"))
        if status == 1 and m > 0 and not bool(torch.isfinite(x).all()):
            raise KernelInputError(f"{op}: x contains inf or NaN; dynamic quantization needs finite inputs")
        self.check_status(status, op)
        return out

    # --------------------------------------------------- weight-only int8 --
    def linear_weight_only(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None) -> Tensor:
        """int8 weight-only linear (XNNPACK f32-qc8w): fp32 ``[..., K]`` -> fp32 ``[..., N]``.

        The weights of ``pack_linear_weight`` (int8 per channel, symmetric);
        activations stay fp32: ``out = (x @ w.T) * w_scale + bias``, each sum as four
        fused multiply-add chains over ``k % 4`` (in K order within each), added
        ``(a0 + a1) + (a2 + a3)``, so every ISA path gives the same bits.
        """
        op = "xnnpack.linear_weight_only"
        (w_ptr, _, scales_ptr), m, bias, out = self._float_linear_args(x, packed, bias, op)
        self.check_status(self.lib.xnnpack_f32_qc8w_linear(
            self.ptr(x, "float *"), m, packed.k, w_ptr, packed.n, scales_ptr, packed.n,
            self.ptr(bias, "float *") if bias is not None else self.ffi.NULL, self.ptr(out, "float *")), op)
        return out

    # ---------------------------------------------------------------- add --
    def _same_layout_nhwc(self, t: Tensor, name: str, op: str) -> Tensor:
        """A contiguous view of ``t``'s memory: ``t`` itself, or its NHWC view when it is channels_last."""
        if isinstance(t, Tensor) and t.dim() == 4 and not t.is_contiguous() and \
                t.is_contiguous(memory_format=torch.channels_last):
            return t.permute(0, 2, 3, 1)
        return check_tensor(t, name, dtype=_INT8, op=op)

    def add(self, a_q: Tensor, a_scale: float, a_zero_point: int, b_q: Tensor, b_scale: float, b_zero_point: int,
            out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """Quantized add (qs8-vadd) of two int8 tensors of the same shape and layout -> int8, same layout.

        Each input is dequantized to fp32, the sum requantized with ``out_scale`` /
        ``out_zero_point`` (round half to even); ``relu`` clamps at the output zero point.
        Contiguous or channels_last inputs (as conv2d returns) are accepted; no broadcasting.
        """
        op = "xnnpack.add"
        a_view = self._same_layout_nhwc(a_q, "a_q", op)
        b_view = self._same_layout_nhwc(b_q, "b_q", op)
        check_tensor(a_view, "a_q", dtype=_INT8, op=op)
        if tuple(b_q.shape) != tuple(a_q.shape) or b_q.stride() != a_q.stride():
            raise KernelInputError(f"{op}: b_q has shape {tuple(b_q.shape)} and strides {b_q.stride()}, expected the "
                                   f"shape {tuple(a_q.shape)} and strides {a_q.stride()} of a_q (no broadcasting)")
        check_tensor(b_view, "b_q", dtype=_INT8, op=op)
        a_scale = _finite_positive(a_scale, "a_scale", op)
        b_scale = _finite_positive(b_scale, "b_scale", op)
        out_scale = _finite_positive(out_scale, "out_scale", op)
        a_zp = _int8_zero_point(a_zero_point, "a_zero_point", op)
        b_zp = _int8_zero_point(b_zero_point, "b_zero_point", op)
        out_zp = _int8_zero_point(out_zero_point, "out_zero_point", op)
        out = torch.empty_like(a_q)
        self.sync_threads()
        status = self.lib.xnnpack_qs8_vadd(self.ptr(a_view, "int8_t *"), self.ptr(b_view, "int8_t *"), a_q.numel(),
                                           a_zp, a_scale, b_zp, b_scale, out_scale, out_zp,
                                           max(-128, out_zp) if relu else -128, 127, self.ptr(out, "int8_t *"))
        self.check_status(status, op)
        return out

    # ------------------------------------------------------------- conv2d --
    def pack_conv2d_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor, stride=(1, 1),
                           padding=(0, 0), dilation=(1, 1), groups: int = 1) -> PackedConv2dWeight:
        """Pack int8 OIHW weights ``[Cout, Cin/groups, kh, kw]`` (qc8w: symmetric, [-127, 127]) with the geometry."""
        op = "xnnpack.pack_conv2d_weight"
        check_tensor(w_q, "w_q", dtype=_INT8, ndim=4, op=op)
        cout, cin_g, kh, kw = (int(d) for d in w_q.shape)
        geometry = {}
        for name, value, least in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
            pair = (value, value) if isinstance(value, int) else tuple(value)
            if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= least for v in pair):
                raise KernelInputError(f"{op}: {name}={value!r} must be an int or a pair of ints >= {least}")
            geometry[name] = pair
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or cout % groups:
            raise KernelInputError(f"{op}: groups={groups!r} must be a positive divisor of Cout={cout}")
        if min(cout, cin_g, kh, kw) < 1:
            raise KernelInputError(f"{op}: w_q has shape {tuple(w_q.shape)}; every dim must be >= 1")
        if kh * kw * cin_g > self.max_k:
            raise KernelInputError(f"{op}: kh * kw * Cin/groups = {kh * kw * cin_g} exceeds the kernels' maximum "
                                   f"{self.max_k}")
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(cout,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(cout,), op=op)
        if not bool(torch.isfinite(w_scales).all()) or not bool((w_scales > 0).all()):
            raise KernelInputError(f"{op}: every w_scales entry must be finite and > 0")
        if bool((w_zero_points != 0).any()):
            raise KernelInputError(f"{op}: w_zero_points must be all 0: XNNPACK qc8w weights are symmetric")
        if bool((w_q == -128).any()):
            raise KernelInputError(f"{op}: w_q contains -128; XNNPACK qc8w weights are narrow range [-127, 127]")
        packed = torch.empty(int(self.lib.xnnpack_qc8w_conv2d_packed_size(groups, cout, cin_g, kh, kw)), dtype=_INT8)
        row_sums = torch.empty(int(self.lib.xnnpack_qc8w_conv2d_row_sums_size(groups, cout)), dtype=torch.int32)
        status = self.lib.xnnpack_pack_qc8w_conv2d(self.ptr(w_q, "int8_t *"), cout, cin_g, kh, kw, groups,
                                                   self.ptr(packed, "int8_t *"), packed.numel(),
                                                   self.ptr(row_sums, "int32_t *"), row_sums.numel())
        self.check_status(status, op)
        (sh, sw), (ph, pw), (dh, dw) = geometry["stride"], geometry["padding"], geometry["dilation"]
        return PackedConv2dWeight(packed, w_scales.clone(), w_zero_points.clone(), row_sums, cout, cin_g, kh, kw,
                                  sh, sw, ph, pw, dh, dw, groups)

    def conv2d(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedConv2dWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False) -> Tensor:
        """int8 conv2d (qs8-qc8w igemm): ``x_q`` int8 ``[N, Cin, H, W]`` -> int8 ``[N, Cout, OH, OW]``.

        Computes in NHWC: a channels_last input is used in place (a contiguous
        NCHW one is transposed first), and the output is returned in
        channels_last memory (NCHW logical shape), ready for the next conv.

        A depthwise layer on an ISA with a prepared path (AVX-512 VNNI) caches its per-layer
        constants on ``packed`` (:meth:`_dw_plan`) and a repeat of its last validated call
        skips the Python checks (:meth:`_conv2d_dw_repeat`); both are invalidated by any
        change of qparams, bias object, tensor versions or geometry. Outputs are unchanged.
        """
        op = "xnnpack.conv2d"
        fast = packed.__dict__.get(_DW_CALL) if type(packed) is PackedConv2dWeight else None
        if fast is not None:
            out = self._conv2d_dw_repeat(fast, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point,
                                         relu)
            if out is not None:
                return out
        if not isinstance(packed, PackedConv2dWeight):
            raise KernelInputError(f"{op}: packed must be a PackedConv2dWeight from pack_conv2d_weight, "
                                   f"got {type(packed).__name__}")
        p = packed
        cout, groups = p.cout, p.groups
        cin = p.cin_per_group * groups
        if not isinstance(x_q, Tensor) or x_q.dim() != 4:
            check_tensor(x_q, "x_q", dtype=_INT8, ndim=4, op=op)
        n, c_in, h, w = x_q.shape
        if c_in != cin:
            raise KernelInputError(f"{op}: x_q has shape {tuple(x_q.shape)}; expected Cin={cin} channels (dim 1)")
        # a channels_last int8 CPU input (the output of the previous conv) is used in place without
        # the permuted view and its checks (~1.5 us of a depthwise call); anything else goes through them
        if x_q.dtype is _INT8 and x_q.is_cpu and x_q.is_contiguous(memory_format=torch.channels_last):
            nhwc = x_q
        else:
            nhwc = x_q.permute(0, 2, 3, 1)
            if not nhwc.is_contiguous():
                check_tensor(x_q, "x_q", dtype=_INT8, op=op)  # NCHW-contiguous (or raises): transpose once
                nhwc = nhwc.contiguous()
            check_tensor(nhwc, "x_q (NHWC view)", dtype=_INT8, op=op)
        span_h, span_w = p.dilation_h * (p.kernel_h - 1) + 1, p.dilation_w * (p.kernel_w - 1) + 1
        if h + 2 * p.pad_h < span_h or w + 2 * p.pad_w < span_w:
            raise KernelInputError(f"{op}: input {h}x{w} with padding ({p.pad_h}, {p.pad_w}) is smaller than the "
                                   f"dilated kernel {span_h}x{span_w}")
        oh = (h + 2 * p.pad_h - span_h) // p.stride_h + 1
        ow = (w + 2 * p.pad_w - span_w) // p.stride_w + 1
        x_scale = _finite_positive(x_scale, "x_scale", op)
        out_scale = _finite_positive(out_scale, "out_scale", op)
        x_zp = _int8_zero_point(x_zero_point, "x_zero_point", op)
        out_zp = _int8_zero_point(out_zero_point, "out_zero_point", op)
        if bias is not None and not isinstance(bias, Tensor):
            self._check_bias(bias, cout, op)  # raises, naming the op
        # the packed tensors, multipliers and int32 bias are checked and converted once per set of tensors
        tensors = (p.packed, p.row_sums, p.scales, bias)
        key = _IdentityCache.key(tensors, ("conv", x_scale, out_scale, cout, groups, p.cin_per_group, p.kernel_h,
                                           p.kernel_w))
        cached = self._cache.get(key, tensors)
        if cached is None:
            check_tensor(p.packed, "packed.packed", dtype=_INT8, shape=(int(self.lib.xnnpack_qc8w_conv2d_packed_size(
                groups, cout, p.cin_per_group, p.kernel_h, p.kernel_w)),), op=op)
            check_tensor(p.row_sums, "packed.row_sums", dtype=torch.int32,
                         shape=(int(self.lib.xnnpack_qc8w_conv2d_row_sums_size(groups, cout)),), op=op)
            check_tensor(p.scales, "packed.scales", dtype=torch.float32, shape=(cout,), op=op)
            bias_f = self._check_bias(bias, cout, op)
            mult, bias_q = requant_params(x_scale, p.scales, out_scale, bias_f)
            if float(mult.max()) >= MAX_REQUANT_SCALE or not math.isfinite(float(mult.max())):
                raise KernelInputError(f"{op}: requantization scale x_scale * w_scale / out_scale reaches "
                                       f"{float(mult.max()):.6g}; XNNPACK supports < {MAX_REQUANT_SCALE:g}")
            if float(mult.min()) <= 0.0:
                raise KernelInputError(f"{op}: requantization scale underflows to 0")
            # mult and bias_q ride along in the entry so the pointers stay valid
            cached = self._cache.put(key, tensors, (
                self.ptr(p.packed, "int8_t *"), self.ptr(p.row_sums, "int32_t *"), self.ptr(mult, "float *"),
                mult.numel(), self.ptr(bias_q, "int32_t *") if bias_q is not None else self.ffi.NULL, mult, bias_q))
        w_ptr, rs_ptr, mult_ptr, n_mult, bias_ptr = cached[:5]
        lo = max(-128, out_zp) if relu else -128
        # channels_last int8 output (NHWC in memory); new_empty_strided costs less per call than
        # torch.empty(memory_format=...) for the same strides
        out = nhwc.new_empty_strided((n, cout, oh, ow), (oh * ow * cout, 1, ow * cout, cout))
        self.sync_threads()
        if groups == cout and p.cin_per_group == 1:  # depthwise: the prepared plan, when this ISA has one
            plan = self._dw_plan(p, x_scale, x_zp, out_scale, bias, cached, op)
            if plan is not None:
                status = self.lib.xnnpack_dw_run(plan[4], nhwc.data_ptr(), n, h, w, oh, ow, out_zp, lo, 127,
                                                  out.data_ptr())
                if status != 2:  # 2: another ISA is active than the plan's (set_isa): the plain call below
                    self.check_status(status, op)
                    self._remember_dw_call(p, (x_scale, x_zero_point, out_scale, out_zero_point, relu), bias, plan,
                                           out_zp, lo)
                    return out
        status = self.lib.xnnpack_qs8_qc8w_conv2d_nhwc(
            self.ptr(nhwc, "int8_t *"), n, h, w, cin, x_zp, w_ptr, rs_ptr, groups, cout, p.kernel_h, p.kernel_w,
            p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, oh, ow, bias_ptr, mult_ptr,
            n_mult, out_zp, lo, 127, self.ptr(out, "int8_t *"))
        self.check_status(status, op)
        return out

    @staticmethod
    def _dw_versions(packed: PackedConv2dWeight, bias: Tensor | None) -> tuple:
        """In-place version counters of every tensor a depthwise plan is computed from."""
        return (-1 if bias is None else bias._version, packed.packed._version, packed.scales._version)

    def _dw_plan(self, packed: PackedConv2dWeight, x_scale: float, x_zp: int, out_scale: float,
                 bias: Tensor | None, cached: tuple, op: str) -> tuple | None:
        """The prepared depthwise plan for these (already validated) static qparams, or None.

        None when the active ISA has no prepared path (``xnnpack_dw_plan_size`` is 0); that is
        not cached, so a later call under another ISA still gets a plan. The plan is kept on
        the packed weight, keyed on the qparams, the geometry, the identity of the bias and
        packed tensors and their version counters: any change re-prepares it. ``cached`` holds
        the C pointers of the validated weights, multipliers and int32 bias (see conv2d).
        """
        key = (x_scale, x_zp, out_scale, _CONV_GEOMETRY(packed))
        idents = (bias, packed.packed, packed.scales, packed.row_sums)
        versions = self._dw_versions(packed, bias)
        hit = packed.__dict__.get(_DW_PLAN)
        if hit is not None and hit[0] == key and hit[2] == versions and all(a is b for a, b in zip(hit[1], idents)):
            return hit
        p = packed
        size = int(self.lib.xnnpack_dw_plan_size(p.cout, p.kernel_h, p.kernel_w, p.stride_h, p.dilation_h))
        if size == 0:
            return None
        buf = torch.empty(size + 64, dtype=torch.uint8)
        addr = -(-buf.data_ptr() // 64) * 64  # the C side keeps its constants 64-byte aligned
        w_ptr, _, mult_ptr, n_mult, bias_ptr = cached[:5]
        status = self.lib.xnnpack_dw_prepare(addr, size, w_ptr, p.cout, p.kernel_h, p.kernel_w, p.stride_h,
                                             p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, x_zp,
                                             bias_ptr, mult_ptr, n_mult)
        if status == 2:  # the ISA changed between the size and the prepare: no plan this time
            return None
        self.check_status(status, op)
        entry = (key, idents, versions, buf, addr)
        packed.__dict__[_DW_PLAN] = entry
        return entry

    @staticmethod
    def _remember_dw_call(packed: PackedConv2dWeight, args: tuple, bias: Tensor | None, plan: tuple, out_zp: int,
                          lo: int) -> None:
        """Remember a validated depthwise call so that a repeat skips the checks (see
        :meth:`_conv2d_dw_repeat`); only for plain Python scalars, which compare exactly and
        cheaply (comparing a tensor qparam would be a tensor op)."""
        if [type(a) for a in args] != [float, int, float, int, bool]:
            return
        packed.__dict__[_DW_CALL] = (args, bias, plan[0][3], plan[1], plan[2], plan[4], plan[3], out_zp, lo)

    def _conv2d_dw_repeat(self, fast: tuple, x_q, x_scale, x_zero_point, packed: PackedConv2dWeight, bias,
                          out_scale, out_zero_point, relu) -> Tensor | None:
        """The depthwise call remembered by :meth:`_remember_dw_call` again, or None when anything
        differs from it (then the fully checked path runs, with its errors): the same plain
        qparams, bias object, packed tensors, geometry and version counters, and a channels_last
        int8 CPU input of the plan's channel count whose size the kernel covers.
        """
        args, fbias, geometry, idents, versions, addr, _buf, out_zp, lo = fast
        if not (type(x_scale) is type(out_scale) is float and type(x_zero_point) is type(out_zero_point) is int
                and type(relu) is bool):
            return None
        if bias is not fbias or (x_scale, x_zero_point, out_scale, out_zero_point, relu) != args:
            return None
        if idents[1] is not packed.packed or idents[2] is not packed.scales or idents[3] is not packed.row_sums \
                or _CONV_GEOMETRY(packed) != geometry or self._dw_versions(packed, bias) != versions:
            return None
        if not (type(x_q) is Tensor and x_q.dtype is _INT8 and x_q.dim() == 4 and x_q.is_cpu
                and x_q.is_contiguous(memory_format=torch.channels_last)):
            return None
        n, c, h, w = x_q.shape
        cout, _, kh, kw, sh, sw, ph, pw, dh, dw, _ = geometry
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if c != cout or h + 2 * ph < span_h or w + 2 * pw < span_w:
            return None
        oh, ow = (h + 2 * ph - span_h) // sh + 1, (w + 2 * pw - span_w) // sw + 1
        out = x_q.new_empty_strided((n, c, oh, ow), (oh * ow * c, 1, ow * c, c))
        self.sync_threads()
        status = self.lib.xnnpack_dw_run(addr, x_q.data_ptr(), n, h, w, oh, ow, out_zp, lo, 127, out.data_ptr())
        if status == 2:  # another ISA is active now (set_isa): the checked path takes the plain call
            return None
        self.check_status(status, "xnnpack.conv2d")
        return out

    # ------------------------------------------------ int4 weight-only -----
    def pack_linear_weight_int4(self, w_q: Tensor, scales: Tensor, group_size: int) -> PackedInt4LinearWeight:
        """Pack int4 weights (int8 storage ``[N, K]``, values in [-8, 7]) with fp32 scales ``[N, K / group_size]``."""
        op = "xnnpack.pack_linear_weight_int4"
        if group_size not in GROUP_SIZES:
            raise KernelInputError(f"{op}: group_size={group_size!r}; XNNPACK qb4w supports {list(GROUP_SIZES)}")
        check_tensor(w_q, "w_q", dtype=_INT8, ndim=2, op=op)
        n, k = w_q.shape
        if n == 0 or k == 0 or k % group_size:
            raise KernelInputError(f"{op}: w_q has shape {tuple(w_q.shape)}; K must be a positive multiple "
                                   f"of group_size={group_size}")
        check_tensor(scales, "scales", dtype=torch.float32, shape=(n, k // group_size), op=op)
        if not bool(torch.isfinite(scales).all()) or bool((scales < 0).any()):
            raise KernelInputError(f"{op}: scales must be finite and >= 0")
        if bool(((w_q < -8) | (w_q > 7)).any()):
            raise KernelInputError(f"{op}: w_q has values outside the int4 range [-8, 7]")
        blocks = -(-n // 16)
        packed = torch.empty((blocks, k // 8, 64), dtype=torch.uint8)
        packed_scales = torch.empty((blocks, k // group_size, 16), dtype=torch.float32)
        status = self.lib.xnnpack_pack_qb4w(self.ptr(w_q, "int8_t *"), self.ptr(scales, "float *"), n, k, group_size,
                                            self.ptr(packed, "uint8_t *"), packed.numel(),
                                            self.ptr(packed_scales, "float *"), packed_scales.numel())
        self.check_status(status, op)
        return PackedInt4LinearWeight(packed, packed_scales, int(group_size), int(n), int(k))

    def linear_int4_weight_only(self, x: Tensor, packed: PackedInt4LinearWeight, bias: Tensor | None) -> Tensor:
        """int4 weight-only linear (f32-qb4w): fp32 ``[..., K]`` -> fp32 ``[..., N]``.

        Scalar, AVX2, AVX-512 and NEON paths, bit-identical (one fixed fp32 summation order: per
        output, a fused multiply-add chain in K order within each group, then
        ``tot = fma(group_sum, scale, tot)`` over the groups, then ``+ bias``; see ``csrc/qb4w.c``).
        """
        op = "xnnpack.linear_int4_weight_only"
        if not isinstance(packed, PackedInt4LinearWeight):
            raise KernelInputError(f"{op}: packed must be a PackedInt4LinearWeight from pack_linear_weight_int4, "
                                   f"got {type(packed).__name__}")
        n, k, g = packed.n, packed.k, packed.group_size
        if g not in GROUP_SIZES or n < 1 or k < 1 or k % g:
            raise KernelInputError(f"{op}: packed has invalid sizes n={n}, k={k}, group_size={g}")
        blocks = -(-n // 16)
        check_tensor(packed.packed, "packed.packed", dtype=torch.uint8, shape=(blocks, k // 8, 64), op=op)
        check_tensor(packed.scales, "packed.scales", dtype=torch.float32, shape=(blocks, k // g, 16), op=op)
        check_tensor(x, "x", dtype=torch.float32, op=op)
        m, lead = self._rows(x, k, "x", op)
        bias = self._check_bias(bias, n, op)
        out = torch.empty((*lead, n), dtype=torch.float32)
        self.sync_threads()
        status = self.lib.xnnpack_f32_qb4w_linear(
            self.ptr(x, "float *"), m, k, self.ptr(packed.packed, "uint8_t *"), n,
            self.ptr(packed.scales, "float *"), g, self.ptr(bias, "float *") if bias is not None else self.ffi.NULL,
            self.ptr(out, "float *"))
        self.check_status(status, op)
        return out


_instance: XNNPACKKernels | None = None
_instance_lock = threading.Lock()


def load_kernels() -> XNNPACKKernels:
    """The process-wide kernel library (loaded once; raises ``KernelBuildMismatchError`` on a stale build)."""
    global _instance
    with _instance_lock:
        if _instance is None:
            _instance = XNNPACKKernels()
        return _instance
