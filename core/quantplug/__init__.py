"""quantplug: plugin-based backend quantizers for PyTorch.

Quick start::

    import quantplug
    quantizer = quantplug.get_quantizer("xnnpack")   # needs quantplug-arm-xnnpack
    print([b.name for b in quantplug.list_backends()])

Public API (everything a plugin may import is re-exported here or lives in a
documented submodule: ``quantplug.specs``, ``quantplug.backend_config``,
``quantplug.annotators``, ``quantplug.kernels``, ``quantplug.affine``,
``quantplug.observers``, ``quantplug.fake_quant``, ``quantplug.build``).
"""

from __future__ import annotations

from pathlib import Path

from ._version import __version__
from .backend import MODES, Backend, KernelLibrary
from .backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    DTypeWithConstraints,
    ObservationType,
    validate_annotations,
)
from .errors import (
    BackendConflictError,
    BackendNotFoundError,
    CalibrationError,
    ConstraintViolationError,
    KernelBuildMismatchError,
    KernelInputError,
    PluginLoadWarning,
    QuantplugError,
)
from .hookspecs import hookimpl, hookspec
from .quantizer import ComposableQuantizer, Quantizer
from .registry import (
    get_backend,
    get_config_transform,
    get_observer_class,
    get_quantizer,
    list_backends,
    plugin_errors,
    register_plugin,
)
from .convert import convert_pt2e
from .explain import explain
from .prepare import prepare_pt2e, prepare_qat_pt2e
from .qat import allow_exported_model_train_eval, move_exported_model_to_eval, move_exported_model_to_train
from .specs import (
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationConfig,
    QuantizationSpec,
    SharedQuantizationSpec,
)

__all__ = [
    "__version__",
    "get_include",
    # registry
    "get_backend", "get_quantizer", "list_backends", "register_plugin", "plugin_errors",
    "get_observer_class", "get_config_transform",
    "hookimpl", "hookspec", "Backend", "KernelLibrary", "MODES",
    # graph flow
    "prepare_pt2e", "prepare_qat_pt2e", "convert_pt2e", "explain",
    "move_exported_model_to_eval", "move_exported_model_to_train", "allow_exported_model_train_eval",
    # quantizer API
    "Quantizer", "ComposableQuantizer",
    "QuantizationSpec", "SharedQuantizationSpec", "DerivedQuantizationSpec",
    "FixedQParamsQuantizationSpec", "QuantizationAnnotation", "QuantizationConfig",
    "BackendConfig", "BackendPatternConfig", "DTypeConfig", "DTypeWithConstraints",
    "ObservationType", "validate_annotations",
    # errors
    "QuantplugError", "BackendNotFoundError", "BackendConflictError", "PluginLoadWarning",
    "ConstraintViolationError", "KernelInputError", "KernelBuildMismatchError", "CalibrationError",
]


def get_include() -> str:
    """Directory of quantplug's C headers, for plugin builds (like ``numpy.get_include()``)."""
    return str(Path(__file__).resolve().parent / "csrc" / "include")


# ---- eager flow (issue 5): configs, quantize_, module-swap QAT, distributed observers ----
from . import distributed  # noqa: E402
from . import nn  # noqa: E402
from .configs import (  # noqa: E402
    BackendCapabilityError,
    BaseConfig,
    ConfigNotRegisteredError,
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8StaticActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    QATConfig,
    int4_weight_only,
    int8_dynamic_activation_int8_weight,
    int8_static_activation_int8_weight,
    int8_weight_only,
    register_quantize_module_handler,
)
from .eager import QuantizeInfo, convert, prepare_qat, quantize_, select_backend  # noqa: E402

__all__ += [
    "quantize_", "prepare_qat", "convert", "select_backend", "QuantizeInfo",
    "BaseConfig", "Int8DynamicActivationInt8WeightConfig", "Int8WeightOnlyConfig", "Int4WeightOnlyConfig",
    "Int8StaticActivationInt8WeightConfig", "QATConfig", "register_quantize_module_handler",
    "int8_dynamic_activation_int8_weight", "int8_weight_only", "int4_weight_only",
    "int8_static_activation_int8_weight", "ConfigNotRegisteredError", "BackendCapabilityError",
    "distributed", "nn",
]
# ---- end eager flow ----

# ---- save/load, numeric debugger, plugin-author kit (issue 6) ----
from .debugger import ComparisonReport, LayerComparison, compare  # noqa: E402
from .serialization import (  # noqa: E402
    CorruptModelFileError,
    IncompatibleBackendError,
    MissingBackendError,
    SerializationError,
    UnsafeGraphError,
    load,
    load_exported,
    save,
)

__all__ += [
    "save", "load", "load_exported", "compare", "ComparisonReport", "LayerComparison",
    "SerializationError", "CorruptModelFileError", "UnsafeGraphError", "MissingBackendError",
    "IncompatibleBackendError",
]
# ---- end save/load, debugger, kit ----
