"""quantplug's eager quantized modules (what ``quantplug.quantize_`` swaps in).

=============================  ==========================================================
dynamic (int8 weights)         :class:`DynamicLinear`, :class:`DynamicLSTM`, :class:`DynamicGRU`,
                               :class:`DynamicLSTMCell`, :class:`DynamicGRUCell`, :class:`DynamicRNNCell`
weight-only                    :class:`Int8WeightOnlyLinear`, :class:`Int4WeightOnlyLinear`,
                               :class:`QuantizedEmbedding`, :class:`QuantizedEmbeddingBag`
static (calibrated int8)       :class:`ObservedLinear` / :class:`ObservedConv` (calibration),
                               :class:`QuantizedLinear`, :class:`QuantizedConv1d`, :class:`QuantizedConv2d`
QAT                            :class:`QATLinear`, :class:`QATConv2d`, :class:`QATEmbedding`
fusion containers              :class:`LinearReLU`, :class:`ConvReLU1d`, :class:`ConvReLU2d`,
                               :class:`ConvBn2d`, :class:`ConvBnReLU2d`
=============================  ==========================================================

Quantized modules keep packed weights as registered buffers (``state_dict``
and pickle work), show backend, dtypes and kernel path in ``repr``, and run
the backend plugin's kernels (the pure-PyTorch reference only where the
backend has no kernel for the op, which ``repr`` then says).
"""

from ._common import BackendNumerics, QuantizedModule, backend_numerics, quantize_weight
from .dynamic import DynamicGRU, DynamicGRUCell, DynamicLinear, DynamicLSTM, DynamicLSTMCell, DynamicRNNCell
from .fused import ConvBn2d, ConvBnReLU2d, ConvReLU1d, ConvReLU2d, LinearReLU, find_fusion_groups, fold_conv_bn
from .qat import DynamicFakeQuantize, GroupwiseFakeQuantize, QATConv2d, QATEmbedding, QATLinear
from .static import ObservedConv, ObservedLinear, QuantizedConv1d, QuantizedConv2d, QuantizedLinear
from .weight_only import Int4WeightOnlyLinear, Int8WeightOnlyLinear, QuantizedEmbedding, QuantizedEmbeddingBag

__all__ = [
    "BackendNumerics", "QuantizedModule", "backend_numerics", "quantize_weight",
    "DynamicLinear", "DynamicLSTM", "DynamicGRU", "DynamicLSTMCell", "DynamicGRUCell", "DynamicRNNCell",
    "Int8WeightOnlyLinear", "Int4WeightOnlyLinear", "QuantizedEmbedding", "QuantizedEmbeddingBag",
    "ObservedLinear", "ObservedConv", "QuantizedLinear", "QuantizedConv1d", "QuantizedConv2d",
    "QATLinear", "QATConv2d", "QATEmbedding", "DynamicFakeQuantize", "GroupwiseFakeQuantize",
    "LinearReLU", "ConvReLU1d", "ConvReLU2d", "ConvBn2d", "ConvBnReLU2d", "find_fusion_groups", "fold_conv_bn",
]
