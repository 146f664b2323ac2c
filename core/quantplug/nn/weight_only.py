"""Weight-only quantized modules: int8 / int4 weights, float activations.

* :class:`Int8WeightOnlyLinear`: int8 weights, one scale per output channel
  (or per group); runs the backend's ``linear_weight_only`` kernel when it has one.
* :class:`Int4WeightOnlyLinear`: int4 symmetric group-wise weights packed two
  per byte; runs the backend's int4 kernel (``pack_linear_int4_weight`` /
  ``linear_int4``) — ``quantize_`` refuses a plugin backend without one.
* :class:`QuantizedEmbedding` / :class:`QuantizedEmbeddingBag`: int8 or int4
  rows, one scale and zero point per row (the asymmetric row-wise schemes of
  torch's ``embedding_bag_byte`` / ``embedding_bag_4bit`` tables; int4 codes
  0..15 packed two per byte).

Without a kernel the math is the pure-PyTorch reference: dequantize the
weight (only the rows looked up, for embeddings) and run the float op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..affine import (choose_qparams, dequantize_affine, pack_int4, pack_uint4, quantize_affine, unpack_int4,
                      unpack_uint4)
from ..errors import QuantplugError
from ._common import BackendNumerics, QuantizedModule, quantize_weight
from ._traced import is_tracing, packed_tensors
from ._traced import ops as traced

__all__ = [
    "Int8WeightOnlyLinear",
    "Int4WeightOnlyLinear",
    "QuantizedEmbedding",
    "QuantizedEmbeddingBag",
    "INT8_WEIGHT_ONLY_OPS",
    "INT4_OPS",
    "PER_GROUP_INT8_OPS",
    "quantize_int4_groupwise",
]

#: kernel methods a backend provides for int8 weight-only linear
INT8_WEIGHT_ONLY_OPS = ("pack_linear_weight", "linear_weight_only")
#: kernel methods a backend provides for int4 group-wise weight-only linear
INT4_OPS = ("pack_linear_weight_int4", "linear_int4_weight_only")
#: kernel method for group-wise int8 weight-only linear (no plugin has it yet: reference backend only)
PER_GROUP_INT8_OPS = ("per_group_int8_weight_only",)


def _float(x: Tensor) -> tuple[Tensor, torch.dtype]:
    if not x.dtype.is_floating_point:
        raise QuantplugError(f"weight-only quantized linear takes floating-point input, got {x.dtype}")
    return (x if x.dtype == torch.float32 else x.to(torch.float32)).contiguous(), x.dtype


class Int8WeightOnlyLinear(QuantizedModule):
    """``nn.Linear`` with int8 weights and float activations.

    :param group_size: ``None``: one scale per output channel (the backend's
        weight numerics, kernel path if the backend has one). An int: one
        symmetric scale per ``group_size`` input features (pure PyTorch).
    """

    def __init__(self, mod: nn.Linear, backend: Any, numerics: BackendNumerics, group_size: int | None = None,
                 observer: nn.Module | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = mod.in_features, mod.out_features, group_size
        ops = INT8_WEIGHT_ONLY_OPS if group_size is None else PER_GROUP_INT8_OPS
        self._init_backend(backend, numerics, ops, op_label="int8 weight-only linear")
        if group_size is None:
            w_q, s, z = quantize_weight(mod.weight, numerics, observer=observer)
            if self.uses_plugin_kernel:
                self._store_packed("packed", self.kernels().pack_linear_weight(w_q, s, z))
            else:
                self.register_buffer("weight_q", w_q)
                self.register_buffer("weight_scales", s)
                self.register_buffer("weight_zero_points", z)
        else:
            if mod.in_features % group_size:
                raise QuantplugError(f"Int8WeightOnlyLinear: in_features={mod.in_features} is not a multiple of "
                                     f"group_size={group_size}")
            w = mod.weight.detach().to(torch.float32)
            g = w.reshape(mod.out_features, -1, group_size)
            lo, hi = numerics.weight_range if numerics.weight_dtype == torch.int8 else (-127, 127)
            s, z = choose_qparams(g.amin(-1).reshape(-1), g.amax(-1).reshape(-1), quant_min=lo, quant_max=hi,
                                  symmetric=True, dtype=torch.int8)
            s, z = s.reshape(mod.out_features, -1), z.reshape(mod.out_features, -1)
            self.register_buffer("weight_q", quantize_affine(w, s, z, quant_min=lo, quant_max=hi, dtype=torch.int8,
                                                             group_size=group_size))
            self.register_buffer("weight_scales", s.contiguous())
            self.register_buffer("weight_zero_points", z.contiguous())
        self.register_buffer("bias", None if mod.bias is None else mod.bias.detach().float().clone())

    @classmethod
    def from_float(cls, mod: nn.Linear, backend: Any, numerics: BackendNumerics, *, group_size: int | None = None,
                   observer: nn.Module | None = None):
        """Quantize ``mod``'s weight (with a trained fake-quant's qparams when ``observer`` is given)."""
        return cls(mod, backend, numerics, group_size, observer)

    def dequantized_weight(self) -> Tensor:
        """The float weight the module computes with (reference path only)."""
        if self.uses_plugin_kernel:
            raise QuantplugError("the packed weight is in the backend's private layout")
        if self.group_size is None:
            return dequantize_affine(self.weight_q, self.weight_scales, self.weight_zero_points, axis=0)
        return dequantize_affine(self.weight_q, self.weight_scales, self.weight_zero_points, group_size=self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        """Float in, float out."""
        x32, dtype = _float(x)
        if self.uses_plugin_kernel and is_tracing(x):  # torch.export / compile: the registered op
            y = traced.linear_weight_only(x32, packed_tensors(self, "packed"), self.bias, self.out_features,
                                          self.backend_name)
        elif self.uses_plugin_kernel:
            y = self.kernels().linear_weight_only(x32, self._packed("packed"), self.bias)
        else:
            y = F.linear(x32, self.dequantized_weight(), self.bias)
        return y if dtype == torch.float32 else y.to(dtype)

    def extra_repr(self) -> str:
        """Shape, granularity, backend and kernel path."""
        gran = "per-channel" if self.group_size is None else f"group_size={self.group_size}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, weight=int8 {gran}, "
                f"activations=float, backend={self.backend_name}, kernel={self.kernel_path}")


def quantize_int4_groupwise(weight: Tensor, group_size: int, *, scales: Tensor | None = None
                            ) -> tuple[Tensor, Tensor]:
    """Symmetric int4 per-group quantization of ``weight [N, K]``: ``(q int8 [N, K] in -8..7, scales [N, K/g])``.

    ``scale = max|w| / 7.5`` per group (``choose_qparams`` symmetric over
    -8..7), zero point 0: the scheme the graph flow and the int4 kernels use.
    ``scales`` overrides the choice (LSQ-trained scales).
    """
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    if k % group_size:
        raise QuantplugError(f"int4 weight-only: in_features={k} is not a multiple of group_size={group_size}")
    if scales is None:
        g = w.reshape(n, k // group_size, group_size)
        s, _ = choose_qparams(g.amin(-1).reshape(-1), g.amax(-1).reshape(-1), quant_min=-8, quant_max=7,
                              symmetric=True, dtype="int4")
    else:
        s = scales.detach().to(torch.float32)
    s = s.reshape(n, k // group_size).contiguous()
    q = quantize_affine(w, s, torch.zeros_like(s, dtype=torch.int32), quant_min=-8, quant_max=7, dtype="int4",
                        group_size=group_size)
    return q.contiguous(), s


class Int4WeightOnlyLinear(QuantizedModule):
    """``nn.Linear`` with int4 group-wise symmetric weights (two per byte) and float activations."""

    def __init__(self, mod: nn.Linear, backend: Any, numerics: BackendNumerics | None, group_size: int = 128,
                 scales: Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = mod.in_features, mod.out_features, int(group_size)
        self._init_backend(backend, numerics, INT4_OPS, op_label=f"int4 weight-only linear (group {group_size})")
        if backend.kernels is not None and not self.uses_plugin_kernel:
            # quantize_ checks this first; a direct caller gets the same message.
            raise QuantplugError(f"backend {backend.name!r} has no int4 kernel ({', '.join(INT4_OPS)}); "
                                 f"use a backend with int4 support or backend='reference'")
        q, s = quantize_int4_groupwise(mod.weight, self.group_size, scales=scales)
        if self.uses_plugin_kernel:
            self._store_packed("packed", self.kernels().pack_linear_weight_int4(q, s, self.group_size))
        else:
            self.register_buffer("weight_packed", pack_int4(q))  # uint8 [N, K/2]
            self.register_buffer("weight_scales", s)
        self.register_buffer("bias", None if mod.bias is None else mod.bias.detach().float().clone())

    @classmethod
    def from_float(cls, mod: nn.Linear, backend: Any, numerics: BackendNumerics | None = None, *,
                   group_size: int = 128, scales: Tensor | None = None):
        """Quantize ``mod``'s weight to int4 groups (with given group ``scales``, e.g. learned by QAT)."""
        return cls(mod, backend, numerics, group_size, scales)

    def dequantized_weight(self) -> Tensor:
        """The float weight the reference path computes with."""
        if self.uses_plugin_kernel:
            raise QuantplugError("the packed weight is in the backend's private layout")
        q = unpack_int4(self.weight_packed)
        return dequantize_affine(q, self.weight_scales, 0, group_size=self.group_size)

    def forward(self, x: Tensor) -> Tensor:
        """Float in, float out."""
        x32, dtype = _float(x)
        if self.uses_plugin_kernel and is_tracing(x):
            y = traced.linear_int4_weight_only(x32, packed_tensors(self, "packed"), self.bias, self.out_features,
                                               self.backend_name)
        elif self.uses_plugin_kernel:
            y = self.kernels().linear_int4_weight_only(x32, self._packed("packed"), self.bias)
        else:
            y = F.linear(x32, self.dequantized_weight(), self.bias)
        return y if dtype == torch.float32 else y.to(dtype)

    def extra_repr(self) -> str:
        """Shape, group size, backend and kernel path."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weight=int4 symmetric group_size={self.group_size} (packed 2/byte), activations=float, "
                f"backend={self.backend_name}, kernel={self.kernel_path}")


# ------------------------------------------------------------------ embeddings --


#: ``bits`` -> (code range, storage dtype) of the row-wise embedding schemes.
EMBEDDING_CODES = {8: (-128, 127, torch.int8), 4: (0, 15, torch.uint8)}


def _rowwise_codes(weight: Tensor, bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric codes per row: ``(codes [V, D], scales [V], zero_points int32 [V])``.

    int8: codes -128..127 (int8); int4: codes 0..15 (uint8, not yet packed).
    """
    lo, hi, dtype = EMBEDDING_CODES[bits]
    w = weight.detach().to(torch.float32)
    s, z = choose_qparams(w.amin(1), w.amax(1), quant_min=lo, quant_max=hi, symmetric=False, dtype=dtype)
    return quantize_affine(w, s, z, quant_min=lo, quant_max=hi, dtype=dtype, axis=0), s, z


def int4_table_problem(mod: nn.Module, bits: int) -> str | None:
    """Why ``mod``'s table cannot be stored with ``bits``-bit rows (None if it can): int4 rows pack
    two codes per byte, so they need an even ``embedding_dim``."""
    if bits != 4 or mod.embedding_dim % 2 == 0:
        return None
    return (f"int4 {type(mod).__name__}({mod.num_embeddings}, {mod.embedding_dim}): int4 rows pack two codes "
            f"per byte, so embedding_dim must be even; use embedding_bits=8, embeddings=None (keeps odd tables "
            f"float) or exclude it with filter_fn")


class _EmbeddingBase(QuantizedModule):
    #: the kernel-library methods each width needs (``ops_by_bits[bits]``)
    ops_by_bits: dict[int, tuple[str, ...]] = {}
    #: code width (the class default keeps modules pickled before int4 existed loadable)
    bits: int = 8

    @property
    def ops(self) -> tuple[str, ...]:
        """The kernel methods this module's width runs on a plugin backend."""
        return self.ops_by_bits[self.bits]

    def _setup(self, mod: nn.Module, backend: Any, label: str, bits: int) -> None:
        if getattr(mod, "max_norm", None) is not None:
            raise QuantplugError(f"{type(mod).__name__} with max_norm renormalises its float rows in place; "
                                 f"it cannot be stored as int{bits} (keep it float with filter_fn)")
        if bits not in EMBEDDING_CODES:
            raise QuantplugError(f"{type(mod).__name__}: embedding rows are stored as int8 or int4, got bits={bits!r}")
        problem = int4_table_problem(mod, bits)
        if problem:
            raise QuantplugError(problem)
        self.bits = bits
        self.num_embeddings, self.embedding_dim = mod.num_embeddings, mod.embedding_dim
        self.padding_idx = mod.padding_idx
        self._init_backend(backend, None, self.ops_by_bits[bits], op_label=f"int{bits} {label}")
        q, s, z = _rowwise_codes(mod.weight, bits)
        # int8: codes as they are; int4: two codes per byte (``weight_q`` uint8 [V, D / 2])
        self.register_buffer("weight_q", q if bits == 8 else pack_uint4(q))
        self.register_buffer("weight_scales", s)
        self.register_buffer("weight_zero_points", z)

    def _codes(self, idx: Tensor | None = None) -> Tensor:
        """The codes of rows ``idx`` (all rows when ``None``), unpacked: int8 or uint8 ``[..., D]``."""
        q = self.weight_q if idx is None else self.weight_q[idx]
        return q if self.bits == 8 else unpack_uint4(q)

    def _rows(self, idx: Tensor) -> Tensor:
        return (self._codes(idx).to(torch.int32) - self.weight_zero_points[idx].unsqueeze(-1)).to(torch.float32) * \
            self.weight_scales[idx].unsqueeze(-1)

    def dequantized_weight(self) -> Tensor:
        """The whole table in float (for inspection)."""
        return dequantize_affine(self._codes(), self.weight_scales, self.weight_zero_points, axis=0)

    def extra_repr(self) -> str:
        """Table size, scheme and kernel path."""
        packed = " (packed 2/byte)" if self.bits == 4 else ""
        return (f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}, "
                f"weight=int{self.bits} asymmetric per-row{packed}, backend={self.backend_name}, "
                f"kernel={self.kernel_path}")


class QuantizedEmbedding(_EmbeddingBase):
    """``nn.Embedding`` with int8 or int4 rows (one scale / zero point per row); dequantizes only the rows looked up."""

    ops_by_bits = {8: ("embedding_int8",), 4: ("embedding_int4",)}

    def __init__(self, mod: nn.Embedding, backend: Any, bits: int = 8) -> None:
        super().__init__()
        self._setup(mod, backend, "embedding", bits)

    @classmethod
    def from_float(cls, mod: nn.Embedding, backend: Any, numerics: Any = None, *, bits: int = 8):
        """Quantize the table row by row to ``bits`` (8 or 4) bit codes."""
        return cls(mod, backend, bits)

    def forward(self, indices: Tensor) -> Tensor:
        """Integer indices of any shape -> float ``[*indices.shape, embedding_dim]``."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise QuantplugError(f"QuantizedEmbedding: indices must be int64 or int32, got {indices.dtype}")
        if self.uses_plugin_kernel and is_tracing(indices):
            op = traced.embedding_int8 if self.bits == 8 else traced.embedding_int4
            return op(indices, self.weight_q, self.weight_scales, self.weight_zero_points, self.backend_name)
        if self.uses_plugin_kernel:
            k = self.kernels()
            fn = k.embedding_int8 if self.bits == 8 else k.embedding_int4
            return fn(indices, self.weight_q, self.weight_scales, self.weight_zero_points)
        return self._rows(indices.long())


class QuantizedEmbeddingBag(_EmbeddingBase):
    """``nn.EmbeddingBag`` (sum / mean / max) with int8 or int4 rows."""

    ops_by_bits = {8: ("embedding_bag_int8",), 4: ("embedding_bag_int4",)}

    def __init__(self, mod: nn.EmbeddingBag, backend: Any, bits: int = 8) -> None:
        super().__init__()
        self._setup(mod, backend, "embedding bag", bits)
        self.mode, self.include_last_offset = mod.mode, mod.include_last_offset

    @classmethod
    def from_float(cls, mod: nn.EmbeddingBag, backend: Any, numerics: Any = None, *, bits: int = 8):
        """Quantize the table row by row to ``bits`` (8 or 4) bit codes."""
        return cls(mod, backend, bits)

    def forward(self, input: Tensor, offsets: Tensor | None = None, per_sample_weights: Tensor | None = None) -> Tensor:
        """Same arguments as ``nn.EmbeddingBag.forward``."""
        if self.uses_plugin_kernel and is_tracing(input):
            op = traced.embedding_bag_int8 if self.bits == 8 else traced.embedding_bag_int4
            return op(input, offsets, self.weight_q, self.weight_scales, self.weight_zero_points, self.mode,
                      per_sample_weights, self.include_last_offset, self.padding_idx, self.backend_name)
        if self.uses_plugin_kernel:
            # buffers read from the dict, not through nn.Module.__getattr__: after a bag has
            # streamed its rows through the caches each Python step here costs double
            k, b = self._runtime.get("kernels") or self.kernels(), self._buffers
            fn = k.embedding_bag_int8 if self.bits == 8 else k.embedding_bag_int4
            return fn(input, offsets, b["weight_q"], b["weight_scales"], b["weight_zero_points"], mode=self.mode,
                      per_sample_weights=per_sample_weights, include_last_offset=self.include_last_offset,
                      padding_idx=self.padding_idx)
        # Dequantize only the distinct rows this call touches, then let torch do the bagging.
        uniq, inverse = torch.unique(input.long(), return_inverse=True)
        rows = self._rows(uniq)
        pad = None
        if self.padding_idx is not None:
            hit = (uniq == self.padding_idx).nonzero()
            pad = int(hit[0, 0]) if hit.numel() else None
        return F.embedding_bag(inverse.reshape(input.shape), rows, offsets, mode=self.mode,
                               per_sample_weights=per_sample_weights, include_last_offset=self.include_last_offset,
                               padding_idx=pad)

    def extra_repr(self) -> str:
        """Adds the bag mode."""
        return super().extra_repr() + f", mode={self.mode!r}"
