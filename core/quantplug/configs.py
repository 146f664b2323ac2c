"""Configuration objects of the eager flow (``quantplug.quantize_(model, config)``).

A config is a small dataclass that says *what* to do (int8 dynamic
activations, int4 group-wise weights...), never *how*: the module transform
registered for its class does the work, with the numbers of the chosen
backend. Configs are plain data, so they print, compare, and round-trip
through JSON::

    cfg = Int4WeightOnlyConfig(group_size=64)
    text = json.dumps(cfg.to_dict())
    assert BaseConfig.from_dict(json.loads(text)) == cfg

Adding a config without touching the core (a user script or a plugin)::

    @dataclass
    class MyInt2Config(quantplug.BaseConfig):
        group_size: int = 32

    @quantplug.register_quantize_module_handler(MyInt2Config)
    def _swap(module, config, backend):
        if not isinstance(module, torch.nn.Linear):
            return module            # not ours: leave it alone
        return MyInt2Linear.from_float(module, config.group_size)

Plugins may instead register through the ``quantplug_register_configs``
hook; both paths feed the same registry (``quantplug.registry``).

Snake-case aliases (``int8_weight_only()``...) return the same objects, for
people coming from older torchao where these names were functions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable

import torch

from .errors import ConstraintViolationError, QuantplugError
from .hookspecs import hookimpl

__all__ = [
    "BaseConfig",
    "Int8DynamicActivationInt8WeightConfig",
    "Int8WeightOnlyConfig",
    "Int4WeightOnlyConfig",
    "Int8StaticActivationInt8WeightConfig",
    "QATConfig",
    "int8_dynamic_activation_int8_weight",
    "int8_weight_only",
    "int4_weight_only",
    "int8_static_activation_int8_weight",
    "register_quantize_module_handler",
    "ConfigNotRegisteredError",
    "BackendCapabilityError",
    "INT4_GROUP_SIZES",
]

#: Group sizes the int4 weight-only kernels are written for (issue 4).
INT4_GROUP_SIZES = (32, 64, 128)

_ACT_OBSERVERS = ("histogram", "minmax", "moving_average")


class ConfigNotRegisteredError(QuantplugError, KeyError):
    """``quantize_`` got a config class no handler is registered for.

    A ``KeyError`` (the lookup failed) that prints its message plainly.
    """

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class BackendCapabilityError(ConstraintViolationError):
    """The chosen backend cannot run this config (mode not offered, kernel missing).

    Raised by ``quantize_`` / ``prepare_qat`` before any module is changed.
    """


# ----------------------------------------------------------------- base --


def _to_json(value: Any, where: str) -> Any:
    """A field value as JSON-safe data (dtypes become ``"torch.int8"``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_json(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, where) for k, v in value.items()}
    raise TypeError(f"{where}: {type(value).__name__} is not JSON-serialisable; "
                    f"config fields must be numbers, strings, bools, None, lists, dicts or torch dtypes")


def _from_json(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("torch."):
        dt = getattr(torch, value[len("torch."):], None)
        if isinstance(dt, torch.dtype):
            return dt
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _all_subclasses(cls: type) -> Iterable[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


@dataclass
class BaseConfig:
    """Base class of every eager-flow config (a dataclass).

    Subclasses are dataclasses whose fields are JSON-safe values. They get:

    * ``VERSION`` (class level): bump it when a field changes meaning;
      :meth:`from_dict` refuses data written by a newer version and calls
      :meth:`upgrade` for older data.
    * :meth:`validate`, run by ``__post_init__``: raise ``ValueError`` naming
      the field and the allowed values.
    * :meth:`to_dict` / :meth:`from_dict`: JSON-safe round trip.
    * :attr:`mode`: the backend mode it needs (one of ``quantplug.MODES``) or
      ``None`` if any backend will do; ``quantize_`` checks it before it
      changes anything.
    """

    VERSION: ClassVar[int] = 1
    #: the backend mode this config needs (``"dynamic"``, ``"weight_only"``...)
    mode: ClassVar[str | None] = None
    #: with ``filter_fn=None``, ``quantize_`` offers the handler only modules of these
    #: types (``nn.Linear``, as torchao does); ``None`` offers every module and the handler
    #: returns the ones it does not quantize unchanged (the built-in configs do this).
    module_types: ClassVar[tuple[type, ...] | None] = (torch.nn.Linear,)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check field values; raise ``ValueError`` naming the field. Override in subclasses."""

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``{"_type": class name, "_version": VERSION, <fields>}``."""
        name = type(self).__name__
        out: dict[str, Any] = {"_type": name, "_version": type(self).VERSION}
        for f in dataclasses.fields(self):
            out[f.name] = _to_json(getattr(self, f.name), f"{name}.{f.name}")
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def upgrade(cls, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Turn the fields of an older version into this version's (default: unchanged)."""
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BaseConfig":
        """Rebuild a config from :meth:`to_dict` output.

        Called on ``BaseConfig`` it picks the subclass named by ``"_type"``
        (it must have been imported, e.g. by the plugin that defines it).
        """
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        type_name = data.pop("_type", None)
        version = data.pop("_version", 1)
        target = cls
        if type_name is not None and type_name != cls.__name__:
            matches = [c for c in _all_subclasses(cls) if c.__name__ == type_name]
            if not matches:
                known = sorted({c.__name__ for c in _all_subclasses(BaseConfig)})
                raise ValueError(f"{cls.__name__}.from_dict: unknown config type {type_name!r} "
                                 f"(known: {', '.join(known)}); import the package that defines it first")
            target = matches[-1]
        if not isinstance(version, int) or version > target.VERSION:
            raise ValueError(f"{target.__name__}: data has version {version!r} but this quantplug knows "
                             f"version {target.VERSION}; upgrade quantplug to read it")
        if version < target.VERSION:
            data = target.upgrade(data, version)
        names = {f.name for f in dataclasses.fields(target) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{target.__name__}.from_dict: unknown field(s) {unknown}; "
                             f"valid fields: {sorted(names)}")
        return target(**{k: _from_json(v) for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "BaseConfig":
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{owner}.{name}={value!r} is not valid; choose one of {list(choices)}")


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} must be True or False, got {value!r}")


def _check_embeddings(owner: str, value: Any, bits: Any = 8) -> None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{owner}.embeddings must be True, False or None (auto), got {value!r}")
    if bits not in (8, 4) or isinstance(bits, bool):
        raise ValueError(f"{owner}.embedding_bits must be 8 (int8 rows) or 4 (int4 rows, two per byte), got {bits!r}")




def _check_fuse_list(owner: str, value: Any) -> list[list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(g, (list, tuple)) and len(g) >= 2 and all(isinstance(n, str) for n in g) for g in value):
        raise ValueError(f"{owner}.modules_to_fuse must be a list of module-name lists such as "
                         f"[['conv1', 'bn1', 'relu1'], ['fc', 'act']], got {value!r}")
    return [list(g) for g in value]


# --------------------------------------------------------------- configs --


@dataclass
class Int8DynamicActivationInt8WeightConfig(BaseConfig):
    """int8 weights, activations quantized at run time on every call (fp32 in, fp32 out).

    Swaps ``nn.Linear``, ``nn.LSTM``, ``nn.GRU``, ``nn.LSTMCell``,
    ``nn.GRUCell``, ``nn.RNNCell`` (and, with ``embeddings=True``,
    ``nn.Embedding`` / ``nn.EmbeddingBag`` with int8 row-wise weights).

    :param per_row: one activation scale per row (token) instead of one per
        tensor. Costs one min/max per row; on transformers it is what keeps
        outliers in one token from crushing every other token's resolution.
    :param weight_per_channel: one weight scale per output channel.
    :param embeddings: also store embedding tables as int8 (torch's
        ``quantize_dynamic`` leaves them float; this is off by default too).
        ``True`` fails before any change on a backend without an int8
        embedding kernel; ``None`` quantizes them only where the kernel exists.
    :param embedding_bits: 8 (default) or 4: row-wise int4 tables (codes
        0..15 two per byte, a scale and zero point per row; half the memory of
        int8, needs an even ``embedding_dim``). The recommender-model recipe:
        dynamic int8 linears with int4 embedding tables.
    """

    per_row: bool = True
    weight_per_channel: bool = True
    embeddings: bool | None = False
    embedding_bits: int = 8
    mode: ClassVar[str] = "dynamic"
    module_types: ClassVar[None] = None

    def validate(self) -> None:
        """Every field is a bool (``embeddings`` may also be ``None``)."""
        for name in ("per_row", "weight_per_channel"):
            _check_bool(type(self).__name__, name, getattr(self, name))
        _check_embeddings(type(self).__name__, self.embeddings, self.embedding_bits)


@dataclass
class Int8WeightOnlyConfig(BaseConfig):
    """int8 per-channel weights, float activations (memory-bound layers, embeddings).

    :param group_size: ``None`` for one scale per output channel, or a group
        size along the input dimension (smaller error, more scales).
    :param embeddings: ``True``: also store ``nn.Embedding`` /
        ``nn.EmbeddingBag`` tables as int8 rows, failing on a backend without
        that kernel; ``None`` (default): only where the backend has the kernel;
        ``False``: keep them float.
    :param embedding_bits: 8 (default) or 4 for row-wise int4 tables (see
        :class:`Int8DynamicActivationInt8WeightConfig`).
    """

    group_size: int | None = None
    embeddings: bool | None = None
    embedding_bits: int = 8
    mode: ClassVar[str] = "weight_only"
    module_types: ClassVar[None] = None

    def validate(self) -> None:
        """``group_size`` is ``None`` or a positive int; ``embeddings`` a bool or ``None``."""
        if self.group_size is not None and (not isinstance(self.group_size, int) or isinstance(self.group_size, bool)
                                            or self.group_size <= 0):
            raise ValueError(f"Int8WeightOnlyConfig.group_size must be None or a positive int, got {self.group_size!r}")
        _check_embeddings("Int8WeightOnlyConfig", self.embeddings, self.embedding_bits)


@dataclass
class Int4WeightOnlyConfig(BaseConfig):
    """int4 group-wise symmetric weights (two per byte), float activations; ``nn.Linear`` only.

    :param group_size: 32, 64 or 128 input features share one scale (the
        sizes the backends' int4 kernels are written for). Smaller groups:
        lower error, more scale storage.
    """

    group_size: int = 128
    mode: ClassVar[str] = "weight_only"
    module_types: ClassVar[None] = None

    def validate(self) -> None:
        """``group_size`` must be one of :data:`INT4_GROUP_SIZES`."""
        _check_choice("Int4WeightOnlyConfig", "group_size", self.group_size, INT4_GROUP_SIZES)


@dataclass
class Int8StaticActivationInt8WeightConfig(BaseConfig):
    """int8 activations with calibrated qparams and int8 weights (needs a calibration step).

    ``quantize_(model, Int8StaticActivationInt8WeightConfig())`` inserts
    observers (``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, with conv-bn(-relu)
    and linear-relu fused first); run representative data through the model,
    then ``quantplug.convert(model)`` swaps in the int8 modules. Each
    converted module takes and returns float tensors and runs the int8 kernel
    in between with the calibrated input and output qparams.

    :param act_observer: ``"histogram"`` (L2 range search, best for PTQ),
        ``"minmax"`` or ``"moving_average"``.
    :param weight_per_channel: one weight scale per output channel.
    :param fuse: detect and fuse conv-bn(-relu) and linear-relu (by tracing
        the model with ``torch.fx``, or from ``nn.Sequential`` order when it
        cannot be traced).
    :param modules_to_fuse: explicit groups of submodule names to fuse, as in
        ``torch.ao.quantization.fuse_modules`` (used in addition to detection).
    """

    act_observer: str = "histogram"
    weight_per_channel: bool = True
    fuse: bool = True
    modules_to_fuse: list[list[str]] | None = None
    mode: ClassVar[str] = "static"
    module_types: ClassVar[None] = None

    def validate(self) -> None:
        """Observer name, bools and the fuse list are checked."""
        owner = type(self).__name__
        _check_choice(owner, "act_observer", self.act_observer, _ACT_OBSERVERS)
        _check_bool(owner, "weight_per_channel", self.weight_per_channel)
        _check_bool(owner, "fuse", self.fuse)
        self.modules_to_fuse = _check_fuse_list(owner, self.modules_to_fuse)


@dataclass
class QATConfig(BaseConfig):
    """Quantization-aware training by module swap (``quantplug.prepare_qat``).

    Linear / Conv2d / Embedding become fake-quantized modules whose numbers
    are those of the chosen backend's kernels (its activation dtype and range,
    reduce_range, symmetric weight range, per-channel scales, int4 groups).
    ``quantplug.convert`` then swaps them for the backend's quantized modules.

    :param target: what ``convert`` produces: ``"static"`` (int8 activations
        with the trained qparams), ``"dynamic"`` (activations quantized per
        call, as ``Int8DynamicActivationInt8WeightConfig``) or
        ``"weight_only"`` (float activations).
    :param weight_dtype: ``"int8"`` or ``"int4"`` (group-wise, ``group_size``
        required; ``target="weight_only"`` only).
    :param group_size: int4 group size (32, 64 or 128).
    :param weight_per_channel: one weight scale per output channel.
    :param per_row: with ``target="dynamic"``: per-row activation scales.
    :param learn_ranges: LSQ-style learnable scales (``LearnableFakeQuantize``)
        instead of observed ranges.
    :param fuse: fuse conv-bn(-relu) (simulated BN folding during training)
        and linear-relu before swapping.
    :param modules_to_fuse: explicit groups of submodule names to fuse.
    :param embeddings: also fake-quantize ``nn.Embedding`` tables (int8
        rows): ``True`` requires the backend's int8 embedding kernel for
        ``convert`` (checked before any change), ``None`` (default) only where
        it exists, ``False`` never.
    """

    target: str = "static"
    weight_dtype: str = "int8"
    group_size: int | None = None
    weight_per_channel: bool = True
    per_row: bool = True
    learn_ranges: bool = False
    fuse: bool = True
    modules_to_fuse: list[list[str]] | None = None
    embeddings: bool | None = None
    mode: ClassVar[str] = "qat"
    module_types: ClassVar[None] = None

    def validate(self) -> None:
        """Cross-field rules: int4 needs weight_only and a valid group size."""
        owner = "QATConfig"
        _check_choice(owner, "target", self.target, ("static", "dynamic", "weight_only"))
        _check_choice(owner, "weight_dtype", self.weight_dtype, ("int8", "int4"))
        for name in ("weight_per_channel", "per_row", "learn_ranges", "fuse"):
            _check_bool(owner, name, getattr(self, name))
        _check_embeddings(owner, self.embeddings)
        if self.weight_dtype == "int4":
            if self.target != "weight_only":
                raise ValueError("QATConfig: weight_dtype='int4' needs target='weight_only' "
                                 "(the int4 kernels take float activations)")
            if self.group_size not in INT4_GROUP_SIZES:
                raise ValueError(f"QATConfig.group_size={self.group_size!r}: int4 needs a group size in "
                                 f"{list(INT4_GROUP_SIZES)}")
        elif self.group_size is not None:
            raise ValueError("QATConfig.group_size applies to weight_dtype='int4' only")
        self.modules_to_fuse = _check_fuse_list(owner, self.modules_to_fuse)

    @property
    def target_mode(self) -> str:
        """The backend mode ``convert`` will need (``"static"``, ``"dynamic"``, ``"weight_only"``)."""
        return self.target


# ------------------------------------------------------ snake-case aliases --


def int8_dynamic_activation_int8_weight(per_row: bool = True, weight_per_channel: bool = True,
                                        embeddings: bool | None = False) -> Int8DynamicActivationInt8WeightConfig:
    """Alias of :class:`Int8DynamicActivationInt8WeightConfig` (older torchao name)."""
    return Int8DynamicActivationInt8WeightConfig(per_row=per_row, weight_per_channel=weight_per_channel,
                                                 embeddings=embeddings)


def int8_weight_only(group_size: int | None = None, embeddings: bool | None = None) -> Int8WeightOnlyConfig:
    """Alias of :class:`Int8WeightOnlyConfig` (older torchao name)."""
    return Int8WeightOnlyConfig(group_size=group_size, embeddings=embeddings)


def int4_weight_only(group_size: int = 128) -> Int4WeightOnlyConfig:
    """Alias of :class:`Int4WeightOnlyConfig` (older torchao name)."""
    return Int4WeightOnlyConfig(group_size=group_size)


def int8_static_activation_int8_weight(act_observer: str = "histogram", weight_per_channel: bool = True,
                                       fuse: bool = True) -> Int8StaticActivationInt8WeightConfig:
    """Alias of :class:`Int8StaticActivationInt8WeightConfig`."""
    return Int8StaticActivationInt8WeightConfig(act_observer=act_observer, weight_per_channel=weight_per_channel,
                                                fuse=fuse)


#: aliases -> the class they build, so ``quantize_(m, int8_weight_only)`` (a
#: function passed where its result was meant) gets a precise error.
ALIASES: dict[Callable[..., BaseConfig], type] = {
    int8_dynamic_activation_int8_weight: Int8DynamicActivationInt8WeightConfig,
    int8_weight_only: Int8WeightOnlyConfig,
    int4_weight_only: Int4WeightOnlyConfig,
    int8_static_activation_int8_weight: Int8StaticActivationInt8WeightConfig,
}


# ------------------------------------------------------------ registration --


class _ConfigPlugin:
    """A one-config plugin object: feeds the registry through the ``quantplug_register_configs`` hook."""

    def __init__(self, config_class: type, handler: Callable[..., Any]) -> None:
        self.config_class, self.handler = config_class, handler

    @hookimpl
    def quantplug_register_configs(self, register):
        """Register the one config this object carries."""
        register(self.config_class, self.handler)


def register_quantize_module_handler(config_class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make ``handler(module, config, backend) -> module`` the transform of ``config_class``.

    The handler is offered every submodule that passes ``quantize_``'s
    ``filter_fn`` (outermost first); it returns a replacement, or ``module``
    itself to leave it alone (then its children are offered). It must not
    modify ``module`` in place: ``quantize_`` swaps all replacements in at the
    end, so an error leaves the model untouched.

    Registration goes through the same ``quantplug_register_configs`` hook the
    plugins implement (as an explicitly registered plugin), so
    :func:`quantplug.get_config_transform` sees it. Registering a class twice
    makes the next registry load raise :class:`quantplug.BackendConflictError`.
    """
    if not (isinstance(config_class, type) and issubclass(config_class, BaseConfig)):
        raise TypeError(f"register_quantize_module_handler expects a BaseConfig subclass, got {config_class!r}; "
                        f"define your config as @dataclass class MyConfig(quantplug.BaseConfig)")

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        from . import registry

        plugin = _ConfigPlugin(config_class, handler)
        # A unique plugin name: registering the same config class twice must reach the registry's
        # own check (BackendConflictError naming the class), not pluggy's duplicate-name error.
        registry.register_plugin(plugin, name=f"config:{config_class.__module__}.{config_class.__qualname__}:{id(plugin)}",
                                 distribution=getattr(handler, "__module__", None) or "user code")
        return handler

    return decorate


def describe_bad_config(config: Any) -> str:
    """The message for something passed to ``quantize_`` that is not a config object."""
    if config in ALIASES:
        cls = ALIASES[config]
        return (f"quantize_ got the function {config.__name__} instead of a config object: call it, "
                f"quantize_(model, {config.__name__}()), or pass {cls.__name__}(...)")
    if isinstance(config, type) and issubclass(config, BaseConfig):
        return (f"quantize_ got the class {config.__name__}; pass an instance: quantize_(model, {config.__name__}())")
    if callable(config):
        name = getattr(config, "__name__", type(config).__name__)
        return (f"quantize_ got the callable {name!r}; quantplug takes config objects, not module-transform "
                f"functions (the older torchao style). Use a built-in config (Int8DynamicActivationInt8WeightConfig(), "
                f"Int8WeightOnlyConfig(), Int4WeightOnlyConfig(group_size=128), ...) or wrap your function: "
                f"define @dataclass class MyConfig(quantplug.BaseConfig) and decorate the function with "
                f"@quantplug.register_quantize_module_handler(MyConfig)")
    return (f"quantize_ expects a quantplug config object (a BaseConfig subclass instance such as "
            f"Int8WeightOnlyConfig()), got {type(config).__name__}")
