"""Python side of a plugin's cffi kernel library.

:class:`CffiKernelLibrary` wraps the compiled module a plugin builds with
:func:`quantplug.build.make_ffi`. It checks the build version at import,
exposes the shared runtime (CPU features, ISA selection, thread count), and
gives plugins one set of input checks, so that a bad tensor gets the same
clear error from every backend instead of a segfault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from typing import Any, Iterator, Sequence

import torch

from .errors import KernelBuildMismatchError, KernelInputError

__all__ = ["CffiKernelLibrary", "ISA_NAMES", "check_tensor", "check_dense", "check_binary_operands", "check_finite",
           "requant_params", "flatten_packed", "unflatten_packed", "cached_packed", "remember_packed",
           "default_out_range"]

#: Must equal QP_RUNTIME_API_VERSION in csrc/include/quantplug/qp_runtime.h.
RUNTIME_API_VERSION = 2

#: Index = ``enum qp_isa`` in qp_runtime.h.
ISA_NAMES = ("scalar", "sse2", "avx2", "avx512", "avx512vnni", "avxvnni", "neon", "neondot")

_FEATURES = (
    ("sse2", 1), ("ssse3", 2), ("sse4.1", 4), ("avx2", 8), ("fma", 16), ("avx512f", 32),
    ("avx512bw", 64), ("avx512vl", 128), ("avx512vnni", 256), ("avxvnni", 512),
    ("neon", 1024), ("neon_dot", 2048),
)


def check_tensor(
    t: object,
    name: str,
    *,
    dtype: torch.dtype | Sequence[torch.dtype],
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    op: str = "kernel",
) -> torch.Tensor:
    """Validate a tensor before its pointer is handed to C.

    Checks type, device (CPU), dtype, rank, shape (``None`` entries are free)
    and contiguity. Raises :class:`KernelInputError` naming ``op`` and the
    tensor ``name``, and saying how to fix it.
    """
    # Called several times per kernel call: the valid case reads as few tensor attributes as
    # it can (``t.is_cpu``, not ``t.device.type``, which builds a device object: ~1 us of a
    # 1x768x768 linear's ~12 us); the messages are built only on failure.
    if not isinstance(t, torch.Tensor):
        raise KernelInputError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise KernelInputError(f"{op}: {name} is on {t.device}; quantplug kernels run on CPU — call .cpu() first")
    if (t.dtype is not dtype) if isinstance(dtype, torch.dtype) else (t.dtype not in dtype):
        dtypes = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        want = " or ".join(str(d) for d in dtypes)
        raise KernelInputError(f"{op}: {name} has dtype {t.dtype}, expected {want}")
    if ndim is not None and t.dim() != ndim:
        raise KernelInputError(f"{op}: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if shape is not None:
        actual = t.shape
        bad = len(actual) != len(shape)
        if not bad:
            for want_d, d in zip(shape, actual):
                if want_d is not None and want_d != d:
                    bad = True
                    break
        if bad:
            want = "x".join("*" if s is None else str(s) for s in shape)
            raise KernelInputError(f"{op}: {name} has shape {tuple(actual)}, expected {want}")
    if not t.is_contiguous():
        raise KernelInputError(
            f"{op}: {name} is not contiguous (strides {t.stride()}); pass {name}.contiguous()"
        )
    return t


_FINITE_ATTR = "_quantplug_finite_at_version"


def check_finite(t: torch.Tensor, name: str, *, op: str = "kernel") -> torch.Tensor:
    """Raise :class:`KernelInputError` if float tensor ``t`` holds NaN or inf.

    Meant for constant operands (bias, scales) checked on every kernel call: a
    passing check is remembered on the tensor with its ``_version``, so the
    same unmodified tensor costs an attribute read afterwards (``isfinite`` on
    a 64-element bias is ~20 us of small torch ops; a ResNet-18 calls 21 convs).
    """
    version = t._version
    if getattr(t, _FINITE_ATTR, None) == version:
        return t
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise KernelInputError(f"{op}: {name} contains NaN or inf")
    if type(t) is torch.Tensor or isinstance(t, torch.nn.Parameter):  # not a fake / functional tensor
        setattr(t, _FINITE_ATTR, version)
    return t


def check_dense(
    t: object,
    name: str,
    *,
    dtype: torch.dtype | Sequence[torch.dtype],
    op: str = "kernel",
) -> torch.Tensor:
    """Validate the operand of an elementwise kernel, whose C loop only needs a dense buffer.

    :func:`check_tensor`'s type / device / dtype checks; a contiguous or 4-D ``channels_last``
    tensor is returned as is (no copy), any other strides are made contiguous.
    """
    if isinstance(t, torch.Tensor) and not t.is_contiguous():
        if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
            check_tensor(t.permute(0, 2, 3, 1), name, dtype=dtype, op=op)  # a dense NHWC buffer
            return t
        t = t.contiguous()
    return check_tensor(t, name, dtype=dtype, op=op)


def check_binary_operands(
    a: object,
    b: object,
    names: tuple[str, str] = ("a_q", "b_q"),
    *,
    dtype: torch.dtype | Sequence[torch.dtype],
    op: str = "kernel",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the two operands of an elementwise kernel (add, mul) and give them one layout.

    Each operand goes through :func:`check_dense` (elementwise kernels do not care about the
    order of a dense buffer, only that both operands share it). The shapes must be equal (no
    broadcasting), and if the two layouts differ both operands are made contiguous. Returns
    the two tensors to hand to C.
    """
    a_t, b_t = check_dense(a, names[0], dtype=dtype, op=op), check_dense(b, names[1], dtype=dtype, op=op)
    if a_t.shape != b_t.shape:
        raise KernelInputError(f"{op}: {names[0]} {tuple(a_t.shape)} and {names[1]} {tuple(b_t.shape)} "
                               f"differ in shape; broadcasting is not supported (expand and .contiguous() first)")
    if a_t.stride() != b_t.stride():
        a_t, b_t = a_t.contiguous(), b_t.contiguous()
    return a_t, b_t


_F32 = struct.Struct("f")


def default_out_range(library: object, dtype: torch.dtype) -> tuple[int, int]:
    """The range ``library``'s requantizing kernels clamp outputs of ``dtype`` to by default: its
    declared ``act_range`` when that lies inside the dtype (fbgemm: 0..127), else the dtype's range."""
    info = torch.iinfo(dtype)
    declared = getattr(library, "act_range", None)
    if declared is None or declared[0] < info.min or declared[1] > info.max:
        return info.min, info.max
    return int(declared[0]), int(declared[1])


def _f32(v: float) -> float:
    """``v`` rounded to float32. A float32 ``a * b`` or ``a / b`` equals the double result rounded to
    float32 (double rounding is innocuous for +, -, *, / at 53 >= 2 * 24 + 2 bits), so chains of
    these reproduce float32 tensor arithmetic without building tensors (~10 us per call saved)."""
    return _F32.unpack(_F32.pack(v))[0]


def requant_params(
    x_scale: float, w_scales: torch.Tensor, out_scale: float, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 requantization multipliers and int32 bias for an int8 GEMM/conv.

    ``multiplier[c] = x_scale * w_scale[c] / out_scale`` (float32, computed
    once), ``bias_q[c] = round(bias[c] / (x_scale * w_scale[c]))``. Every
    backend's linear and conv use this, so their numerics agree with
    :func:`quantplug.affine.requantize_reference`.
    """
    w_scales = w_scales.to(torch.float32).reshape(-1)
    acc_scale = (torch.tensor(x_scale, dtype=torch.float32) * w_scales)
    multipliers = (acc_scale / torch.tensor(out_scale, dtype=torch.float32)).contiguous()
    bias_q = None
    if bias is not None:
        bias_q = torch.round(bias.to(torch.float32) / acc_scale).clamp(-(2**31), 2**31 - 1).to(torch.int32).contiguous()
    return multipliers, bias_q




def flatten_packed(packed: Any) -> list[torch.Tensor]:
    """A plugin's packed-weight dataclass as a list of tensors (ints/floats/bools become 0-d tensors)."""
    if not dataclasses.is_dataclass(packed):
        raise TypeError(f"packed weights must be a dataclass of tensors, got {type(packed).__name__}")
    return [packed_field_tensor(getattr(packed, f.name), f"{type(packed).__name__}.{f.name}")
            for f in dataclasses.fields(packed)]


def packed_field_tensor(v: Any, what: str = "packed field") -> torch.Tensor:
    """One packed-weight field as a tensor: tensors as they are, ``None`` as an empty uint8 tensor,
    bool / int / float as 0-d bool / int64 / float64 tensors (what :func:`unflatten_packed` reads back)."""
    if isinstance(v, torch.Tensor):
        return v
    if v is None:
        return torch.empty(0, dtype=torch.uint8)
    if isinstance(v, bool):
        return torch.tensor(v, dtype=torch.bool)
    if isinstance(v, int):
        return torch.tensor(v, dtype=torch.int64)
    if isinstance(v, float):
        return torch.tensor(v, dtype=torch.float64)
    raise TypeError(f"{what}: unsupported field type {type(v).__name__}")


# Rebuilding a plugin's packed dataclass from an op's tensor list costs 3-5 us (``.item()`` per
# int field) and defeats the caches plugins key on the packed object (requantization
# multipliers, int32 bias): together more than the arithmetic of a small GEMV. A lowered or
# exported model passes the same buffer tensors on every call, so the object built on the first
# call is kept on the first tensor itself (attribute ``_HOLDER_ATTR``) and reused while every
# tensor of the call is the very object it was built from, unmodified since (``_version``: an
# in-place ``load_state_dict`` into the buffers rebuilds it). Holder and weights form a cycle the
# garbage collector frees with the model (no global cache to leak), and a holder pickles and
# deep-copies as ``None`` (copies rebuild once; pickles never carry plugin classes).
_HOLDER_ATTR = "_quantplug_packed_holder"


class _PackedHolder:
    __slots__ = ("tensors", "versions", "obj")

    def __init__(self, tensors: list, obj: Any) -> None:
        self.tensors, self.obj = list(tensors), obj
        self.versions = [t._version for t in tensors]

    def __reduce__(self):
        return type(None), ()


def cached_packed(tensors: list[torch.Tensor], cls: type | None = None) -> Any:
    """The packed object :func:`unflatten_packed` last built from exactly these tensors, or ``None``."""
    holder = getattr(tensors[0], _HOLDER_ATTR, None) if tensors else None
    if holder is None or len(holder.tensors) != len(tensors) or (cls is not None and type(holder.obj) is not cls):
        return None
    for a, b, v in zip(holder.tensors, tensors, holder.versions):
        if a is not b or b._version != v:
            return None
    return holder.obj


def unflatten_packed(cls: type, tensors: list[torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_packed`, guided by ``cls``'s field annotations.

    Called on every run of a lowered op, so the result is cached on the tensors (see
    :func:`cached_packed`): the same unmodified tensors give back the same object.
    """
    hit = cached_packed(tensors, cls)
    if hit is not None:
        return hit
    kwargs = {}
    for f, t in zip(dataclasses.fields(cls), tensors):
        kind = str(f.type)
        if t.dim() == 0 and kind in ("int", "float", "bool"):
            kwargs[f.name] = {"int": int, "float": float, "bool": bool}[kind](t.item())
        elif t.numel() == 0 and "None" in kind and t.dtype == torch.uint8:
            kwargs[f.name] = None
        else:
            kwargs[f.name] = t
    return remember_packed(tensors, cls(**kwargs))


def remember_packed(tensors: list[torch.Tensor], obj: Any) -> Any:
    """Record ``obj`` as the packed object of ``tensors`` for :func:`cached_packed`; returns ``obj``."""
    first = tensors[0] if tensors else None
    if type(first) is torch.Tensor or isinstance(first, torch.nn.Parameter):  # not a fake / functional tensor
        setattr(first, _HOLDER_ATTR, _PackedHolder(tensors, obj))
    return obj



def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = list(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Pooling output size, torch's rule (a ceil-mode window must start inside the input)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


_QDTYPES = {torch.uint8: ("u8", "uint8_t *", 0, 255), torch.int8: ("s8", "int8_t *", -128, 127)}
#: largest |zero point| the shared per-tensor kernels take: 2^24, where float32 still holds every integer
_MAX_ZERO_POINT = 1 << 24


class CffiKernelLibrary:
    """Base class for a plugin's compiled kernels (implements ``KernelLibrary``).

    :param module: the compiled cffi module (has ``ffi`` and ``lib``).
    :param plugin_version: the plugin's ``__version__``; must equal the
        version embedded at build time.
    :param distribution: pip distribution name, for error messages.
    """

    #: Range the requantizing kernels clamp their outputs to by default, when narrower than the
    #: output dtype (fbgemm's reduce_range activations: ``(0, 127)``); ``None``: the dtype's full
    #: range. Lowering reads it to keep each quantize node's range exact (see ``lowering``).
    act_range: tuple[int, int] | None = None

    def __init__(self, module, *, plugin_version: str, distribution: str) -> None:
        self.ffi = module.ffi
        self.lib = module.lib
        self.name = module.__name__
        self.distribution = distribution
        api = self.lib.qp_runtime_api_version() if hasattr(self.lib, "qp_runtime_api_version") else 1
        if api != RUNTIME_API_VERSION:
            raise KernelBuildMismatchError(
                f"{self.name} was compiled against quantplug's C runtime API {api}, but this quantplug "
                f"needs {RUNTIME_API_VERSION}; rebuild the plugin against the installed quantplug: "
                f"pip install --force-reinstall --no-deps {distribution}"
            )
        built = self.ffi.string(self.lib.qp_build_version()).decode()
        if built != plugin_version:
            raise KernelBuildMismatchError(
                f"{self.name} was compiled for {distribution} {built} but the Python package is "
                f"{plugin_version}; rebuild it: pip install --force-reinstall --no-deps {distribution}"
            )

    # -- runtime info ------------------------------------------------------
    def selected_isa(self) -> str:
        """The ISA path kernels dispatch to now."""
        return ISA_NAMES[self.lib.qp_active_isa()]

    def available_isas(self) -> list[str]:
        """Paths compiled into this build, best first (not all may run here)."""
        mask = self.lib.qp_compiled_isas()
        order = ("avx512vnni", "avx512", "avxvnni", "avx2", "sse2", "neondot", "neon", "scalar")
        return [n for n in order if mask & (1 << ISA_NAMES.index(n))]

    def usable_isas(self) -> list[str]:
        """Paths compiled in that this CPU can run, best first."""
        return [n for n in self.available_isas() if self.lib.qp_isa_usable(ISA_NAMES.index(n))]

    def cpu_features(self) -> list[str]:
        """CPU features detected at run time (cpuid / getauxval)."""
        bits = self.lib.qp_cpu_features()
        return [name for name, bit in _FEATURES if bits & bit]

    def set_isa(self, isa: str | None) -> None:
        """Force an ISA path (``None`` restores the automatic choice)."""
        if isa is None:
            self.lib.qp_set_isa(-1)
            return
        if isa not in ISA_NAMES:
            raise ValueError(f"unknown ISA {isa!r}; known: {list(ISA_NAMES)}")
        if self.lib.qp_set_isa(ISA_NAMES.index(isa)) != 0:
            raise ValueError(
                f"{self.name}: ISA {isa!r} is not usable here (compiled: {self.available_isas()}, "
                f"usable on this CPU: {self.usable_isas()})"
            )

    @contextlib.contextmanager
    def use_isa(self, isa: str) -> Iterator[None]:
        """Run the block with ``isa`` forced, then restore the previous path."""
        previous = self.selected_isa()
        self.set_isa(isa)
        try:
            yield
        finally:
            self.set_isa(previous)

    def sync_threads(self) -> int:
        """Let the pool use ``torch.get_num_threads()`` threads; returns the count.

        Kernels call this before a parallel region so that quantplug never
        runs more threads than torch was told to use (no oversubscription).
        """
        n = torch.get_num_threads()
        if n != self.lib.qp_get_num_threads():
            self.lib.qp_set_num_threads(n)
        return n

    # -- pointer helpers ---------------------------------------------------
    def ptr(self, t: torch.Tensor, ctype: str):
        """A C pointer of type ``ctype`` to ``t``'s data (``t`` must stay alive)."""
        return self.ffi.cast(ctype, t.data_ptr())

    def check_status(self, status: int, op: str) -> None:
        """Turn a non-zero ``qp_status`` into a Python error naming ``op``."""
        if status == 0:
            return
        if status == 1:
            raise KernelInputError(f"{op}: the kernel rejected its arguments (QP_ERR_INVALID_ARGUMENT)")
        if status == 3:
            raise MemoryError(f"{op}: out of memory in {self.name}")
        raise RuntimeError(f"{op}: {self.name} returned status {status}")

    # -- shared kernels (core csrc/qp_quantize.c, compiled into every plugin) --
    @staticmethod
    def _zero_point(zero_point: int, op: str) -> int:
        # the C kernels take an int32 and compute q - zp and qmin - zp in it: bound it well inside
        zp = int(zero_point)
        if not -_MAX_ZERO_POINT <= zp <= _MAX_ZERO_POINT:
            raise KernelInputError(f"{op}: zero_point={zp} is out of range; an 8-bit tensor's zero point must lie "
                                   f"within +-{_MAX_ZERO_POINT} (normally inside the dtype's own range)")
        return zp

    def _qdtype(self, dtype: torch.dtype, op: str) -> tuple[str, str, int, int]:
        if dtype not in _QDTYPES:
            raise KernelInputError(f"{op}: dtype {dtype} not supported; use torch.uint8 or torch.int8")
        return _QDTYPES[dtype]

    def quantize_per_tensor(self, x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype,
                            quant_min: int | None = None, quant_max: int | None = None) -> torch.Tensor:
        """float32 -> uint8/int8 with one scale and zero point (C kernel)."""
        op = f"{self.name}.quantize_per_tensor"
        suffix, ctype, lo, hi = self._qdtype(dtype, op)
        check_tensor(x, "x", dtype=torch.float32, op=op)
        # empty_like of a contiguous tensor is contiguous, and half the cost of torch.empty(x.shape)
        # on a call the eager flow makes per module: 1.08 vs 2.24 us by
        # python -m timeit -s "import torch; x = torch.randn(64, 16, 8, 8)" "torch.empty_like(x, dtype=torch.uint8)"
        # (and the same with "torch.empty(x.shape, dtype=torch.uint8)")
        out = torch.empty_like(x, dtype=dtype)
        qmin, qmax = lo if quant_min is None else quant_min, hi if quant_max is None else quant_max
        status = getattr(self.lib, f"qp_quantize_per_tensor_{suffix}")(
            self.ptr(x, "float *"), x.numel(), float(scale), self._zero_point(zero_point, op), qmin, qmax,
            self.ptr(out, ctype))
        self.check_status(status, f"{op} (scale={scale}, range=[{qmin}, {qmax}])")
        return out

    def dequantize_per_tensor(self, q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        """uint8/int8 -> float32 with one scale and zero point (C kernel)."""
        op = f"{self.name}.dequantize_per_tensor"
        check_tensor(q, "q", dtype=tuple(_QDTYPES), op=op)
        suffix, ctype, _, _ = self._qdtype(q.dtype, op)
        out = torch.empty_like(q, dtype=torch.float32)  # contiguous, as q is (see quantize_per_tensor)
        getattr(self.lib, f"qp_dequantize_per_tensor_{suffix}")(
            self.ptr(q, ctype), q.numel(), float(scale), self._zero_point(zero_point, op), self.ptr(out, "float *"))
        return out

    @staticmethod
    def _channel_view(t: torch.Tensor, axis: int) -> tuple[int, int, int]:
        axis = axis % t.dim()
        outer = 1
        for d in t.shape[:axis]:
            outer *= d
        inner = 1
        for d in t.shape[axis + 1:]:
            inner *= d
        return outer, t.shape[axis], inner

    def _channel_params(self, t, scales, zero_points, axis, op):
        outer, channels, inner = self._channel_view(t, axis)
        check_tensor(scales, "scales", dtype=torch.float32, shape=(channels,), op=op)
        check_tensor(zero_points, "zero_points", dtype=torch.int32, shape=(channels,), op=op)
        return outer, channels, inner

    def quantize_per_channel(self, x: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                             axis: int, dtype: torch.dtype, quant_min: int | None = None,
                             quant_max: int | None = None) -> torch.Tensor:
        """float32 -> uint8/int8 with one scale/zero point per slice along ``axis`` (C kernel)."""
        op = f"{self.name}.quantize_per_channel"
        suffix, ctype, lo, hi = self._qdtype(dtype, op)
        check_tensor(x, "x", dtype=torch.float32, op=op)
        outer, channels, inner = self._channel_params(x, scales, zero_points, axis, op)
        out = torch.empty_like(x, dtype=dtype)
        qmin, qmax = lo if quant_min is None else quant_min, hi if quant_max is None else quant_max
        status = getattr(self.lib, f"qp_quantize_per_channel_{suffix}")(
            self.ptr(x, "float *"), outer, channels, inner, self.ptr(scales, "float *"),
            self.ptr(zero_points, "int32_t *"), qmin, qmax, self.ptr(out, ctype))
        self.check_status(status, f"{op} (every scale must be finite and > 0, range [{qmin}, {qmax}])")
        return out

    def dequantize_per_channel(self, q: torch.Tensor, scales: torch.Tensor, zero_points: torch.Tensor,
                               axis: int) -> torch.Tensor:
        """uint8/int8 -> float32 with per-channel qparams along ``axis`` (C kernel)."""
        op = f"{self.name}.dequantize_per_channel"
        check_tensor(q, "q", dtype=tuple(_QDTYPES), op=op)
        suffix, ctype, _, _ = self._qdtype(q.dtype, op)
        outer, channels, inner = self._channel_params(q, scales, zero_points, axis, op)
        out = torch.empty_like(q, dtype=torch.float32)
        getattr(self.lib, f"qp_dequantize_per_channel_{suffix}")(
            self.ptr(q, ctype), outer, channels, inner, self.ptr(scales, "float *"),
            self.ptr(zero_points, "int32_t *"), self.ptr(out, "float *"))
        return out

    def requantize(self, acc: torch.Tensor, multipliers: torch.Tensor, zero_point: int,
                   dtype: torch.dtype, quant_min: int | None = None, quant_max: int | None = None) -> torch.Tensor:
        """int32 accumulators [rows, channels] -> uint8/int8 (per-tensor or per-channel multiplier)."""
        op = f"{self.name}.requantize"
        suffix, ctype, lo, hi = self._qdtype(dtype, op)
        check_tensor(acc, "acc", dtype=torch.int32, ndim=2, op=op)
        check_tensor(multipliers, "multipliers", dtype=torch.float32, ndim=1, op=op)
        if multipliers.numel() not in (1, acc.shape[1]):
            raise KernelInputError(f"{op}: multipliers has {multipliers.numel()} entries; expected 1 or {acc.shape[1]}")
        out = torch.empty(acc.shape, dtype=dtype)
        qmin, qmax = lo if quant_min is None else quant_min, hi if quant_max is None else quant_max
        status = getattr(self.lib, f"qp_requantize_{suffix}")(
            self.ptr(acc, "int32_t *"), acc.shape[0], acc.shape[1], self.ptr(multipliers, "float *"),
            multipliers.numel(), int(zero_point), qmin, qmax, self.ptr(out, ctype))
        self.check_status(status, op)
        return out

    # -- shared pooling kernels (core csrc/qp_pool.c), NHWC ---------------
    @staticmethod
    def _check_4d(x_q: object, op: str) -> None:
        if not isinstance(x_q, torch.Tensor) or x_q.dim() != 4:
            raise KernelInputError(f"{op}: x_q must be a 4-D [N, C, H, W] tensor, got "
                                   f"{tuple(x_q.shape) if isinstance(x_q, torch.Tensor) else type(x_q).__name__}")
        if x_q.device.type != "cpu":
            raise KernelInputError(f"{op}: x_q is on {x_q.device}; quantplug kernels run on CPU — call .cpu() first")

    @staticmethod
    def _as_channels_last(x: torch.Tensor) -> torch.Tensor:
        """``x`` (logical NCHW) in channels_last memory, copying only if needed."""
        return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous(memory_format=torch.channels_last)

    def max_pool2d(self, x_q: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1,
                   ceil_mode: bool = False) -> torch.Tensor:
        """Max pooling on a quantized [N, C, H, W] tensor; output keeps the input's qparams.

        Output is channels_last (the layout the kernels compute in).
        """
        op = f"{self.name}.max_pool2d"
        self._check_4d(x_q, op)
        suffix, ctype, _, _ = self._qdtype(x_q.dtype, op)
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(stride if stride not in (None, []) else kernel_size)
        ph, pw = _pair(padding)
        dh, dw = _pair(dilation)
        n, c, h, w = x_q.shape
        oh, ow = (_pool_out(h, kh, sh, ph, dh, ceil_mode), _pool_out(w, kw, sw, pw, dw, ceil_mode))
        if oh <= 0 or ow <= 0:
            raise KernelInputError(f"{op}: kernel {kh}x{kw} does not fit input {h}x{w} with padding {ph},{pw}")
        x = self._as_channels_last(x_q)
        out = torch.empty((n, c, oh, ow), dtype=x_q.dtype, memory_format=torch.channels_last)
        self.sync_threads()
        status = getattr(self.lib, f"qp_max_pool2d_nhwc_{suffix}")(
            self.ptr(x, ctype), n, h, w, c, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, self.ptr(out, ctype))
        self.check_status(status, f"{op} (kernel {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw})")
        return out

    def global_avg_pool(self, x_q: torch.Tensor, x_scale: float, x_zero_point: int, out_scale: float,
                        out_zero_point: int, quant_min: int | None = None, quant_max: int | None = None) -> torch.Tensor:
        """Mean over H and W of a quantized [N, C, H, W] tensor, requantized; returns [N, C, 1, 1].

        The output is clamped to ``quant_min..quant_max``; by default to :attr:`act_range` when
        the library declares one, else to the dtype's full range.
        """
        op = f"{self.name}.global_avg_pool"
        self._check_4d(x_q, op)
        suffix, ctype, lo, hi = self._qdtype(x_q.dtype, op)
        n, c, h, w = x_q.shape
        x = self._as_channels_last(x_q)
        out = torch.empty((n, c, 1, 1), dtype=x_q.dtype, memory_format=torch.channels_last)
        mult = _f32(_f32(x_scale) / _f32(_f32(out_scale) * _f32(h * w)))  # float32 math, as the reference does
        lo, hi = default_out_range(self, x_q.dtype)  # fbgemm: 0..127, like its own kernels
        qmin, qmax = lo if quant_min is None else quant_min, hi if quant_max is None else quant_max
        status = getattr(self.lib, f"qp_global_avg_pool_nhwc_{suffix}")(
            self.ptr(x, ctype), n, h * w, c, int(x_zero_point), mult, int(out_zero_point), qmin, qmax, self.ptr(out, ctype))
        self.check_status(status, f"{op} (H*W={h * w})")
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} isa={self.selected_isa()}>"
