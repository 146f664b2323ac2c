"""What a quantizer says about each tensor: quantization specs and annotations.

A quantizer attaches a :class:`QuantizationAnnotation` to graph nodes
(``node.meta["quantization_annotation"]``). Each input edge and the output get
a spec:

* :class:`QuantizationSpec` — observe and quantize this tensor (dtype, range,
  per-tensor/per-channel/per-group, static or dynamic, which observer).
* :class:`SharedQuantizationSpec` — reuse the qparams of another edge or node
  (cat inputs, reshape output). Sharing is symmetric and order-independent:
  the prepare step merges all shared edges into one group with one observer.
* :class:`DerivedQuantizationSpec` — qparams computed from other tensors'
  (an int32 bias with ``scale = act_scale * weight_scale``).
* :class:`FixedQParamsQuantizationSpec` — fixed scale/zero point (sigmoid's
  output is always in [0, 1]).

These names and fields follow torchao's pt2e quantizer API so that existing
quantizers port by changing imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch.fx import Node

__all__ = [
    "EdgeOrNode",
    "QuantizationSpecBase",
    "QuantizationSpec",
    "FixedQParamsQuantizationSpec",
    "SharedQuantizationSpec",
    "DerivedQuantizationSpec",
    "QuantizationAnnotation",
    "QuantizationConfig",
    "ANNOTATION_KEY",
    "EXPLAIN_KEY",
    "INT4",
    "UINT4",
]

#: The node.meta key under which annotations are stored.
ANNOTATION_KEY = "quantization_annotation"

#: The node.meta key holding why a node runs the way it does (read by ``quantplug.explain``):
#: set by annotation when a node stays float, by lowering when a pattern stays in reference form.
EXPLAIN_KEY = "quantplug_explain"
#: An ``EXPLAIN_KEY`` text starting with this marks an ATen op lowering runs on the quantized
#: integers themselves (cat with shared qparams): it counts as int8 compute in ``explain``.
INTEGER_OP_PREFIX = "integer "

#: Sub-byte dtypes are named by string: torch has no stable int4 tensor dtype
#: for computation; values live in int8 storage, packed two per byte on save.
INT4 = "int4"
UINT4 = "uint4"

#: An input edge ``(producer, consumer)`` or a node (meaning its output).
EdgeOrNode = Union[tuple[Node, Node], Node]

_DTYPE_RANGES = {
    torch.int8: (-128, 127),
    torch.uint8: (0, 255),
    torch.int32: (-(2**31), 2**31 - 1),
    torch.float16: None,
    torch.float32: None,
    INT4: (-8, 7),
    UINT4: (0, 15),
}

_PER_CHANNEL = (torch.per_channel_affine, torch.per_channel_symmetric)
_SYMMETRIC = (torch.per_tensor_symmetric, torch.per_channel_symmetric)


def _check_range(owner: str, dtype: Any, quant_min: int | None, quant_max: int | None) -> None:
    if dtype not in _DTYPE_RANGES:
        raise ValueError(f"{owner}: unsupported dtype {dtype!r}; use one of {list(_DTYPE_RANGES)}")
    bounds = _DTYPE_RANGES[dtype]
    if quant_min is not None and quant_max is not None and quant_min > quant_max:
        raise ValueError(f"{owner}: quant_min {quant_min} > quant_max {quant_max}")
    if bounds is not None:
        lo, hi = bounds
        for label, v in (("quant_min", quant_min), ("quant_max", quant_max)):
            if v is not None and not lo <= v <= hi:
                raise ValueError(f"{owner}: {label}={v} is outside the {dtype} range [{lo}, {hi}]")


def dtype_range(dtype: Any) -> tuple[int, int] | None:
    """The full integer range of ``dtype`` (``None`` for float dtypes)."""
    return _DTYPE_RANGES.get(dtype)


class QuantizationSpecBase:
    """Marker base class of every spec."""


@dataclass(eq=True, frozen=True)
class QuantizationSpec(QuantizationSpecBase):
    """Quantize a tensor with qparams from an observer (or fake-quant) module.

    :param dtype: ``torch.int8``, ``torch.uint8``, ``torch.int32``, ``"int4"``...
    :param observer_or_fake_quant_ctr: zero-argument callable building the
        observer (``MinMaxObserver.with_args(...)``); ``None`` only for dynamic
        specs whose qparams are computed at run time.
    :param quant_min, quant_max: the integer range (default: the dtype's).
    :param qscheme: ``torch.per_tensor_affine`` and friends; ``None`` means
        per-tensor affine.
    :param ch_axis: channel axis for per-channel schemes.
    :param group_size: elements per group along the last dim (per-group int4).
    :param is_dynamic: activation qparams computed per call (dynamic quant).
    :param per_row: with ``is_dynamic``: one scale per activation row.
    """

    dtype: Any
    observer_or_fake_quant_ctr: Callable[[], Any] | None = None
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    group_size: int | None = None
    is_dynamic: bool = False
    per_row: bool = False

    def __post_init__(self) -> None:
        _check_range("QuantizationSpec", self.dtype, self.quant_min, self.quant_max)
        if self.qscheme in _PER_CHANNEL and self.ch_axis is None:
            raise ValueError(f"QuantizationSpec: qscheme {self.qscheme} needs ch_axis")
        if self.group_size is not None and self.group_size <= 0:
            raise ValueError(f"QuantizationSpec: group_size must be positive, got {self.group_size}")
        if self.per_row and not self.is_dynamic:
            raise ValueError("QuantizationSpec: per_row applies to dynamic activation specs only")
        if self.observer_or_fake_quant_ctr is None and not self.is_dynamic:
            raise ValueError("QuantizationSpec: observer_or_fake_quant_ctr is required for static specs")

    @property
    def range(self) -> tuple[int, int]:
        """``(quant_min, quant_max)`` with the dtype's range filling gaps."""
        lo, hi = _DTYPE_RANGES[self.dtype] or (0, 0)
        return (lo if self.quant_min is None else self.quant_min, hi if self.quant_max is None else self.quant_max)

    @property
    def is_per_channel(self) -> bool:
        """True for per-channel schemes."""
        return self.qscheme in _PER_CHANNEL

    @property
    def is_symmetric(self) -> bool:
        """True for symmetric schemes."""
        return self.qscheme in _SYMMETRIC


@dataclass(eq=True, frozen=True)
class FixedQParamsQuantizationSpec(QuantizationSpecBase):
    """Quantize with a fixed, data-independent scale and zero point."""

    dtype: Any
    scale: float
    zero_point: int
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None

    def __post_init__(self) -> None:
        _check_range("FixedQParamsQuantizationSpec", self.dtype, self.quant_min, self.quant_max)
        if not self.scale > 0:
            raise ValueError(f"FixedQParamsQuantizationSpec: scale must be > 0, got {self.scale}")

    @property
    def range(self) -> tuple[int, int]:
        """``(quant_min, quant_max)`` with the dtype's range filling gaps."""
        lo, hi = _DTYPE_RANGES[self.dtype] or (0, 0)
        return (lo if self.quant_min is None else self.quant_min, hi if self.quant_max is None else self.quant_max)


@dataclass(eq=True, frozen=True)
class SharedQuantizationSpec(QuantizationSpecBase):
    """Use the same qparams (one observer) as ``edge_or_node``."""

    edge_or_node: EdgeOrNode


@dataclass(eq=True, frozen=True)
class DerivedQuantizationSpec(QuantizationSpecBase):
    """Qparams computed from other tensors' observers.

    ``derive_qparams_fn(observers) -> (scale, zero_point)`` gets the observers
    of ``derived_from`` in order; the usual case is a bias whose scale is the
    product of the input and weight scales.
    """

    derived_from: tuple[EdgeOrNode, ...]
    derive_qparams_fn: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]]
    dtype: Any
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None

    def __post_init__(self) -> None:
        _check_range("DerivedQuantizationSpec", self.dtype, self.quant_min, self.quant_max)
        object.__setattr__(self, "derived_from", tuple(self.derived_from))


@dataclass
class QuantizationAnnotation:
    """How a node's inputs and output are quantized.

    :param input_qspec_map: input node -> spec for that edge.
    :param output_qspec: spec for the node's output (``None``: stays float).
    :param allow_implicit_sharing: a consumer may reuse this output's observer
        when its input spec is identical.
    :param pattern: names of the fused pattern this node belongs to, e.g.
        ``("conv2d", "relu")`` (used by validation and ``explain``).
    :param _annotated: set once a quantizer claimed the node, so later
        quantizers in a ``ComposableQuantizer`` leave it alone.
    """

    input_qspec_map: dict[Node, QuantizationSpecBase | None] = field(default_factory=dict)
    output_qspec: QuantizationSpecBase | None = None
    allow_implicit_sharing: bool = True
    pattern: tuple[str, ...] = ()
    _annotated: bool = False


@dataclass(frozen=True)
class QuantizationConfig:
    """The specs a quantizer applies to one class of ops.

    ``bias`` may be ``None``: the pattern annotators then derive an int32 bias
    spec (``scale = act_scale * weight_scale``) when the backend wants integer
    bias, or leave the bias in float.
    """

    input_activation: QuantizationSpec | None
    output_activation: QuantizationSpec | None
    weight: QuantizationSpec | None
    bias: QuantizationSpecBase | None = None
    is_qat: bool = False

    @property
    def is_dynamic(self) -> bool:
        """True when activations are quantized at run time."""
        return self.input_activation is not None and self.input_activation.is_dynamic
