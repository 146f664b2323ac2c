"""Row-wise quantized Embedding / EmbeddingBag on the fbgemm kernels (mixed into FbgemmKernels).

Tables use FBGEMM's fused row formats, byte for byte the ones of
``torch.ops.quantized.embedding_bag_byte_prepack`` / ``embedding_bag_4bit_prepack``:

* 8 bit: ``[rows, dim + 8]`` uint8: ``dim`` codes, then float32 scale and float32 bias;
* 4 bit: ``[rows, dim / 2 + 4]`` uint8: two codes per byte (even element in the low nibble),
  then float16 scale and float16 bias.

A value is ``code * scale + bias``. Packing is done here in PyTorch (once per table);
lookups run in C (scalar and AVX-512 paths, bit-identical) on the thread pool.

The kernel-library protocol of the core's QuantizedEmbedding / QuantizedEmbeddingBag
(``embedding_int8``, ``embedding_bag_int8``: an int8 table with separate per-row scales and
zero points) is served by a C variant that reads the codes in place, with the per-row (scale,
zero point) pairs interleaved into one small array built once per table (8 bytes a row, see
``_code_table``), and its rows equal the core's dequantization bit for bit.
``embedding_int4`` / ``embedding_bag_int4`` do the same for 4-bit codes (two per byte).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from quantplug.errors import KernelInputError
from quantplug.kernels import check_tensor

__all__ = ["EmbeddingKernelsMixin", "embedding_dim"]

_MODES = {"sum": 0, "mean": 1}
_BAG_OPS = {8: "fbgemm.embedding_bag_int8", 4: "fbgemm.embedding_bag_int4"}  # op names for errors
_INT8_MODES = {"sum": 0, "mean": 1, "max": 2}
#: enum fbgemm_bag_flags (csrc/fbgemm_kernels.h)
_OFFSETS_INT64, _OPEN_END = 1, 2


def embedding_dim(packed: Tensor, bits: int) -> int:
    """Embedding dimension of a fused table with ``packed.shape[1]`` bytes per row."""
    return packed.shape[1] - 8 if bits == 8 else (packed.shape[1] - 4) * 2


def _check_bits(bits: object, op: str) -> int:
    if bits not in (8, 4) or isinstance(bits, bool):
        raise KernelInputError(f"{op}: bits must be 8 or 4, got {bits!r}")
    return int(bits)


def _index_tensor(t: object, name: str, op: str) -> Tensor:
    # the valid case first, at a fifth of check_tensor's cost (both per bag call)
    if type(t) is Tensor and (t.dtype is torch.int64 or t.dtype is torch.int32) and t.dim() == 1 and t.is_cpu \
            and t.is_contiguous():
        return t
    check_tensor(t, name, dtype=(torch.int64, torch.int32), ndim=1, op=op)
    return t


def _bag_layout(indices: object, offsets: Tensor | None, include_last_offset: bool, op: str) -> tuple[Tensor, Tensor]:
    """1-D indices and the ``num_bags + 1`` bag boundaries the C kernels take, from torch's
    EmbeddingBag arguments (``offsets=None``: 2-D ``indices [bags, n]``, fixed-size bags)."""
    if offsets is None:
        if isinstance(indices, Tensor) and indices.dim() != 2:
            raise KernelInputError(f"{op}: indices of shape {tuple(indices.shape)} needs offsets "
                                   f"(or pass 2-D indices [bags, n] for fixed-size bags)")
        check_tensor(indices, "indices", dtype=(torch.int64, torch.int32), ndim=2, op=op)
        bags, per_bag = indices.shape
        return indices.reshape(-1), torch.arange(0, bags + 1, dtype=torch.int64) * per_bag
    _index_tensor(indices, "indices", op)
    _index_tensor(offsets, "offsets", op)
    if not include_last_offset:
        offsets = torch.cat([offsets, offsets.new_tensor([indices.numel()])])
    if offsets.numel() < 1:
        raise KernelInputError(f"{op}: offsets is empty; with include_last_offset=True it needs the end too")
    return indices, offsets


class _CodeTable:
    """A checked table of codes as the C kernels read it: the codes in place (``w_p``), the
    interleaved (scale, zero point) pairs built once (``qparams`` / ``q_p``), ``rows``, ``dim``.

    Kept per table by :meth:`EmbeddingKernelsMixin._code_table`; valid while the caller passes
    the same scales / zero-point tensors unchanged (their ``_version`` counters: an in-place
    update rebuilds the pairs) and the codes tensor still has the address and shape checked.
    """

    __slots__ = ("ref", "scales", "zero_points", "bits", "shape", "addr", "s_version", "z_version",
                 "w_p", "qparams", "q_p", "rows", "dim")

    def __init__(self, ref, scales: Tensor, zero_points: Tensor, bits: int, weight_q: Tensor, w_p,
                 qparams: Tensor, q_p, dim: int) -> None:
        self.ref, self.scales, self.zero_points, self.bits = ref, scales, zero_points, bits
        self.shape, self.addr = weight_q.shape, weight_q.data_ptr()
        self.s_version, self.z_version = scales._version, zero_points._version
        self.w_p, self.qparams, self.q_p = w_p, qparams, q_p
        self.rows, self.dim = int(weight_q.shape[0]), dim

    def still_valid(self, weight_q: Tensor, scales: Tensor, zero_points: Tensor, bits: int) -> bool:
        """Whether this entry still describes ``weight_q`` with these qparams (a few identity tests)."""
        return (self.ref() is weight_q and self.scales is scales and self.zero_points is zero_points
                and self.bits == bits and scales._version == self.s_version
                and zero_points._version == self.z_version and weight_q.data_ptr() == self.addr
                and weight_q.shape == self.shape)


class EmbeddingKernelsMixin:
    """``pack_embedding_rowwise``, ``embedding_bag_rowwise``, ``embedding_rowwise``,
    ``unpack_embedding_rowwise`` and the core's protocol ``embedding_int8``, ``embedding_bag_int8``
    (plus ``embedding_int4``, ``embedding_bag_int4``); needs ``self.lib``/``self.ffi``/``self.ptr``
    of a kernel library."""

    def pack_embedding_rowwise(self, weight: Tensor, bits: int = 8) -> Tensor:
        """Quantize a float32 table ``[rows, dim]`` row-wise (asymmetric, min/max) into the fused format.

        8 bit: ``scale = (max - min) / 255``, ``bias = min``, codes ``round((w - min) * 255 / (max - min + 1e-8))``
        (FBGEMM's choice; the 1e-8 keeps a constant row finite). 4 bit: scale and bias are rounded to
        float16 first and the codes computed from the rounded values, so dequantization matches.
        """
        op = "fbgemm.pack_embedding_rowwise"
        bits = _check_bits(bits, op)
        check_tensor(weight, "weight", dtype=torch.float32, ndim=2, op=op)
        rows, dim = weight.shape
        if rows == 0 or self.lib.fbgemm_embedding_row_bytes(dim, bits) == 0:
            raise KernelInputError(f"{op}: weight shape {tuple(weight.shape)} is not supported with bits={bits} "
                                   f"(need rows > 0, dim > 0{', dim even' if bits == 4 else ''})")
        if not bool(torch.isfinite(weight).all()):
            raise KernelInputError(f"{op}: weight contains inf or NaN")
        lo, hi = weight.amin(1, keepdim=True), weight.amax(1, keepdim=True)
        if bits == 8:
            scale = (hi - lo) / 255.0
            codes = torch.round((weight - lo) * (255.0 / (hi - lo + 1e-8))).clamp(0, 255).to(torch.uint8)
            tail = torch.cat([scale, lo], 1).contiguous().view(torch.uint8)
            return torch.cat([codes, tail], 1)
        bias_h = lo.to(torch.float16)
        scale_h = ((hi - bias_h.float()) / 15.0).to(torch.float16)
        scale_h = torch.where(scale_h == 0, torch.ones_like(scale_h), scale_h)
        codes = torch.round((weight - bias_h.float()) / scale_h.float()).clamp(0, 15).to(torch.uint8)
        nib = codes[:, 0::2] | (codes[:, 1::2] << 4)
        tail = torch.cat([scale_h, bias_h], 1).contiguous().view(torch.uint8)
        return torch.cat([nib, tail], 1)

    def unpack_embedding_rowwise(self, packed: Tensor, bits: int = 8) -> Tensor:
        """Dequantized float32 table ``[rows, dim]`` of a fused table (pure PyTorch; the reference)."""
        op = "fbgemm.unpack_embedding_rowwise"
        bits = _check_bits(bits, op)
        self._check_table(packed, bits, op)
        dim = embedding_dim(packed, bits)
        if bits == 8:
            codes = packed[:, :dim].float()
            qp = packed[:, dim:].flatten().clone().view(torch.float32).reshape(-1, 2)
        else:
            nib = packed[:, : dim // 2]
            codes = torch.stack([nib & 15, nib >> 4], 2).reshape(packed.shape[0], dim).float()
            qp = packed[:, dim // 2:].flatten().clone().view(torch.float16).reshape(-1, 2).float()
        return codes * qp[:, :1] + qp[:, 1:2]

    def _check_table(self, packed: Tensor, bits: int, op: str) -> int:
        check_tensor(packed, "weight", dtype=torch.uint8, ndim=2, op=op)
        dim = embedding_dim(packed, bits)
        if packed.shape[0] == 0 or dim <= 0 or self.lib.fbgemm_embedding_row_bytes(dim, bits) != packed.shape[1]:
            raise KernelInputError(f"{op}: weight of shape {tuple(packed.shape)} is not a fused {bits}-bit table "
                                   f"(build it with pack_embedding_rowwise(weight, bits={bits}))")
        return dim

    def embedding_bag_rowwise(self, weight: Tensor, indices: Tensor, offsets: Tensor | None = None,
                              mode: str = "sum", per_sample_weights: Tensor | None = None,
                              include_last_offset: bool = False, *, bits: int = 8) -> Tensor:
        """EmbeddingBag over a fused table: float32 ``[num_bags, dim]``.

        ``indices`` int32/int64 1-D, ``offsets`` the start of each bag (torch's convention; with
        ``include_last_offset`` the last entry is the end). ``offsets=None`` needs 2-D
        ``indices [bags, n]`` (fixed-size bags). ``mode`` is ``"sum"`` or ``"mean"``;
        ``per_sample_weights`` (float32, same length as indices) needs ``"sum"``.
        """
        op = "fbgemm.embedding_bag_rowwise"
        bits = _check_bits(bits, op)
        dim = self._check_table(weight, bits, op)
        if mode not in _MODES:
            raise KernelInputError(f"{op}: mode must be 'sum' or 'mean', got {mode!r}")
        indices, offsets = _bag_layout(indices, offsets, include_last_offset, op)
        num_bags = offsets.numel() - 1
        psw = self._sample_weights(per_sample_weights, mode, indices.numel(), op)
        out = torch.empty(num_bags, dim, dtype=torch.float32)
        self.sync_threads()
        status = self.lib.fbgemm_embedding_bag_rowwise(
            self.ptr(weight, "uint8_t *"), weight.shape[0], dim, bits, self.ptr(indices, "void *"),
            int(indices.dtype == torch.int64), indices.numel(), self.ptr(offsets, "void *"),
            int(offsets.dtype == torch.int64), num_bags, psw, _MODES[mode], self.ptr(out, "float *"))
        if status == 1:
            self._explain_bag_error(weight, indices, offsets, op)
        self.check_status(status, op)
        return out

    def _sample_weights(self, per_sample_weights: Tensor | None, mode: str, n: int, op: str):
        """C pointer of float32 ``per_sample_weights [n]`` (NULL for None); torch allows them with 'sum' only."""
        if per_sample_weights is None:
            return self.ffi.NULL
        if mode != "sum":
            raise KernelInputError(f"{op}: per_sample_weights needs mode='sum' (torch's rule), got {mode!r}")
        check_tensor(per_sample_weights, "per_sample_weights", dtype=torch.float32, shape=(n,), op=op)
        return self.ptr(per_sample_weights, "float *")

    def _explain_bag_error(self, weight: Tensor, indices: Tensor, offsets: Tensor, op: str) -> None:
        rows = weight.shape[0]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= rows):
            raise KernelInputError(f"{op}: indices must lie in [0, {rows}) (rows of the table), got values in "
                                   f"[{int(indices.min())}, {int(indices.max())}]")
        raise KernelInputError(f"{op}: offsets must start at 0, never decrease and not pass len(indices)="
                               f"{indices.numel()}; got {offsets.tolist()[:8]}...")

    def embedding_rowwise(self, weight: Tensor, indices: Tensor, *, bits: int = 8) -> Tensor:
        """Embedding lookup over a fused table: float32 ``[*indices.shape, dim]``."""
        op = "fbgemm.embedding_rowwise"
        if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
            raise KernelInputError(f"{op}: indices must be an int64 or int32 tensor")
        flat = indices.reshape(-1, 1).contiguous()
        out = self.embedding_bag_rowwise(weight, flat, None, "sum", bits=bits)
        return out.reshape(*indices.shape, out.shape[-1])

    # ------------------------------------------------ the core's int8 protocol --
    def _code_table(self, weight_q: Tensor, scales: Tensor, zero_points: Tensor, bits: int,
                    op: str) -> "_CodeTable":
        """The checked table of int8 codes ``weight_q [rows, dim]`` (or 4-bit ones, uint8
        ``[rows, dim / 2]``) with its per-row scales and zero points.

        The checks and the interleaved (scale, zero point) pairs the C kernel reads
        (fbgemm_embedding_qparams_interleave: one cache line per looked-up row instead of two)
        are made once per table and kept while ``weight_q`` lives, keyed by its identity (the
        core's storage stays the only copy of the codes); :meth:`_CodeTable.still_valid` is the
        per-call test.
        """
        tables = self.__dict__.setdefault("_code_tables", {})
        entry = tables.get(id(weight_q))
        if entry is not None and entry.still_valid(weight_q, scales, zero_points, bits):
            return entry
        name = "weight_q" if bits == 8 else "weight_packed"
        check_tensor(weight_q, name, dtype=torch.int8 if bits == 8 else torch.uint8, ndim=2, op=op)
        rows, cols = weight_q.shape
        if rows == 0 or cols == 0:
            raise KernelInputError(f"{op}: {name} has an empty dimension (shape {tuple(weight_q.shape)})")
        check_tensor(scales, "scales", dtype=torch.float32, shape=(rows,), op=op)
        check_tensor(zero_points, "zero_points", dtype=torch.int32, shape=(rows,), op=op)
        qparams = torch.empty(rows, 2, dtype=torch.int32)
        if self.lib.fbgemm_embedding_qparams_interleave(self.ptr(scales, "float *"), self.ptr(zero_points, "int32_t *"),
                                                        rows, self.ptr(qparams, "int32_t *")) != 0:
            raise KernelInputError(f"{op}: scales contains inf or NaN")
        key = id(weight_q)
        # the entry goes when the table does (the callback of a replaced entry's reference never runs)
        ref = weakref.ref(weight_q, lambda _, key=key: tables.pop(key, None))
        entry = _CodeTable(ref, scales, zero_points, bits, weight_q, self.ptr(weight_q, "uint8_t *"), qparams,
                           self.ptr(qparams, "int32_t *"), int(cols) * (8 // bits))
        tables[key] = entry
        return entry

    def embedding_bag_int8(self, input: Tensor, offsets: Tensor | None, weight_q: Tensor, scales: Tensor,
                           zero_points: Tensor, *, mode: str = "mean", per_sample_weights: Tensor | None = None,
                           include_last_offset: bool = False, padding_idx: int | None = None) -> Tensor:
        """``F.embedding_bag`` over int8 rows ``(weight_q[r] - zero_points[r]) * scales[r]`` (the core's
        QuantizedEmbeddingBag protocol): float32 ``[num_bags, dim]``.

        Same arguments as ``nn.EmbeddingBag.forward``: 1-D ``input`` with ``offsets``, or 2-D
        ``input [bags, n]`` without; ``mode`` ``"sum"`` / ``"mean"`` / ``"max"``; entries equal to
        ``padding_idx`` are skipped (and not counted by ``"mean"``).
        """
        return self._bag_codes(8, input, offsets, weight_q, scales, zero_points, mode, per_sample_weights,
                               include_last_offset, padding_idx)

    def embedding_bag_int4(self, input: Tensor, offsets: Tensor | None, weight_packed: Tensor, scales: Tensor,
                           zero_points: Tensor, *, mode: str = "mean", per_sample_weights: Tensor | None = None,
                           include_last_offset: bool = False, padding_idx: int | None = None) -> Tensor:
        """:meth:`embedding_bag_int8` over 4-bit rows: ``weight_packed`` uint8 ``[rows, dim / 2]`` holds
        codes 0..15 (element ``2i`` in the low nibble of byte ``i``), a value is
        ``(code - zero_points[r]) * scales[r]``."""
        return self._bag_codes(4, input, offsets, weight_packed, scales, zero_points, mode, per_sample_weights,
                               include_last_offset, padding_idx)

    def _bag_codes(self, bits: int, input: Tensor, offsets: Tensor | None, weight_q: Tensor, scales: Tensor,
                   zero_points: Tensor, mode: str, per_sample_weights: Tensor | None, include_last_offset: bool,
                   padding_idx: int | None) -> Tensor:
        op = _BAG_OPS[bits]
        tables = self.__dict__.get("_code_tables")
        table = tables.get(id(weight_q)) if tables is not None else None
        if table is None or not table.still_valid(weight_q, scales, zero_points, bits):
            table = self._code_table(weight_q, scales, zero_points, bits, op)
        mode_id = _INT8_MODES.get(mode) if type(mode) is str else None
        # Hot path, torch's usual call (1-D indices with bag starts, nothing else): the same C
        # call with the checks inlined. Why bother: the bag has just streamed thousands of random
        # rows through the caches, so the interpreter runs cold and the general path's helper
        # calls cost ~7 us a call on 100000x128 / 512 bags of 20 (a kernel of ~75 us);
        # `python benchmarks/bench_embeddings.py` measures the whole module call.
        if (offsets is not None and per_sample_weights is None and padding_idx is None and mode_id is not None
                and not include_last_offset and type(input) is Tensor and type(offsets) is Tensor
                and (input.dtype is torch.int64 or input.dtype is torch.int32)
                and (offsets.dtype is torch.int64 or offsets.dtype is torch.int32)
                and input.dim() == 1 and offsets.dim() == 1 and input.is_contiguous() and offsets.is_contiguous()
                and input.is_cpu and offsets.is_cpu):
            num_bags = offsets.numel()
            if num_bags == 0:
                return torch.empty(0, table.dim, dtype=torch.float32)
            out = torch.empty(num_bags, table.dim, dtype=torch.float32)
            if torch.get_num_threads() != self.lib.qp_get_num_threads():
                self.sync_threads()
            ffi = self.ffi
            status = self.lib.fbgemm_embedding_bag_codes(
                table.w_p, bits, table.q_p, table.rows, table.dim, ffi.cast("void *", input.data_ptr()),
                input.dtype is torch.int64, input.numel(), ffi.cast("void *", offsets.data_ptr()),
                _OPEN_END | _OFFSETS_INT64 if offsets.dtype is torch.int64 else _OPEN_END, num_bags, ffi.NULL,
                mode_id, -1, ffi.cast("float *", out.data_ptr()))
            if status:
                if status == 1:
                    self._explain_bag_error(weight_q, input, offsets, op)
                self.check_status(status, op)
            return out
        if mode_id is None:
            raise KernelInputError(f"{op}: mode must be 'sum', 'mean' or 'max', got {mode!r}")
        if not isinstance(input, Tensor) or input.dtype not in (torch.int64, torch.int32):
            raise KernelInputError(f"{op}: input must be an int64 or int32 tensor")
        if not input.is_contiguous():
            input = input.contiguous()  # nn.EmbeddingBag accepts any layout
        if offsets is not None and not include_last_offset:
            # torch's usual form (the start of each bag): the C kernel ends the last bag at
            # len(indices) itself (FBGEMM_BAG_OPEN_END); appending the end here cost ~10 us a call
            indices, offsets = _index_tensor(input, "indices", op), _index_tensor(offsets, "offsets", op)
            num_bags, flags = offsets.numel(), _OPEN_END
        else:
            indices, offsets = _bag_layout(input, offsets, include_last_offset, op)
            num_bags, flags = offsets.numel() - 1, 0
        psw = self._sample_weights(per_sample_weights, mode, indices.numel(), op)
        pad = -1
        rows = table.rows
        if padding_idx is not None:
            pad = int(padding_idx) + (rows if int(padding_idx) < 0 else 0)  # torch's negative padding_idx
            if not 0 <= pad < rows:
                raise KernelInputError(f"{op}: padding_idx={padding_idx} is outside the table of {rows} rows")
        out = torch.empty(num_bags, table.dim, dtype=torch.float32)
        if num_bags == 0:  # nothing to compute (an empty tensor may have no data pointer)
            return out
        if offsets.dtype is torch.int64:
            flags |= _OFFSETS_INT64
        self.sync_threads()
        status = self.lib.fbgemm_embedding_bag_codes(
            table.w_p, bits, table.q_p, rows, table.dim, self.ptr(indices, "void *"), int(indices.dtype is torch.int64),
            indices.numel(), self.ptr(offsets, "void *"), flags, num_bags, psw, mode_id, pad, self.ptr(out, "float *"))
        if status == 1:
            self._explain_bag_error(weight_q, indices, offsets, op)
        self.check_status(status, op)
        return out

    def embedding_int8(self, indices: Tensor, weight_q: Tensor, scales: Tensor, zero_points: Tensor) -> Tensor:
        """``F.embedding`` over int8 rows ``(weight_q[r] - zero_points[r]) * scales[r]`` (the core's
        QuantizedEmbedding protocol): float32 ``[*indices.shape, dim]``, equal to the core's rows bit for bit."""
        return self._lookup_codes(8, indices, weight_q, scales, zero_points)

    def embedding_int4(self, indices: Tensor, weight_packed: Tensor, scales: Tensor, zero_points: Tensor) -> Tensor:
        """``F.embedding`` over the 4-bit rows of :meth:`embedding_bag_int4`: float32 ``[*indices.shape, dim]``."""
        return self._lookup_codes(4, indices, weight_packed, scales, zero_points)

    def _lookup_codes(self, bits: int, indices: Tensor, weight_q: Tensor, scales: Tensor,
                      zero_points: Tensor) -> Tensor:
        op = f"fbgemm.embedding_int{bits}"
        if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
            raise KernelInputError(f"{op}: indices must be an int64 or int32 tensor")
        try:
            out = self._bag_codes(bits, indices.reshape(-1, 1), None, weight_q, scales, zero_points, "sum", None,
                                  False, None)
        except KernelInputError as exc:
            raise KernelInputError(str(exc).replace(f"fbgemm.embedding_bag_int{bits}", op)) from None
        return out.reshape(*indices.shape, out.shape[-1])
