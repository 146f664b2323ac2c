"""Observers: modules that watch tensors during calibration and turn what they saw into qparams.

Every observer's ``forward(x)`` returns ``x`` unchanged and records statistics;
``calculate_qparams()`` returns ``(scale, zero_point)`` (float32 and int32
tensors: shape ``[1]`` per tensor, ``[channels]`` per channel). The qparams
come from :func:`quantplug.affine.choose_qparams`, whose arithmetic is
torch.ao's, so each observer here gives the same qparams as its torch.ao
namesake on the same data:

=====================================  ====================================================
``MinMaxObserver``                     running min / max
``MovingAverageMinMaxObserver``        exponential moving average of batch min / max
``PerChannelMinMaxObserver``           running min / max per channel (``ch_axis``)
``MovingAveragePerChannelMinMaxObserver``  moving averages per channel
``HistogramObserver``                  histogram + L2-error range search (PTQ activations)
``PercentileObserver``                 histogram, range clipped at a percentile
``PlaceholderObserver``                dynamic quantization: records nothing
``FixedQParamsObserver``               qparams fixed up front (sigmoid, softmax, ...)
=====================================  ====================================================

Constructor keywords follow torch.ao (``dtype``, ``qscheme``, ``reduce_range``,
``quant_min``, ``quant_max``, ``eps``...), and ``Observer.with_args(**kw)``
returns a ``functools.partial``, so quantization specs written for torch.ao
carry over. Besides torch's ``qscheme`` the flags can be given directly
(``symmetric=``, ``per_channel=``), and every observer also takes
``scale_min=`` (lower bound of the scale) and ``sync=`` (all-reduce the
statistics across ``torch.distributed`` ranks before computing qparams).

Only torch, the standard library and :mod:`quantplug.affine` are imported.
"""

from __future__ import annotations

import bisect
import functools
import math
import struct
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from .affine import EPS, choose_qparams, normalize_dtype, quant_range

__all__ = [
    "ObserverBase",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PercentileObserver",
    "PlaceholderObserver",
    "FixedQParamsObserver",
]

# torch qscheme -> (symmetric, per_channel)
_QSCHEMES = {
    torch.per_tensor_affine: (False, False),
    torch.per_tensor_symmetric: (True, False),
    torch.per_channel_affine: (False, True),
    torch.per_channel_symmetric: (True, True),
}
_BITS = {torch.int8: 8, torch.uint8: 8, torch.int32: 32, "int4": 4, "uint4": 4}


def _distributed_ready() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


class ObserverBase(nn.Module):
    """Common base of quantplug observers.

    :param dtype: quantized dtype (``torch.int8``, ``torch.uint8``, ``torch.int32``,
        ``"int4"``/``"uint4"``; torch.ao's ``qint8``/``quint8``/``qint32`` are accepted).
        The default is ``torch.uint8``, as in torch.ao.
    :param qscheme: torch qscheme; sets ``symmetric`` and ``per_channel``.
    :param reduce_range: one bit fewer (x86 ``vpmaddubsw``); as in torch.ao a
        custom ``quant_min``/``quant_max`` is floor-halved too.
    :param quant_min, quant_max: custom integer range (both or neither; must include 0).
    :param factory_kwargs: accepted for torch.ao compatibility (``device`` is honoured).
    :param eps: lower bound of the scale.
    :param is_dynamic: qparams are computed per call at run time (no calibration).
    :param symmetric, per_channel: the qscheme as flags (alternative to ``qscheme``).
    :param ch_axis: channel axis of per-channel observers.
    :param scale_min: extra lower bound of the scale (QNNPACK: ``2**-12``).
    :param sync: call :meth:`sync_across_ranks` in :meth:`calculate_qparams`.

    Attributes: ``dtype``, ``symmetric``, ``per_channel``, ``ch_axis``, ``qscheme``,
    ``quant_min``, ``quant_max``, ``reduce_range``, ``eps``, ``scale_min``,
    ``is_dynamic``, ``sync``, ``has_observed``.
    """

    _default_qscheme = torch.per_tensor_affine
    _allow_float_dtype = False

    def __init__(
        self,
        dtype: Any = torch.uint8,
        qscheme: Any = None,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict | None = None,
        eps: float = EPS,
        is_dynamic: bool = False,
        *,
        symmetric: bool | None = None,
        per_channel: bool | None = None,
        ch_axis: int | None = None,
        scale_min: float | None = None,
        sync: bool = False,
    ) -> None:
        super().__init__()
        self._device = torch.device((factory_kwargs or {}).get("device", "cpu"))
        self.symmetric, self.per_channel = self._resolve_qscheme(qscheme, symmetric, per_channel)
        self.ch_axis = (0 if ch_axis is None else int(ch_axis)) if self.per_channel else ch_axis
        self.reduce_range = bool(reduce_range)
        self.eps = float(eps)
        if not self.eps > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps}")
        if scale_min is not None and not scale_min > 0:
            raise ValueError(f"{type(self).__name__}: scale_min must be positive, got {scale_min}")
        self.scale_min = None if scale_min is None else float(scale_min)
        self.is_dynamic = bool(is_dynamic)
        self.sync = bool(sync)
        self._synced = False
        if self._allow_float_dtype and isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            self.dtype = dtype
            self.quant_min = self.quant_max = None
            self.has_customized_qrange = False
            return
        self.dtype = normalize_dtype(dtype)
        self.quant_min, self.quant_max = self._resolve_range(quant_min, quant_max)

    # ------------------------------------------------------------ set-up --

    def _resolve_qscheme(self, qscheme, symmetric, per_channel) -> tuple[bool, bool]:
        name = type(self).__name__
        if qscheme is not None:
            if qscheme not in _QSCHEMES:
                raise ValueError(f"{name}: unsupported qscheme {qscheme}; use one of {list(_QSCHEMES)}")
            sym, pc = _QSCHEMES[qscheme]
            if (symmetric is not None and symmetric != sym) or (per_channel is not None and per_channel != pc):
                raise ValueError(f"{name}: qscheme={qscheme} contradicts symmetric={symmetric}, per_channel={per_channel}")
        else:
            d_sym, d_pc = _QSCHEMES[self._default_qscheme]
            sym = d_sym if symmetric is None else bool(symmetric)
            pc = d_pc if per_channel is None else bool(per_channel)
        return sym, pc

    def _resolve_range(self, quant_min, quant_max) -> tuple[int, int]:
        name = type(self).__name__
        if (quant_min is None) != (quant_max is None):
            raise ValueError(f"{name}: give both quant_min and quant_max or neither (got {quant_min}, {quant_max})")
        self.has_customized_qrange = quant_min is not None
        if quant_min is None:
            return quant_range(self.dtype, reduce_range=self.reduce_range)
        quant_min, quant_max = int(quant_min), int(quant_max)
        lo, hi = quant_range(self.dtype)
        if not quant_min <= 0 <= quant_max:
            raise ValueError(f"{name}: the range [{quant_min}, {quant_max}] must include 0")
        if quant_min >= quant_max:
            raise ValueError(f"{name}: quant_min must be < quant_max, got [{quant_min}, {quant_max}]")
        if quant_min < lo or quant_max > hi:
            raise ValueError(f"{name}: [{quant_min}, {quant_max}] does not fit dtype {self.dtype} ([{lo}, {hi}])")
        if self.reduce_range:  # torch.ao halves a custom range too; keep its numbers
            quant_min, quant_max = quant_min // 2, quant_max // 2
        return quant_min, quant_max

    @classmethod
    def with_args(cls, **kwargs) -> functools.partial:
        """A zero-argument constructor with these keyword arguments (``functools.partial``)."""
        return functools.partial(cls, **kwargs)

    @property
    def qscheme(self):
        """The torch qscheme equivalent to ``symmetric`` / ``per_channel``."""
        for qs, flags in _QSCHEMES.items():
            if flags == (self.symmetric, self.per_channel):
                return qs
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- API --

    @property
    def has_observed(self) -> bool:
        """True once a non-empty tensor was recorded (observers that need no data: always True)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Record statistics of ``x`` and return ``x`` unchanged."""
        raise NotImplementedError

    def _compute_qparams(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _sync_stats(self) -> None:
        """All-reduce this observer's statistics (only called when torch.distributed is initialized)."""

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` from the recorded statistics.

        Float32 scale and int32 zero point, shape ``[1]`` per tensor or
        ``[channels]`` per channel. Without data it warns and returns
        ``([1.0], [0])`` like torch.ao; check :attr:`has_observed` to report
        uncalibrated observers instead. With ``sync=True`` the statistics are
        first merged across ranks (a collective: every rank must call this).
        """
        if self.sync:
            self.sync_across_ranks()
        if not self.has_observed:
            warnings.warn(f"{type(self).__name__} has not observed any data; returning scale=1.0, zero_point=0. "
                          "Run calibration data through the model first.", stacklevel=2)
            return torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
        return self._compute_qparams()

    def sync_across_ranks(self) -> None:
        """Merge the statistics of all ``torch.distributed`` ranks into every rank's observer.

        A no-op unless torch.distributed is initialized. Min/max observers
        all-reduce ``min_val`` (MIN) and ``max_val`` (MAX) (for moving
        averages this merges the averages, an approximation); histogram
        observers all-reduce the range first, re-bin their histogram onto it and
        all-reduce the counts (SUM). It is a collective: every rank must call
        it. Calling it again before new data arrives does nothing, so counts
        are never added twice; data recorded after a sync is added on top of
        the merged histogram, so sync once, at the end of calibration.
        """
        if not _distributed_ready() or self._synced:
            return
        self._sync_stats()
        self._synced = True

    def _qparams_from_minmax(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]:
        try:
            scale, zero_point = choose_qparams(
                min_val, max_val, quant_min=self.quant_min, quant_max=self.quant_max, symmetric=self.symmetric,
                eps=self.eps, scale_min=self.scale_min, dtype=self.dtype)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: cannot compute qparams from the observed range: {err}") from err
        if scale.dim() == 0:  # torch.ao shape convention: [1] per tensor
            scale, zero_point = scale.reshape(1), zero_point.reshape(1)
        return scale, zero_point

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Statistics buffers change shape once data is seen (per-channel min/max start empty):
        # take the saved shape so a fresh observer can load a calibrated one.
        for name, buf in list(self._buffers.items()):
            key = prefix + name
            if buf is not None and key in state_dict and state_dict[key].shape != buf.shape:
                self._buffers[name] = torch.empty(state_dict[key].shape, dtype=buf.dtype, device=buf.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        if not hasattr(self, "quant_max"):  # repr during a failed __init__
            return ""
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}" + (f", ch_axis={self.ch_axis}" if self.per_channel else ""))


# ------------------------------------------------------------------ min/max --


class _MinMaxBase(ObserverBase):
    """Shared running-statistics logic of the four min/max observers."""

    min_val: Tensor
    max_val: Tensor

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.per_channel:  # sized on the first batch, like torch.ao
            self.register_buffer("min_val", torch.empty(0, device=self._device))
            self.register_buffer("max_val", torch.empty(0, device=self._device))
        else:
            self.register_buffer("min_val", torch.tensor(float("inf"), device=self._device))
            self.register_buffer("max_val", torch.tensor(float("-inf"), device=self._device))

    def _empty(self) -> bool:
        return self.min_val.numel() == 0 or bool(self.min_val.isinf().all() and self.max_val.isinf().all()
                                                 and (self.min_val > self.max_val).all())

    @property
    def has_observed(self) -> bool:
        """True once a non-empty tensor was recorded."""
        return not self._empty()

    def _batch_minmax(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.per_channel:
            return torch.aminmax(x)
        if x.dim() == 0:
            raise ValueError(f"{type(self).__name__}: per-channel observation needs at least one dimension")
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(f"{type(self).__name__}: ch_axis={self.ch_axis} is out of range for shape {tuple(x.shape)}")
        rows = x.movedim(self.ch_axis, 0)
        rows = rows.reshape(rows.shape[0], -1)
        lo, hi = torch.aminmax(rows, dim=1)
        if self.min_val.numel() not in (0, lo.numel()):
            raise ValueError(f"{type(self).__name__}: saw {lo.numel()} channels on axis {self.ch_axis}, "
                             f"previously {self.min_val.numel()}")
        return lo, hi

    def _merge(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Fold one batch's min/max into the running statistics."""
        return torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)

    def forward(self, x: Tensor) -> Tensor:
        """Record the min / max of ``x`` (per channel for per-channel observers); return ``x``."""
        if not isinstance(x, Tensor) or x.numel() == 0:
            return x
        self._synced = False
        lo, hi = self._batch_minmax(x.detach().to(device=self.min_val.device, dtype=torch.float32))
        if not self._empty():
            lo, hi = self._merge(lo, hi)
        self.min_val, self.max_val = lo.clone(), hi.clone()
        return x

    def _compute_qparams(self) -> tuple[Tensor, Tensor]:
        return self._qparams_from_minmax(self.min_val, self.max_val)

    def reset_min_max_vals(self) -> None:
        """Forget everything observed."""
        if self.per_channel:
            self.min_val, self.max_val = self.min_val.new_empty(0), self.max_val.new_empty(0)
        else:
            self.min_val, self.max_val = self.min_val.new_tensor(float("inf")), self.max_val.new_tensor(float("-inf"))

    def _sync_stats(self) -> None:
        dist = torch.distributed
        mn, mx = self.min_val, self.max_val
        if self.per_channel:
            # Ranks that saw nothing have empty buffers: agree on the channel count first.
            n = mn.numel()
            sizes = torch.tensor([n, -n if n else -(2**62)], dtype=torch.int64)
            dist.all_reduce(sizes, op=dist.ReduceOp.MAX)
            largest, smallest_nonzero = int(sizes[0]), -int(sizes[1])
            if largest == 0:
                return
            if smallest_nonzero != largest:
                raise ValueError(f"{type(self).__name__}.sync_across_ranks: ranks observed different channel counts "
                                 f"({smallest_nonzero} vs {largest})")
            if n == 0:
                mn = torch.full((largest,), float("inf"), device=mn.device)
                mx = torch.full((largest,), float("-inf"), device=mx.device)
        shape = mn.shape
        mn, mx = mn.reshape(-1).clone(), mx.reshape(-1).clone()
        dist.all_reduce(mn, op=dist.ReduceOp.MIN)
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
        self.min_val, self.max_val = mn.reshape(shape), mx.reshape(shape)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", min_val={self.min_val}, max_val={self.max_val}"


class MinMaxObserver(_MinMaxBase):
    """Running min and max of everything observed, per tensor (torch.ao ``MinMaxObserver``)."""

    def __init__(self, dtype=torch.uint8, qscheme=None, reduce_range=False, quant_min=None,
                 quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, **flags) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, **flags)
        if self.per_channel:
            raise ValueError(f"{type(self).__name__} is per tensor; use PerChannelMinMaxObserver for {self.qscheme}")


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of each batch's min and max (torch.ao's; QAT activations).

    ``min = min + c * (batch_min - min)`` (same for max) after the first batch,
    which sets them; ``c = averaging_constant``.
    """

    def __init__(self, averaging_constant: float = 0.01, dtype=torch.uint8, qscheme=None,
                 reduce_range=False, quant_min=None, quant_max=None, eps=EPS, is_dynamic=False, **flags) -> None:
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, eps=eps, is_dynamic=is_dynamic, **flags)

    def _merge(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        c = self.averaging_constant
        return self.min_val + c * (lo - self.min_val), self.max_val + c * (hi - self.max_val)


class PerChannelMinMaxObserver(_MinMaxBase):
    """Running min and max per channel along ``ch_axis`` (torch.ao ``PerChannelMinMaxObserver``; weights)."""

    _default_qscheme = torch.per_channel_affine

    def __init__(self, ch_axis: int = 0, dtype=torch.uint8, qscheme=None, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, **flags) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic,
                         ch_axis=ch_axis, **flags)
        if not self.per_channel:
            raise ValueError(f"{type(self).__name__} is per channel; use MinMaxObserver for {self.qscheme}")


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Moving averages of per-channel min and max (torch.ao's; QAT weights)."""

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, dtype=torch.uint8,
                 qscheme=None, reduce_range=False, quant_min=None, quant_max=None, eps=EPS,
                 is_dynamic=False, **flags) -> None:
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.averaging_constant = float(averaging_constant)
        super().__init__(ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, eps=eps, is_dynamic=is_dynamic,
                         **flags)

    _merge = MovingAverageMinMaxObserver._merge


# ---------------------------------------------------------------- histogram --


def _to_f32(v: float) -> float:
    """Round a Python float to the nearest float32 (torch compares float32 tensors with scalars in float32)."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _cube_diff(a: Tensor, b: Tensor) -> Tensor:
    """``(a**3 - b**3) / 3``: the integral of ``t**2`` from ``b`` to ``a``."""
    return (a * a * a - b * b * b) / 3


class _RangeError:
    """Estimated L2 error of quantizing a histogram with a candidate range.

    Each source bin's mass is spread uniformly over the bin. Quantizing with
    the candidate range ``[start_bin, end_bin]`` maps every value to the centre
    of one of ``dst_nbins`` equal output buckets (values outside the range to
    the first/last bucket), so the error of a source bin is its density times
    the integral of (distance to the bucket centre)**2 over the bin. A source
    bin can straddle several buckets: the integral is split into the part in
    the bucket of its start, whole buckets in between and the part in the
    bucket of its end (when start and end share a bucket, the "in between"
    count is -1 and cancels the overlap of the two partial parts).

    The float32 arithmetic follows torch.ao's HistogramObserver step by step so
    that the greedy search stops at the same place.
    """

    def __init__(self, hist: Tensor, bin_width: float, dst_nbins: int) -> None:
        self.bin_width = bin_width
        self.dst_nbins = dst_nbins
        self.index = torch.arange(hist.numel(), device=hist.device)
        self.density = hist / bin_width

    def __call__(self, start_bin: int, end_bin: int) -> float:
        bucket = self.bin_width * (end_bin - start_bin + 1) / self.dst_nbins
        if bucket == 0.0:
            return 0.0
        half = bucket / 2
        last = self.dst_nbins - 1
        # Source bin edges measured from the start of the candidate range.
        lo = (self.index - start_bin) * self.bin_width
        hi = lo + self.bin_width
        lo_bucket = torch.div(lo, bucket, rounding_mode="floor").clamp(0, last)
        hi_bucket = torch.div(hi, bucket, rounding_mode="floor").clamp(0, last)
        d = self.density
        neg_half, pos_half = torch.tensor(-half), torch.tensor(half)
        err = d * _cube_diff(torch.full_like(lo, half), lo - (lo_bucket + 0.5) * bucket)
        err += (hi_bucket - lo_bucket - 1) * (d * _cube_diff(pos_half, neg_half))
        err += d * _cube_diff(hi - (hi_bucket * bucket + half), neg_half)
        return float(err.sum())


def _l2_range_search(hist: Tensor, min_val: Tensor, max_val: Tensor, dst_nbins: int) -> tuple[Tensor, Tensor]:
    """Clip the histogram's range where the estimated L2 quantization error stops improving.

    Greedy search (caffe2's norm minimization, as torch.ao uses): two
    quantile bounds start at 0 and 1 and move inwards by 1e-5 per step. At
    each step the side whose quantile step would drop more bins moves; the
    candidate range is the bins between the two bounds. Candidates are scored
    with :class:`_RangeError`; the search stops at the first candidate worse
    than the best so far. Returns the clipped range's edges.

    The bin lookups are binary searches on the cumulative histogram (it is
    non-decreasing), instead of a scan per step.
    """
    bins = hist.numel()
    total = float(hist.sum())
    cdf = torch.cumsum(hist, dim=0).tolist()
    score = _RangeError(hist, (float(max_val) - float(min_val)) / bins, dst_nbins)
    step = 1e-5
    low_q, high_q = 0.0, 1.0
    start, end = 0, bins - 1
    best = math.inf
    while low_q < high_q:
        next_low_q, next_high_q = low_q + step, high_q - step
        # first bin (from `start`, at most `end`) whose cumulative mass reaches the lower quantile
        left = bisect.bisect_left(cdf, _to_f32(next_low_q * total), start, end)
        # last bin (from `end`, at least `start`) whose cumulative mass does not pass the upper quantile
        right = max(start, bisect.bisect_right(cdf, _to_f32(next_high_q * total), start + 1, end + 1) - 1)
        cand_start, cand_end = start, end
        if left - start > end - right:
            cand_start, low_q = left, next_low_q
        else:
            cand_end, high_q = right, next_high_q
        if cand_start == start and cand_end == end:
            continue
        err = score(cand_start, cand_end)
        if err > best:
            break
        best, start, end = err, cand_start, cand_end
    width = (max_val - min_val) / bins
    return min_val + width * start, min_val + width * (end + 1)


class _HistogramBase(ObserverBase):
    """Running histogram over a range that widens as data arrives (torch.ao's scheme).

    When a batch extends the range, the old histogram is re-binned onto the
    new range: each old bin is split into ``upsample_rate`` equal parts and
    each part's mass goes to the new bin containing its midpoint.
    Non-finite values are ignored (with a warning).
    """

    histogram: Tensor
    min_val: Tensor
    max_val: Tensor

    def __init__(self, bins: int = 2048, dtype=torch.uint8, qscheme=None, reduce_range=False,
                 quant_min=None, quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic=False, *,
                 upsample_rate: int = 16, **flags) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, **flags)
        if self.per_channel:
            raise ValueError(f"{type(self).__name__} is per tensor only, got {self.qscheme}")
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins!r}")
        self.bins = bins
        self.upsample_rate = int(upsample_rate)
        # torch.ao sizes the search's output grid by the storage dtype's bit width,
        # even for a reduced or custom range; kept for identical qparams.
        self.dst_nbins = 2 ** _BITS[self.dtype]
        self.register_buffer("histogram", torch.zeros(bins, device=self._device))
        self.register_buffer("min_val", torch.tensor(float("inf"), device=self._device))
        self.register_buffer("max_val", torch.tensor(float("-inf"), device=self._device))

    @property
    def has_observed(self) -> bool:
        """True once a tensor with at least one finite value was recorded."""
        return bool(self.min_val <= self.max_val)

    def _rebin(self, hist: Tensor, old_min: Tensor, old_max: Tensor, new_min: Tensor, new_max: Tensor) -> Tensor:
        """``hist`` (over ``[old_min, old_max]``) expressed over the wider ``[new_min, new_max]``."""
        if bool(old_min == new_min) and bool(old_max == new_max):
            return hist
        if bool(old_min == old_max):  # one value only: all the mass lands in one bin
            return torch.histc(old_min.reshape(1), bins=self.bins, min=float(new_min), max=float(new_max)) * hist.sum()
        n = self.bins * self.upsample_rate
        fine = hist.repeat_interleave(self.upsample_rate) / self.upsample_rate
        fine_width = (old_max - old_min) / n
        midpoints = torch.linspace(old_min, old_max, n + 1, device=hist.device)[:-1] + 0.5 * fine_width
        edges = torch.linspace(new_min, new_max, self.bins + 1, device=hist.device)
        target = (torch.bucketize(midpoints, edges, right=True) - 1).clamp(0, self.bins - 1)
        return torch.bincount(target, weights=fine, minlength=self.bins)

    def forward(self, x: Tensor) -> Tensor:
        """Add ``x``'s values to the histogram (widening its range if needed); return ``x``."""
        if not isinstance(x, Tensor) or x.numel() == 0:
            return x
        v = x.detach().to(device=self.histogram.device, dtype=torch.float32)
        finite = torch.isfinite(v)
        if not bool(finite.all()):
            warnings.warn(f"{type(self).__name__}: ignoring non-finite values in the observed tensor", stacklevel=2)
            v = v[finite]
            if v.numel() == 0:
                return x
        self._synced = False
        lo, hi = torch.aminmax(v)
        if not self.has_observed:
            self.histogram = torch.histc(v, self.bins, min=float(lo), max=float(hi))
            self.min_val, self.max_val = lo.clone(), hi.clone()
            return x
        new_min, new_max = torch.minimum(lo, self.min_val), torch.maximum(hi, self.max_val)
        batch = torch.histc(v, self.bins, min=float(new_min), max=float(new_max))
        self.histogram = batch + self._rebin(self.histogram, self.min_val, self.max_val, new_min, new_max)
        self.min_val, self.max_val = new_min, new_max
        return x

    def _sync_stats(self) -> None:
        dist = torch.distributed
        lo, hi = self.min_val.reshape(1).clone(), self.max_val.reshape(1).clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        lo, hi = lo.reshape(()), hi.reshape(())
        if not bool(lo <= hi):  # no rank has data
            return
        if self.has_observed:
            hist = self._rebin(self.histogram, self.min_val, self.max_val, lo, hi).clone()
        else:
            hist = torch.zeros_like(self.histogram)
        dist.all_reduce(hist, op=dist.ReduceOp.SUM)
        self.histogram, self.min_val, self.max_val = hist, lo, hi

    def reset_histogram(self) -> None:
        """Forget everything observed."""
        self.histogram = torch.zeros_like(self.histogram)
        self.min_val, self.max_val = self.min_val.new_tensor(float("inf")), self.max_val.new_tensor(float("-inf"))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bins={self.bins}, min_val={self.min_val}, max_val={self.max_val}"


class HistogramObserver(_HistogramBase):
    """Histogram of activations, range chosen by minimizing the L2 quantization error.

    Same histogram updates and greedy range search as torch.ao's
    ``HistogramObserver`` (see :func:`_l2_range_search`); the clipped range
    then goes through :func:`quantplug.affine.choose_qparams`. The PTQ default
    for activations: it clips rare outliers that MinMax would keep.
    """

    def _compute_qparams(self) -> tuple[Tensor, Tensor]:
        if self.histogram.numel() != self.bins:
            raise ValueError(f"{type(self).__name__}: histogram has {self.histogram.numel()} bins, expected {self.bins}")
        new_min, new_max = _l2_range_search(self.histogram, self.min_val, self.max_val, self.dst_nbins)
        return self._qparams_from_minmax(new_min, new_max)


class PercentileObserver(_HistogramBase):
    """Range clipped at a percentile of everything observed (e.g. 99.99: drop the top and bottom 0.01%).

    The percentiles are read from the running histogram (linear
    interpolation inside a bin), so they are exact to within one bin width,
    ``(max - min) / bins``, and cost no memory per batch.

    :param percentile: in (50, 100]; the low end uses ``100 - percentile``.
    """

    def __init__(self, percentile: float = 99.99, bins: int = 2048, dtype=torch.uint8,
                 qscheme=None, reduce_range=False, quant_min=None, quant_max=None, eps=EPS,
                 **flags) -> None:
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, eps=eps, **flags)

    def _value_at(self, cdf: Tensor, mass: float) -> float:
        lo, hi = float(self.min_val), float(self.max_val)
        width = (hi - lo) / self.bins
        i = int(torch.searchsorted(cdf, torch.tensor([mass], dtype=cdf.dtype)).item())
        i = min(i, self.bins - 1)
        below = float(cdf[i - 1]) if i > 0 else 0.0
        count = float(cdf[i]) - below
        frac = 0.0 if count <= 0 else (mass - below) / count
        return min(max(lo + (i + frac) * width, lo), hi)

    def _compute_qparams(self) -> tuple[Tensor, Tensor]:
        if bool(self.min_val == self.max_val):
            return self._qparams_from_minmax(self.min_val, self.max_val)
        cdf = torch.cumsum(self.histogram.to(torch.float64), dim=0)
        total = float(cdf[-1])
        p = self.percentile / 100.0
        lo = self._value_at(cdf, total * (1.0 - p))
        hi = self._value_at(cdf, total * p)
        return self._qparams_from_minmax(torch.tensor(lo), torch.tensor(max(hi, lo)))


# ------------------------------------------------------ no-statistics kinds --


class PlaceholderObserver(ObserverBase):
    """Carries dtype and range for dynamic quantization; records nothing.

    Dynamic quantization computes qparams from each input at run time, so
    there is nothing to calibrate: :attr:`has_observed` is always True and
    :meth:`calculate_qparams` raises. Float dtypes (``torch.float16``) are
    accepted too, for "quantize to half" specs.
    """

    _allow_float_dtype = True

    def __init__(self, dtype=torch.uint8, qscheme=None, reduce_range=False, quant_min=None,
                 quant_max=None, factory_kwargs=None, eps=EPS, is_dynamic: bool = True, custom_op_name: str = "",
                 compute_dtype=None, **flags) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, **flags)
        self.custom_op_name = custom_op_name
        self.compute_dtype = compute_dtype

    @property
    def has_observed(self) -> bool:
        """Always True: dynamic quantization needs no calibration."""
        return True

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` unchanged (nothing is recorded)."""
        return x

    def calculate_qparams(self):
        """Not available: dynamic qparams are computed from each input at run time."""
        raise RuntimeError("PlaceholderObserver has no qparams: dynamic quantization computes them from each input "
                           "at run time (quantplug.affine.choose_qparams on the input's min/max)")


class FixedQParamsObserver(ObserverBase):
    """Returns qparams fixed at construction (ops with a known output range: sigmoid, tanh, softmax).

    :param scale: positive float.
    :param zero_point: int inside ``[quant_min, quant_max]``.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(self, scale: float, zero_point: int, dtype=torch.uint8, qscheme=None,
                 quant_min=None, quant_max=None, is_dynamic=False, **flags) -> None:
        super().__init__(dtype, qscheme, False, quant_min, quant_max, is_dynamic=is_dynamic, **flags)
        if self.per_channel:
            raise ValueError("FixedQParamsObserver is per tensor only")
        if not (math.isfinite(float(scale)) and float(scale) > 0):
            raise ValueError(f"FixedQParamsObserver: scale must be positive and finite, got {scale}")
        if int(zero_point) != zero_point or not self.quant_min <= int(zero_point) <= self.quant_max:
            raise ValueError(f"FixedQParamsObserver: zero_point {zero_point} must be an int in "
                             f"[{self.quant_min}, {self.quant_max}]")
        self.register_buffer("scale", torch.tensor([float(scale)], dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor([int(zero_point)], dtype=torch.int32))

    def _resolve_range(self, quant_min, quant_max) -> tuple[int, int]:
        # Fixed qparams may describe any sub-range of the dtype (e.g. [0, 255] for sigmoid in uint8).
        if quant_min is None and quant_max is None:
            self.has_customized_qrange = False
            return quant_range(self.dtype)
        if quant_min is None or quant_max is None or quant_min > quant_max:
            raise ValueError(f"FixedQParamsObserver: bad range [{quant_min}, {quant_max}]")
        lo, hi = quant_range(self.dtype)
        if quant_min < lo or quant_max > hi:
            raise ValueError(f"FixedQParamsObserver: [{quant_min}, {quant_max}] does not fit {self.dtype}")
        self.has_customized_qrange = True
        return int(quant_min), int(quant_max)

    @property
    def has_observed(self) -> bool:
        """Always True: the qparams are known without data."""
        return True

    def forward(self, x: Tensor) -> Tensor:
        """Return ``x`` unchanged (nothing is recorded)."""
        return x

    def _compute_qparams(self) -> tuple[Tensor, Tensor]:
        return self.scale.clone(), self.zero_point.clone()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={float(self.scale)}, zero_point={int(self.zero_point)}"
