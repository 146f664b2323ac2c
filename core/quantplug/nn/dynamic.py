"""Dynamically quantized modules: int8 weights, activations quantized on every call.

All of them are built on one op, the backend's ``linear_dynamic(x, packed,
bias, per_row)`` (fp32 in, fp32 out): recurrent layers compute the input
projection of the whole sequence in one call (a large GEMM) and the hidden
projection once per time step.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import QuantplugError
from ._common import BackendNumerics, QuantizedModule, quantize_weight
from ._traced import is_tracing, packed_tensors
from ._traced import ops as traced

__all__ = ["DynamicLinear", "DynamicLSTM", "DynamicGRU", "DynamicLSTMCell", "DynamicGRUCell", "DynamicRNNCell"]

#: kernel methods every dynamic module needs
DYNAMIC_OPS = ("pack_linear_weight", "linear_dynamic")


def _float_input(x: Tensor) -> tuple[Tensor, torch.dtype]:
    """fp32 contiguous view of ``x`` and the dtype to hand back (bf16/fp16 callers get theirs back)."""
    dtype = x.dtype
    if dtype != torch.float32:
        if not dtype.is_floating_point:
            raise QuantplugError(f"dynamic quantized modules take floating-point input, got {dtype}")
        x = x.to(torch.float32)
    if not x.is_contiguous():
        x = x.contiguous()
    return x, dtype


class DynamicLinear(QuantizedModule):
    """``nn.Linear`` with int8 weights and activations quantized per call (per row or per tensor).

    Build with :meth:`from_float`. Weights are packed once into the backend's
    layout and kept as buffers.
    """

    def __init__(self, in_features: int, out_features: int, w_q: Tensor, w_scales: Tensor, w_zero_points: Tensor,
                 bias: Tensor | None, *, backend: Any, numerics: BackendNumerics, per_row: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.per_row = int(in_features), int(out_features), bool(per_row)
        self._init_backend(backend, numerics, DYNAMIC_OPS, op_label="dynamic int8 linear")
        self._store_packed("packed", self.kernels().pack_linear_weight(w_q, w_scales, w_zero_points))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).contiguous().clone())
        # Per-row activations on a kernel that quantizes per tensor only (supports_dynamic_per_row = False): equalize
        # the rows first. Row m is mapped affinely onto [-1, 1] (x' = (x - c_m) / r_m), the kernel
        # quantizes x' per tensor, and y = r_m * (x' W^T) + c_m * sum_k W[n, k] + b. Every row then
        # gets the resolution of its own range, as with per-row asymmetric qparams.
        self.row_equalize = self.per_row and not supports_per_row(self)
        rows = per_row_act_range(backend.kernels) if self.per_row and not self.row_equalize else None
        if rows is not None and self.numerics is not None:  # repr shows the grid the kernel really uses
            self.numerics = dataclasses.replace(self.numerics, act_range=rows)
        w_sum = None
        if self.row_equalize:
            w = (w_q.to(torch.float64) - w_zero_points.to(torch.float64).reshape(-1, 1)) * \
                w_scales.to(torch.float64).reshape(-1, 1)
            w_sum = w.sum(dim=1).to(torch.float32)
        self.register_buffer("weight_row_sums", w_sum)

    @classmethod
    def from_float(cls, mod: nn.Linear, backend: Any, numerics: BackendNumerics, *, per_row: bool = True,
                   observer: nn.Module | None = None) -> "DynamicLinear":
        """Quantize ``mod``'s weight with the backend's numerics (or a trained ``observer``'s qparams)."""
        w_q, s, z = quantize_weight(mod.weight, numerics, observer=observer)
        return cls(mod.in_features, mod.out_features, w_q, s, z, mod.bias, backend=backend, numerics=numerics,
                   per_row=per_row)

    def forward(self, x: Tensor) -> Tensor:
        """fp32 (or bf16/fp16, converted) ``[..., in_features]`` -> same dtype ``[..., out_features]``."""
        # None = traced by torch.export / compile: call the registered op instead of the library
        k = None if self.uses_plugin_kernel and is_tracing(x) else (self._runtime.get("kernels") or self.kernels())
        x32, dtype = _float_input(x)
        if self.row_equalize:
            y = self._row_equalized(k, x32)
        else:
            y = self._kernel(k, x32, self.bias, self.per_row)
        return y if dtype == torch.float32 else y.to(dtype)

    def _kernel(self, k: Any, x: Tensor, bias: Tensor | None, per_row: bool) -> Tensor:
        if k is None:
            return traced.linear_dynamic(x, packed_tensors(self, "packed"), bias, per_row, self.out_features,
                                         self.backend_name)
        return k.linear_dynamic(x, self._packed("packed"), bias, per_row=per_row)

    def _row_equalized(self, k: Any, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features)
        # amax/amin, not aminmax(dim=1): the latter is ~15x slower on CPU in torch 2.13.
        hi, lo = flat.amax(1, keepdim=True), flat.amin(1, keepdim=True)
        center, radius = (hi + lo) * 0.5, (hi - lo) * 0.5
        inv = torch.where(radius > 0, torch.reciprocal(radius), torch.ones_like(radius))  # constant row: x' = 0
        # one fused pass (x * inv - center * inv allocates two [M, K] temporaries: 4x slower at K=1536)
        y = self._kernel(k, torch.addcmul(-center * inv, flat, inv), None, False)
        # y = radius * y' + center * rowsum(W) + bias, in place on the kernel's fresh output
        y.mul_(radius).addmm_(center, self.weight_row_sums.reshape(1, -1))
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Shape, activation granularity, backend, dtypes and kernel path."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activations={self._act_mode()}, {self._backend_repr()}")

    def _act_mode(self) -> str:
        if not self.per_row:
            return "per-tensor dynamic"
        if self.row_equalize:
            return "per-row dynamic (rows equalized, per-tensor kernel)"
        return "per-row dynamic"


# id(kernels) -> (kernels, answer); the object is kept so a recycled id cannot give a stale answer.
_PER_ROW_SUPPORT: dict[int, tuple[Any, bool]] = {}


def supports_per_row(module: QuantizedModule) -> bool:
    """Whether the kernels behind ``module`` quantize dynamic activations per row (probed once per library)."""
    if not module.uses_plugin_kernel:
        return True  # ReferenceKernels.linear_dynamic has per_row
    return kernels_support_per_row(module.kernels())


def per_row_act_range(k: Any) -> tuple[int, int] | None:
    """The activation range the kernel library ``k`` quantizes per-row dynamic activations to, when it
    declares one (``dynamic_per_row_act_range``) that differs from its per-tensor range; else ``None``."""
    rows = getattr(k, "dynamic_per_row_act_range", None) if k is not None else None
    return None if rows is None else (int(rows[0]), int(rows[1]))


def kernels_support_per_row(k: Any) -> bool:
    """Whether the kernel library ``k``'s ``linear_dynamic`` accepts ``per_row=True`` (probed once per library)."""
    if k is None:
        return True  # the reference backend: ReferenceKernels has per_row
    hit = _PER_ROW_SUPPORT.get(id(k))
    if hit is not None and hit[0] is k:
        return hit[1]
    try:
        packed = k.pack_linear_weight(torch.ones(1, 2, dtype=torch.int8), torch.ones(1),
                                      torch.zeros(1, dtype=torch.int32))
        k.linear_dynamic(torch.tensor([[0.5, -1.0], [2.0, 3.0]]), packed, None, per_row=True)
        ok = True
    except (ValueError, NotImplementedError, TypeError):  # KernelInputError is a ValueError
        ok = False
    _PER_ROW_SUPPORT[id(k)] = (k, ok)
    return ok


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def _check_rnn(mod: nn.Module) -> None:
    if getattr(mod, "proj_size", 0):
        raise QuantplugError(f"{type(mod).__name__} with proj_size={mod.proj_size} is not supported by the "
                             f"quantplug dynamic LSTM; keep it float (filter_fn) or set proj_size=0")
    if getattr(mod, "mode", "LSTM") not in ("LSTM", "GRU"):
        raise QuantplugError(f"{type(mod).__name__} mode {mod.mode!r}: only LSTM and GRU layers are quantized")


class _DynamicRNNBase(QuantizedModule):
    """Shared code of :class:`DynamicLSTM` and :class:`DynamicGRU`."""

    gates = 4
    mode_name = "LSTM"

    def __init__(self, mod: nn.RNNBase, backend: Any, numerics: BackendNumerics, per_row: bool) -> None:
        super().__init__()
        _check_rnn(mod)
        self.input_size, self.hidden_size, self.num_layers = mod.input_size, mod.hidden_size, mod.num_layers
        self.batch_first, self.bidirectional, self.per_row = mod.batch_first, mod.bidirectional, per_row
        self.has_bias = mod.bias
        self._init_backend(backend, numerics, DYNAMIC_OPS, op_label=f"dynamic int8 {self.mode_name} (linear_dynamic)")
        dirs = 2 if mod.bidirectional else 1
        ih, hh = [], []
        for layer in range(mod.num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}{'_reverse' if d else ''}"
                b_ih = getattr(mod, f"bias_ih{sfx}") if mod.bias else None
                b_hh = getattr(mod, f"bias_hh{sfx}") if mod.bias else None
                ih.append(DynamicLinear.from_float(_linear(getattr(mod, f"weight_ih{sfx}"), b_ih), backend, numerics,
                                                   per_row=per_row))
                hh.append(DynamicLinear.from_float(_linear(getattr(mod, f"weight_hh{sfx}"), b_hh), backend, numerics,
                                                   per_row=per_row))
        self.ih, self.hh = nn.ModuleList(ih), nn.ModuleList(hh)

    @classmethod
    def from_float(cls, mod: nn.RNNBase, backend: Any, numerics: BackendNumerics, *, per_row: bool = True):
        """Quantize every layer and direction of ``mod``."""
        return cls(mod, backend, numerics, per_row)

    def _cell(self, gi: Tensor, h: Any, hh: DynamicLinear) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _zeros_state(self, batch: int) -> Any:
        dirs = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * dirs, batch, self.hidden_size)

    def forward(self, x: Tensor, hx: Any = None):
        """Same inputs and outputs as the float module (no ``PackedSequence``)."""
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise QuantplugError(f"{type(self).__name__}: PackedSequence input is not supported; pad the batch "
                                 f"(nn.utils.rnn.pad_packed_sequence) before the quantized {self.mode_name}")
        x, dtype = _float_input(x)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        state = self._initial_state(hx, batch, unbatched)
        dirs = 2 if self.bidirectional else 1
        finals: list[Any] = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                idx = layer * dirs + d
                # one GEMM for the whole sequence's input projection
                gi = self.ih[idx](layer_in.reshape(steps * batch, -1)).reshape(steps, batch, -1)
                h = self._state_at(state, idx)
                seq_out = [None] * steps
                order = range(steps - 1, -1, -1) if d else range(steps)
                for t in order:
                    h = self._cell(gi[t], h, self.hh[idx])
                    seq_out[t] = h[0] if isinstance(h, tuple) else h
                outs.append(torch.stack(seq_out, 0))
                finals.append(h)
            layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
        out = layer_in
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        final = self._stack_finals(finals, unbatched)
        if dtype != torch.float32:
            out = out.to(dtype)
        return out, final

    def extra_repr(self) -> str:
        """Sizes, layout and kernel path."""
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, "
                f"activations={'per-row' if self.per_row else 'per-tensor'} dynamic, {self._backend_repr()}")


class DynamicLSTM(_DynamicRNNBase):
    """``nn.LSTM`` with int8 weights (input projection of the sequence in one GEMM per layer)."""

    gates, mode_name = 4, "LSTM"

    def _initial_state(self, hx, batch, unbatched):
        if hx is None:
            z = self._zeros_state(batch)
            return z, z.clone()
        h0, c0 = hx
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return h0.to(torch.float32), c0.to(torch.float32)

    def _state_at(self, state, idx):
        return state[0][idx], state[1][idx]

    def _cell(self, gi, h, hh):
        h_prev, c_prev = h
        gates = gi + hh(h_prev.contiguous())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _stack_finals(self, finals, unbatched):
        h = torch.stack([f[0] for f in finals], 0)
        c = torch.stack([f[1] for f in finals], 0)
        if unbatched:
            h, c = h.squeeze(1), c.squeeze(1)
        return h, c


class DynamicGRU(_DynamicRNNBase):
    """``nn.GRU`` with int8 weights."""

    gates, mode_name = 3, "GRU"

    def _initial_state(self, hx, batch, unbatched):
        if hx is None:
            return self._zeros_state(batch)
        return (hx.unsqueeze(1) if unbatched else hx).to(torch.float32)

    def _state_at(self, state, idx):
        return state[idx]

    def _cell(self, gi, h, hh):
        return _gru_step(gi, hh(h.contiguous()), h)

    def _stack_finals(self, finals, unbatched):
        h = torch.stack(finals, 0)
        return h.squeeze(1) if unbatched else h


def _gru_step(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


class _DynamicCellBase(QuantizedModule):
    """Shared code of the dynamic recurrent cells."""

    op = "cell"

    def __init__(self, mod: nn.RNNCellBase, backend: Any, numerics: BackendNumerics, per_row: bool) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.per_row = mod.input_size, mod.hidden_size, per_row
        self._init_backend(backend, numerics, DYNAMIC_OPS, op_label=f"dynamic int8 {self.op} (linear_dynamic)")
        self.ih = DynamicLinear.from_float(_linear(mod.weight_ih, mod.bias_ih), backend, numerics, per_row=per_row)
        self.hh = DynamicLinear.from_float(_linear(mod.weight_hh, mod.bias_hh), backend, numerics, per_row=per_row)
        self.nonlinearity = getattr(mod, "nonlinearity", "tanh")

    @classmethod
    def from_float(cls, mod: nn.RNNCellBase, backend: Any, numerics: BackendNumerics, *, per_row: bool = True):
        """Quantize the cell's two weight matrices."""
        return cls(mod, backend, numerics, per_row)

    def _prep(self, x: Tensor) -> tuple[Tensor, bool, torch.dtype]:
        x, dtype = _float_input(x)
        unbatched = x.dim() == 1
        return (x.unsqueeze(0) if unbatched else x), unbatched, dtype

    def extra_repr(self) -> str:
        """Sizes and kernel path."""
        return (f"{self.input_size}, {self.hidden_size}, activations={'per-row' if self.per_row else 'per-tensor'} "
                f"dynamic, {self._backend_repr()}")


class DynamicLSTMCell(_DynamicCellBase):
    """``nn.LSTMCell`` with int8 weights."""

    op = "LSTMCell"

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``(h, c)`` like ``nn.LSTMCell``."""
        x, unbatched, dtype = self._prep(x)
        if hx is None:
            h = c = torch.zeros(x.shape[0], self.hidden_size)
        else:
            h, c = (t.unsqueeze(0) if unbatched else t for t in hx)
            h, c = h.to(torch.float32), c.to(torch.float32)
        gates = self.ih(x) + self.hh(h.contiguous())
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if unbatched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h.to(dtype), c.to(dtype)


class DynamicGRUCell(_DynamicCellBase):
    """``nn.GRUCell`` with int8 weights."""

    op = "GRUCell"

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        """Returns ``h`` like ``nn.GRUCell``."""
        x, unbatched, dtype = self._prep(x)
        h = torch.zeros(x.shape[0], self.hidden_size) if hx is None else (hx.unsqueeze(0) if unbatched else hx)
        h = h.to(torch.float32)
        out = _gru_step(self.ih(x), self.hh(h.contiguous()), h)
        return (out.squeeze(0) if unbatched else out).to(dtype)


class DynamicRNNCell(_DynamicCellBase):
    """``nn.RNNCell`` (tanh or relu) with int8 weights."""

    op = "RNNCell"

    def forward(self, x: Tensor, hx: Tensor | None = None) -> Tensor:
        """Returns ``h`` like ``nn.RNNCell``."""
        x, unbatched, dtype = self._prep(x)
        h = torch.zeros(x.shape[0], self.hidden_size) if hx is None else (hx.unsqueeze(0) if unbatched else hx)
        pre = self.ih(x) + self.hh(h.to(torch.float32).contiguous())
        out = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return (out.squeeze(0) if unbatched else out).to(dtype)
