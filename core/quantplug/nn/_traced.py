"""How the eager quantized modules run while ``torch.export`` or ``torch.compile`` traces them.

In eager execution a quantized module calls its plugin's kernel library
directly (a cffi call, ~0.3 us). Those Python wrappers read raw memory and
check values (finite scales, index bounds), which a tracer's fake tensors do
not have. So while a forward is being traced (:func:`is_tracing`), the
modules call registered ``quantplug::`` ops instead: the same ops the graph
flow lowers to (``linear``, ``linear_dynamic``, ``conv2d``) plus the
weight-only and embedding ops defined here. Each op has a fake implementation
for tracing and a CPU implementation that dispatches to the backend named in
its ``backend`` argument, so an exported eager model runs the very same
plugin kernels, saves with ``torch.export.save`` and loads wherever the
plugin is installed.

Packed weights travel as a list of tensors (:func:`packed_tensors`): the
module's registered buffers plus 0-d tensors for the dataclass's plain
fields, rebuilt into the plugin's dataclass on the first call of the
exported program (see ``lowering._packed_object``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..direct_calls import impl_cpu
from ..kernels import packed_field_tensor
from ..lowering import LIB, _kernels, _packed_object

__all__ = ["is_tracing", "packed_tensors", "ops"]


def is_tracing(x: Any) -> bool:
    """True while ``torch.compile`` / ``torch.export`` trace the current forward.

    Dynamo sets ``torch.compiler.is_compiling()``; non-strict export (the
    default of ``torch.export.export``) runs the Python code with fake or
    functional tensor subclasses, which a plain ``torch.Tensor`` check sees.
    """
    return torch.compiler.is_compiling() or type(x) is not torch.Tensor


def packed_tensors(module: Any, prefix: str) -> list[Tensor]:
    """The op argument ``Tensor[] packed`` for ``module``'s packed weight ``prefix``.

    Tensor fields are the module's buffers (so export lifts them as buffers,
    not copies); plain int/float/bool fields become 0-d tensors, as
    :func:`quantplug.kernels.flatten_packed` encodes them.
    """
    # plain loops over names recorded at packing time: dynamo cannot trace ``dataclasses.fields``
    meta = module._packed_meta[prefix]
    return [packed_field_tensor(meta[name]) if name in meta else getattr(module, f"{prefix}_{name}")
            for name in module._packed_fields[prefix]]


# ---------------------------------------------------------------- weight-only ops --

LIB.define("linear_weight_only(Tensor x, Tensor[] packed, Tensor? bias, int n, str backend) -> Tensor")
LIB.define("linear_int4_weight_only(Tensor x, Tensor[] packed, Tensor? bias, int n, str backend) -> Tensor")
LIB.define("embedding_int8(Tensor indices, Tensor weight_q, Tensor scales, Tensor zero_points, str backend) -> Tensor")
LIB.define("embedding_bag_int8(Tensor input, Tensor? offsets, Tensor weight_q, Tensor scales, Tensor zero_points, "
           "str mode, Tensor? per_sample_weights, bool include_last_offset, int? padding_idx, str backend) -> Tensor")
# int4 rows: ``weight_q`` is uint8 [rows, dim / 2], two codes per byte (quantplug.affine.pack_uint4)
LIB.define("embedding_int4(Tensor indices, Tensor weight_q, Tensor scales, Tensor zero_points, str backend) -> Tensor")
LIB.define("embedding_bag_int4(Tensor input, Tensor? offsets, Tensor weight_q, Tensor scales, Tensor zero_points, "
           "str mode, Tensor? per_sample_weights, bool include_last_offset, int? padding_idx, str backend) -> Tensor")


def _linear_weight_only_impl(x, packed, bias, n, backend):
    return _kernels(backend).linear_weight_only(x, _packed_object(backend, "linear", packed), bias)


def _linear_int4_impl(x, packed, bias, n, backend):
    return _kernels(backend).linear_int4_weight_only(x, _packed_object(backend, "int4_linear", packed), bias)


def _embedding_impl(bits):
    def impl(indices, weight_q, scales, zero_points, backend):
        k = _kernels(backend)
        return (k.embedding_int8 if bits == 8 else k.embedding_int4)(indices, weight_q, scales, zero_points)
    return impl


def _embedding_bag_impl(bits):
    def impl(input, offsets, weight_q, scales, zero_points, mode, per_sample_weights, include_last_offset,
             padding_idx, backend):
        k = _kernels(backend)
        return (k.embedding_bag_int8 if bits == 8 else k.embedding_bag_int4)(
            input, offsets, weight_q, scales, zero_points, mode=mode, per_sample_weights=per_sample_weights,
            include_last_offset=include_last_offset, padding_idx=padding_idx)
    return impl


impl_cpu(LIB, "linear_weight_only", _linear_weight_only_impl)
impl_cpu(LIB, "linear_int4_weight_only", _linear_int4_impl)
for _bits in (8, 4):
    impl_cpu(LIB, f"embedding_int{_bits}", _embedding_impl(_bits))
    impl_cpu(LIB, f"embedding_bag_int{_bits}", _embedding_bag_impl(_bits))


@torch.library.register_fake("quantplug::linear_weight_only", lib=LIB)
def _(x, packed, bias, n, backend):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.register_fake("quantplug::linear_int4_weight_only", lib=LIB)
def _(x, packed, bias, n, backend):
    return x.new_empty((*x.shape[:-1], n))


def _embedding_fake(codes_per_byte):
    def fake(indices, weight_q, scales, zero_points, backend):
        return scales.new_empty((*indices.shape, weight_q.shape[1] * codes_per_byte))
    return fake


def _embedding_bag_fake(codes_per_byte):
    def fake(input, offsets, weight_q, scales, zero_points, mode, per_sample_weights, include_last_offset,
             padding_idx, backend):
        if input.dim() == 2:
            bags = input.shape[0]
        else:
            bags = offsets.shape[0] - (1 if include_last_offset else 0)
        return scales.new_empty((bags, weight_q.shape[1] * codes_per_byte))
    return fake


for _bits in (8, 4):
    torch.library.register_fake(f"quantplug::embedding_int{_bits}", _embedding_fake(8 // _bits), lib=LIB)
    torch.library.register_fake(f"quantplug::embedding_bag_int{_bits}", _embedding_bag_fake(8 // _bits), lib=LIB)


#: ``ops.linear_weight_only`` etc. (the ``quantplug`` op namespace, as in :mod:`quantplug.lowering`).
ops = torch.ops.quantplug
