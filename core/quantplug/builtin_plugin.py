"""The core's own plugin: the pure-PyTorch ``reference`` backend and the built-in observers.

It registers through the same hooks as any third-party plugin, which keeps the
hook contract honest (the core cannot cheat around it) and gives a working
backend with no plugin installed: ``reference`` produces the reference
representation (explicit quantize/dequantize around float ops), the form used
for debugging and for checking every plugin's kernels.
"""

from __future__ import annotations

import torch

from ._version import __version__
from .annotators import DEFAULT_RULES, PatternQuantizer, annotate_matmul, make_quantization_config
from .backend import Backend
from .backend_config import BackendConfig, BackendPatternConfig, DTypeConfig, DTypeWithConstraints, ObservationType
from .hookspecs import hookimpl

REFERENCE_NAME = "reference"


def reference_backend_config() -> BackendConfig:
    """int8 activations, int8 per-channel symmetric weights, every default pattern."""
    act = DTypeWithConstraints(torch.int8)
    weight = DTypeWithConstraints(torch.int8)
    static = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=weight, bias_dtype=torch.int32)
    dynamic = DTypeConfig(input_dtype=act, weight_dtype=weight, is_dynamic=True)
    weighted = [("linear",), ("linear", "relu"), ("conv1d",), ("conv2d",), ("conv2d", "relu"),
                ("conv2d", "batch_norm"), ("conv2d", "batch_norm", "relu"), ("conv1d", "relu"),
                ("linear", "hardtanh"), ("conv1d", "hardtanh"), ("conv2d", "hardtanh"), ("conv2d", "batch_norm", "hardtanh")]
    configs = [BackendPatternConfig(p, dtype_configs=[static] + ([dynamic] if p[0] == "linear" else []))
               for p in weighted]
    configs += [BackendPatternConfig(p, dtype_configs=[DTypeConfig(input_dtype=act, output_dtype=act)])
                for p in [("add",), ("add", "relu"), ("mul",), ("mul", "relu"), ("matmul",)]]
    configs += [BackendPatternConfig((p,), ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT,
                                     [DTypeConfig(input_dtype=act, output_dtype=act)])
                for p in ("cat", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "flatten", "reshape", "permute")]
    # Fixed-qparams ops: the reference backend accepts whatever fixed qparams a quantizer
    # chooses (no exact-match constraint: it runs float ops between q and dq).
    configs += [BackendPatternConfig((p,), ObservationType.OUTPUT_FIXED_QPARAMS,
                                     [DTypeConfig(input_dtype=act, output_dtype=act)])
                for p in ("sigmoid", "tanh", "hardsigmoid")]
    return BackendConfig(REFERENCE_NAME, configs)


class ReferenceQuantizer(PatternQuantizer):
    """Quantizer of the ``reference`` backend (int8 asymmetric activations)."""

    backend_name = REFERENCE_NAME
    #: the reference form can run any pattern, so it also quantizes activation matmuls (attention)
    rules = {**DEFAULT_RULES, "matmul": annotate_matmul}
    #: weight-only quantization runs through ``quantize_`` only: no graph-flow option selects it
    eager_only_modes = ("weight_only",)

    def __init__(self, *, is_per_channel: bool = True, is_dynamic: bool = False, is_qat: bool = False) -> None:
        config = make_quantization_config(
            act_dtype=torch.int8, weight_dtype=torch.int8, weight_range=(-127, 127),
            weight_per_channel=is_per_channel, is_dynamic=is_dynamic, is_qat=is_qat,
        )
        super().__init__(config, reference_backend_config())


@hookimpl
def quantplug_register_backends(register):
    """Register the ``reference`` backend (no kernels: reference representation)."""
    register(Backend(
        name=REFERENCE_NAME,
        distribution="quantplug",
        version=__version__,
        description="pure-PyTorch reference representation (explicit q/dq, no C kernels)",
        quantizer_factory=ReferenceQuantizer,
        backend_config=reference_backend_config(),
        # weight_only: the eager flow's weight-only modules run in pure PyTorch on this backend.
        modes=("static", "dynamic", "weight_only", "qat"),
        kernels=None,
    ))


@hookimpl
def quantplug_register_observers(register):
    """Register the built-in observers under short names."""
    from . import observers as ob

    for name, cls in {
        "minmax": ob.MinMaxObserver,
        "moving_average_minmax": ob.MovingAverageMinMaxObserver,
        "per_channel_minmax": ob.PerChannelMinMaxObserver,
        "moving_average_per_channel_minmax": ob.MovingAveragePerChannelMinMaxObserver,
        "histogram": ob.HistogramObserver,
        "percentile": ob.PercentileObserver,
        "placeholder": ob.PlaceholderObserver,
        "fixed_qparams": ob.FixedQParamsObserver,
    }.items():
        register(name, cls)


@hookimpl
def quantplug_register_configs(register):
    """Register the eager flow's built-in configs (``quantplug.configs``) and their module handlers."""
    from .eager import BUILTIN_HANDLERS

    for config_class, handler in BUILTIN_HANDLERS.items():
        register(config_class, handler)
