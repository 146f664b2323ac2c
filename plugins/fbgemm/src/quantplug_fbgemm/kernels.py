"""Python side of the fbgemm kernels: input checks, then one call into C.

Every public method validates its tensors with :func:`quantplug.kernels.check_tensor`
(dtype, shape, contiguity, device) before a pointer reaches C, and raises
:class:`quantplug.KernelInputError` naming the op and the tensor. The C kernels
check their arguments again and return ``QP_ERR_INVALID_ARGUMENT`` rather than crash.

Numerics (FBGEMM's): uint8 activations with reduce_range (0..127), int8 weights
(symmetric per channel by default), int32 bias, float32 requantization with
round-half-to-even, exactly :func:`quantplug.kernels.requant_params` and the core's
``qp_requantize``.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from quantplug.errors import KernelInputError
from quantplug.kernels import CffiKernelLibrary, check_tensor

from ._version import __version__

__all__ = ["FbgemmKernels", "PackedLinearWeight", "ACT_DTYPE", "ACT_RANGE", "DISTRIBUTION", "load_kernels"]

DISTRIBUTION = "quantplug-fbgemm"
#: Activations: uint8 with reduce_range (7 bits), see csrc/fbgemm_kernels.h for why.
ACT_DTYPE = torch.uint8
ACT_RANGE = (0, 127)
#: Columns per packed block and k per group of the packed layout (csrc/fbgemm_kernels.h).
NR, KR = 16, 4
RAW_MADDUBS = 1  # enum fbgemm_flags


@dataclass
class PackedLinearWeight:
    """An int8 linear weight packed for the 4x16c4 microkernels (all plain tensors: picklable).

    ``packed`` is int8 of ``ceil(n/16) * ceil(k/4) * 64`` bytes (16-column blocks, groups of
    4 along k); ``row_sums[j] = sum_k w[j, k]`` folds the activation zero point.
    """

    packed: Tensor  # int8 [ceil(n/16) * 16 * ceil(k/4) * 4]
    scales: Tensor  # float32 [n]
    zero_points: Tensor  # int32 [n]
    row_sums: Tensor  # int32 [n]
    n: int
    k: int


def _packed_size(n: int, k: int) -> int:
    return -(-n // NR) * NR * -(-k // KR) * KR


def _scalar_scale(v: object, name: str, op: str) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise KernelInputError(f"{op}: {name} must be a float, got {type(v).__name__}") from None
    if not (math.isfinite(f) and f > 0.0):
        raise KernelInputError(f"{op}: {name} must be a finite float > 0, got {v}")
    return f


def _scalar_zp(v: object, name: str, op: str, lo: int = 0, hi: int = 255) -> int:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise KernelInputError(f"{op}: {name} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise KernelInputError(f"{op}: {name}={v} is outside [{lo}, {hi}]")
    return int(v)


class FbgemmKernels(CffiKernelLibrary):
    """The compiled fbgemm kernels (scalar, AVX2, AVX-512, AVX-512 VNNI paths).

    Same Python API as every quantplug backend (``pack_linear_weight``, ``linear``,
    ``linear_dynamic``), so the core's lowering can call any of them.
    """

    act_dtype = ACT_DTYPE
    act_range = ACT_RANGE
    packed_linear_type = PackedLinearWeight

    def __init__(self, module=None) -> None:
        if module is None:
            from . import _kernels as module  # noqa: PLC0415  (compiled by pip at install time)
        super().__init__(module, plugin_version=__version__, distribution=DISTRIBUTION)

    # ------------------------------------------------------------- info --
    def gemm_ukernel(self) -> str:
        """Name of the GEMM microkernel the current ISA dispatches to."""
        return self.ffi.string(self.lib.fbgemm_gemm_ukernel_name()).decode()

    # ---------------------------------------------------------- packing --
    def pack_linear_weight(self, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor) -> PackedLinearWeight:
        """Pack an int8 weight ``[N, K]`` with per-output-channel scales and zero points."""
        op = "fbgemm.pack_linear_weight"
        check_tensor(w_q, "w_q", dtype=torch.int8, ndim=2, op=op)
        n, k = w_q.shape
        if n == 0 or k == 0:
            raise KernelInputError(f"{op}: w_q has an empty dimension (shape {tuple(w_q.shape)})")
        check_tensor(w_scales, "w_scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(w_zero_points, "w_zero_points", dtype=torch.int32, shape=(n,), op=op)
        if not bool(torch.isfinite(w_scales).all()) or not bool((w_scales > 0).all()):
            raise KernelInputError(f"{op}: every w_scales entry must be finite and > 0")
        if bool((w_zero_points < -128).any()) or bool((w_zero_points > 127).any()):
            raise KernelInputError(f"{op}: w_zero_points must lie in [-128, 127] (int8 weights)")
        size = self.lib.fbgemm_packed_linear_size(n, k)
        if size == 0:
            raise KernelInputError(f"{op}: weight shape {tuple(w_q.shape)} is too large")
        packed = torch.empty(size, dtype=torch.int8)
        row_sums = torch.empty(n, dtype=torch.int32)
        status = self.lib.fbgemm_pack_linear_weight(
            self.ptr(w_q, "int8_t *"), n, k, self.ptr(packed, "int8_t *"), self.ptr(row_sums, "int32_t *"))
        self.check_status(status, op)
        return PackedLinearWeight(packed, w_scales.clone(), w_zero_points.clone(), row_sums, int(n), int(k))

    def unpack_linear_weight(self, packed: PackedLinearWeight) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_q [N, K] int8, scales [N], zero_points [N])`` back from a packed weight."""
        op = "fbgemm.unpack_linear_weight"
        self._check_packed(packed, op)
        w = torch.empty(packed.n, packed.k, dtype=torch.int8)
        self.check_status(self.lib.fbgemm_unpack_linear_weight(
            self.ptr(packed.packed, "int8_t *"), packed.n, packed.k, self.ptr(w, "int8_t *")), op)
        return w, packed.scales.clone(), packed.zero_points.clone()

    def _check_packed(self, packed: object, op: str) -> PackedLinearWeight:
        if not isinstance(packed, PackedLinearWeight):
            raise KernelInputError(
                f"{op}: packed must be a quantplug_fbgemm PackedLinearWeight (from pack_linear_weight), "
                f"got {type(packed).__name__}")
        n, k = packed.n, packed.k
        if not (isinstance(n, int) and isinstance(k, int) and n > 0 and k > 0):
            raise KernelInputError(f"{op}: packed has invalid n={n!r}, k={k!r}")
        check_tensor(packed.packed, "packed.packed", dtype=torch.int8, shape=(_packed_size(n, k),), op=op)
        check_tensor(packed.scales, "packed.scales", dtype=torch.float32, shape=(n,), op=op)
        check_tensor(packed.zero_points, "packed.zero_points", dtype=torch.int32, shape=(n,), op=op)
        check_tensor(packed.row_sums, "packed.row_sums", dtype=torch.int32, shape=(n,), op=op)
        return packed

    def _check_bias(self, bias: Tensor | None, n: int, op: str):
        if bias is None:
            return self.ffi.NULL
        check_tensor(bias, "bias", dtype=torch.float32, shape=(n,), op=op)
        return self.ptr(bias, "float *")

    def _check_x(self, x: Tensor, dtype: torch.dtype, k: int, op: str, name: str) -> tuple[Tensor, int]:
        check_tensor(x, name, dtype=dtype, op=op)
        if x.dim() < 1 or x.shape[-1] != k:
            raise KernelInputError(f"{op}: {name} has shape {tuple(x.shape)}, expected [..., {k}] (K of the weight)")
        return x, x.numel() // k if k else 0

    # ----------------------------------------------------------- linear --
    def linear(self, x_q: Tensor, x_scale: float, x_zero_point: int, packed: PackedLinearWeight,
               bias: Tensor | None, out_scale: float, out_zero_point: int, relu: bool = False, *,
               out_quant_min: int | None = None, out_quant_max: int | None = None,
               raw_maddubs: bool = False) -> Tensor:
        """Static int8 linear: uint8 ``x_q [..., K]`` -> uint8 ``[..., N]``.

        Accumulates ``(x - x_zp) * (w - w_zp)`` in int32, adds the int32 bias
        ``round(bias / (x_scale * w_scale))``, requantizes with
        ``x_scale * w_scale / out_scale`` (float32, ties to even) into
        ``[out_quant_min, out_quant_max]`` (default: the activation range 0..127, as the
        reference graph's quantize does). ``relu`` raises the lower clamp to the zero point.
        ``raw_maddubs`` (tests only) reproduces FBGEMM's saturating int16 pair sums on the
        AVX2 / AVX-512 paths for inputs above 127 instead of the exact split form.
        """
        op = "fbgemm.linear"
        self._check_packed(packed, op)
        n, k = packed.n, packed.k
        _, m = self._check_x(x_q, torch.uint8, k, op, "x_q")
        xs = _scalar_scale(x_scale, "x_scale", op)
        os_ = _scalar_scale(out_scale, "out_scale", op)
        xz = _scalar_zp(x_zero_point, "x_zero_point", op)
        oz = _scalar_zp(out_zero_point, "out_zero_point", op)
        lo = ACT_RANGE[0] if out_quant_min is None else _scalar_zp(out_quant_min, "out_quant_min", op)
        hi = ACT_RANGE[1] if out_quant_max is None else _scalar_zp(out_quant_max, "out_quant_max", op)
        if lo > hi:
            raise KernelInputError(f"{op}: out_quant_min {lo} > out_quant_max {hi}")
        if relu:
            lo = min(max(lo, oz), hi)
        bias_p = self._check_bias(bias, n, op)
        out = torch.empty((*x_q.shape[:-1], n), dtype=torch.uint8)
        self.sync_threads()
        status = self.lib.fbgemm_linear_u8s8(
            self.ptr(x_q, "uint8_t *"), m, k, xs, xz, self.ptr(packed.packed, "int8_t *"),
            self.ptr(packed.row_sums, "int32_t *"), self.ptr(packed.scales, "float *"),
            self.ptr(packed.zero_points, "int32_t *"), n, bias_p, os_, oz, lo, hi,
            RAW_MADDUBS if raw_maddubs else 0, self.ptr(out, "uint8_t *"))
        if status == 1 and bias is not None and not bool(torch.isfinite(bias).all()):
            raise KernelInputError(f"{op}: bias contains inf or NaN")
        self.check_status(status, op)
        return out

    def linear_dynamic(self, x: Tensor, packed: PackedLinearWeight, bias: Tensor | None,
                       per_row: bool = False) -> Tensor:
        """Dynamic linear: fp32 ``x [..., K]`` -> fp32 ``[..., N]``.

        ``x`` is quantized per call, per tensor, to uint8 0..127 (reduce_range, asymmetric;
        FBGEMM has no per-row dynamic mode, so ``per_row=True`` is rejected), multiplied in
        int8, and scaled back: ``acc * (x_scale * w_scale) + bias`` in float32.
        """
        op = "fbgemm.linear_dynamic"
        if per_row:
            raise KernelInputError(
                f"{op}: per_row=True is not supported: FBGEMM quantizes dynamic activations per tensor")
        self._check_packed(packed, op)
        n, k = packed.n, packed.k
        _, m = self._check_x(x, torch.float32, k, op, "x")
        bias_p = self._check_bias(bias, n, op)
        out = torch.empty((*x.shape[:-1], n), dtype=torch.float32)
        self.sync_threads()
        status = self.lib.fbgemm_linear_dynamic_f32(
            self.ptr(x, "float *"), m, k, self.ptr(packed.packed, "int8_t *"),
            self.ptr(packed.row_sums, "int32_t *"), self.ptr(packed.scales, "float *"),
            self.ptr(packed.zero_points, "int32_t *"), n, bias_p, ACT_RANGE[0], ACT_RANGE[1],
            self.ptr(out, "float *"), self.ffi.NULL, self.ffi.NULL)
        if status == 1:
            raise KernelInputError(f"{op}: x contains inf or NaN (cannot choose activation qparams)")
        self.check_status(status, op)
        return out

    # ------------------------------------------------------- inspection --
    def requant_params(self, x_scale: float, w_scales: Tensor, out_scale: float,
                       bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The multipliers and int32 bias the C linear computes (for tests against the core)."""
        op = "fbgemm.requant_params"
        check_tensor(w_scales, "w_scales", dtype=torch.float32, ndim=1, op=op)
        n = w_scales.shape[0]
        bias_p = self._check_bias(bias, n, op)
        mult = torch.empty(n, dtype=torch.float32)
        bias_q = torch.empty(n, dtype=torch.int32) if bias is not None else None
        status = self.lib.fbgemm_requant_params(
            _scalar_scale(x_scale, "x_scale", op), self.ptr(w_scales, "float *"), n,
            _scalar_scale(out_scale, "out_scale", op), bias_p, self.ptr(mult, "float *"),
            self.ptr(bias_q, "int32_t *") if bias_q is not None else self.ffi.NULL)
        self.check_status(status, op)
        return mult, bias_q

    def choose_qparams(self, min_val: float, max_val: float, quant_min: int = ACT_RANGE[0],
                       quant_max: int = ACT_RANGE[1]) -> tuple[float, int]:
        """The activation qparams the dynamic linear picks for this range."""
        scale = self.ffi.new("float *")
        zp = self.ffi.new("int32_t *")
        status = self.lib.fbgemm_choose_qparams(float(min_val), float(max_val), int(quant_min), int(quant_max),
                                                scale, zp)
        self.check_status(status, "fbgemm.choose_qparams")
        return float(scale[0]), int(zp[0])


_KERNELS: FbgemmKernels | None = None


def load_kernels() -> FbgemmKernels:
    """The process-wide kernel library (loaded once; raises if the build is missing or stale)."""
    global _KERNELS
    if _KERNELS is None:
        try:
            _kernels = importlib.import_module(f"{__package__}._kernels")
        except ImportError as exc:
            raise ImportError(
                f"quantplug_fbgemm._kernels is not built ({exc}); install the distribution so pip "
                f"compiles it: pip install --force-reinstall --no-deps {DISTRIBUTION}") from exc
        _KERNELS = FbgemmKernels(_kernels)
    return _KERNELS
