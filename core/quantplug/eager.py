"""The eager flow: ``quantize_(model, config)``, ``prepare_qat``, ``convert``.

No export, no tracing requirement: modules are swapped in place, so it works
for any ``nn.Module`` (models with data-dependent control flow, HF
transformers, recurrent nets). The quantized model can still be exported
afterwards: traced by ``torch.export`` / ``torch.compile``, each module calls
its kernel through a registered ``quantplug::`` op (see
:mod:`quantplug.nn._traced`)::

    import quantplug
    info = quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig())
    print(info.backend, info.backend_reason)          # which kernels, and why

    # static: calibrate, then convert
    quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend="fbgemm")
    for x in calibration_batches: model(x)
    quantplug.convert(model)

    # QAT
    quantplug.prepare_qat(model, quantplug.QATConfig())
    train(model)
    quantplug.convert(model.eval())

Every check (config type, backend capability, per-module preconditions) runs
and every replacement module is built *before* the first one is swapped in,
so an error leaves the model exactly as it was.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from .configs import (
    INT4_GROUP_SIZES,
    BackendCapabilityError,
    BaseConfig,
    ConfigNotRegisteredError,
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8StaticActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    QATConfig,
    describe_bad_config,
)
from .errors import BackendNotFoundError, CalibrationError, QuantplugError
from .nn import dynamic as dyn
from .nn import fused as fz
from .nn import qat as qat_nn
from .nn import static as st
from .nn import weight_only as wo
from .nn._common import backend_numerics, missing_kernel_ops, require_kernel_ops

__all__ = [
    "quantize_",
    "prepare_qat",
    "convert",
    "select_backend",
    "QuantizeInfo",
    "BUILTIN_HANDLERS",
    "cpu_flags",
]

logger = logging.getLogger("quantplug.eager")

#: attribute of the root module where quantize_ / prepare_qat / convert record what they did
INFO_ATTR = "quantplug_info"


@dataclass
class QuantizeInfo:
    """What the eager flow did to a model (also stored as ``model.quantplug_info``).

    :param backend: canonical name of the backend whose kernels the modules run.
    :param backend_reason: why that backend (``"explicit"`` or the CPU-based choice).
    :param config: the config as a dict (``BaseConfig.to_dict``).
    :param swapped: qualified module name -> new module class name.
    :param fused: groups of module names fused into one quantized module.
    :param stage: ``"quantized"``, ``"calibrating"`` (static, before convert),
        ``"qat"`` (before convert) or ``"converted"``.
    """

    backend: str
    backend_reason: str
    config: dict[str, Any]
    swapped: dict[str, str] = field(default_factory=dict)
    fused: list[list[str]] = field(default_factory=list)
    stage: str = "quantized"

    def summary(self) -> str:
        """One line per swapped module."""
        lines = [f"backend {self.backend} ({self.backend_reason}); stage {self.stage}; "
                 f"{len(self.swapped)} module(s) swapped"]
        lines += [f"  {name}: {cls}" for name, cls in self.swapped.items()]
        return "\n".join(lines)


# ------------------------------------------------------------ backend choice --


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags of this machine (``/proc/cpuinfo`` on Linux; empty if unknown)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _preference() -> tuple[list[str], str]:
    machine = platform.machine().lower()
    flags = cpu_flags()
    if machine in ("x86_64", "amd64", "i686", "i386", "x86"):
        if "avx512_vnni" in flags or "avx_vnni" in flags:
            return ["x86_onednn", "fbgemm", "xnnpack", "qnnpack"], "x86 CPU with VNNI"
        return ["fbgemm", "x86_onednn", "xnnpack", "qnnpack"], "x86 CPU without VNNI"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return ["xnnpack", "qnnpack"], f"{machine} CPU"
    return [], f"{machine or 'unknown'} CPU"


def _capability_problem(config: Any, backend: Any) -> str | None:
    """Why ``backend`` cannot run ``config`` (``None`` if it can)."""
    modes = [getattr(config, "mode", None)]
    if isinstance(config, QATConfig):
        modes.append(config.target)
    for mode in modes:
        if mode is not None and mode not in backend.modes:
            return (f"backend {backend.name!r} ({backend.distribution}) does not offer the {mode!r} mode "
                    f"(its modes: {', '.join(backend.modes)})")
    for ops, what in _config_kernel_ops(config):
        missing = missing_kernel_ops(backend, ops)
        if missing:
            return (f"backend {backend.name!r} has no {what} kernel (its kernel library lacks {', '.join(missing)}); "
                    f"the layers would only run as slow reference code, so quantplug refuses")
    return None


def _config_kernel_ops(config: Any) -> list[tuple[tuple[str, ...], str]]:
    """The kernel methods every Linear under a built-in ``config`` needs, with a label (per-layer-type ops
    are checked by the handlers: conv, embeddings). User configs bring their own handlers: nothing assumed."""
    if type(config) not in BUILTIN_HANDLERS:
        return []
    qat = isinstance(config, QATConfig)
    target = config.target if qat else getattr(config, "mode", None)
    if isinstance(config, Int4WeightOnlyConfig) or (qat and config.weight_dtype == "int4"):
        return [(wo.INT4_OPS, "int4 weight-only linear")]
    if isinstance(config, Int8WeightOnlyConfig) and config.group_size is not None:
        return [(wo.PER_GROUP_INT8_OPS, f"group-wise (group_size={config.group_size}) int8 weight-only linear")]
    if target == "weight_only":
        return [(wo.INT8_WEIGHT_ONLY_OPS, "int8 weight-only linear")]
    if target == "dynamic":
        return [(dyn.DYNAMIC_OPS, "dynamic int8 linear")]
    if target == "static":
        return [(st.LINEAR_OPS, "int8 linear")]
    return []


_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


def _embedding_bits(config: Any) -> int:
    """Row width of the config's embedding tables (configs without ``embedding_bits``: 8)."""
    return getattr(config, "embedding_bits", 8)


def _quantize_embedding(module: nn.Module, config: Any, backend: Any) -> bool:
    """Whether ``module`` (an exact Embedding / EmbeddingBag) is quantized under ``config.embeddings``.

    ``True`` demands the backend's kernel (raising before any change), ``None``
    takes it where it exists, ``False`` never. int4 rows (``embedding_bits=4``)
    also need an even ``embedding_dim``: ``None`` keeps an odd one float.
    """
    if type(module) not in _EMBEDDING_TYPES or config.embeddings is False:
        return False
    bits = _embedding_bits(config)
    cls = wo.QuantizedEmbedding if type(module) is nn.Embedding else wo.QuantizedEmbeddingBag
    ops = cls.ops_by_bits[bits]
    if config.embeddings is None:
        return not missing_kernel_ops(backend, ops) and wo.int4_table_problem(module, bits) is None
    require_kernel_ops(backend, ops, f"int{bits} {type(module).__name__}({module.num_embeddings}, "
                       f"{module.embedding_dim})",
                       f"Pass {type(config).__name__}(embeddings=None) to keep embeddings float where the backend "
                       f"has no kernel, or embeddings=False" + (" (fbgemm ships int4 embedding kernels: "
                                                                 "pip install quantplug-fbgemm)" if bits == 4 else ""))
    problem = wo.int4_table_problem(module, bits)
    if problem:
        raise QuantplugError(f"{problem}. Nothing was changed.")
    return True


def _require_conv(module: nn.Module, backend: Any, config: Any) -> None:
    """Static / QAT-static conv needs the backend's int8 conv kernel; refuse before any change otherwise."""
    require_kernel_ops(backend, st.CONV_OPS, f"int8 {type(module).__name__} (static conv, {type(config).__name__})",
                       "Keep convolutions float with filter_fn=lambda m, name: not isinstance(m, "
                       "(nn.Conv1d, nn.Conv2d)), or use a backend with an int8 conv kernel")


def select_backend(config: Any = None, backend: Any = None) -> tuple[Any, str]:
    """The backend the eager flow uses for ``config``, and why.

    An explicit ``backend`` (name, alias or ``Backend``) always wins (and must
    be able to run ``config``). Otherwise: x86 with AVX-512 VNNI / AVX-VNNI ->
    ``x86_onednn``; other x86 -> ``fbgemm``; aarch64 -> ``xnnpack``; then the
    other installed backends; ``reference`` last. The first installed backend
    that can run ``config`` is chosen.

    :raises BackendCapabilityError: the explicit backend cannot run ``config``,
        or no installed backend can.
    """
    from .registry import get_backend, list_backends

    if backend is not None:
        b = backend if hasattr(backend, "modes") else get_backend(backend)
        problem = _capability_problem(config, b) if config is not None else None
        if problem:
            raise BackendCapabilityError(f"{type(config).__name__}: {problem}. Nothing was changed.")
        return b, "explicit"
    prefs, cpu = _preference()
    installed = {b.name: b for b in list_backends()}
    order: list[Any] = []
    for name in prefs:
        try:
            b = get_backend(name)
        except BackendNotFoundError:
            continue
        if b not in order:
            order.append(b)
    order += [b for n, b in sorted(installed.items()) if b not in order and n != "reference"]
    if "reference" in installed:
        order.append(installed["reference"])
    skipped = []
    for b in order:
        problem = _capability_problem(config, b) if config is not None else None
        if problem is None:
            first = prefs[0] if prefs else None
            if first and b.name != first and not any(s.startswith(first) for s in skipped):
                skipped.insert(0, f"{first} (not installed)")
            why = f"{cpu}: best installed backend" + (f"; skipped {', '.join(skipped)}" if skipped else "")
            return b, why
        skipped.append(f"{b.name} ({problem})")
    raise BackendCapabilityError(f"no installed backend can run {type(config).__name__}: " + "; ".join(skipped))


# ----------------------------------------------------------------- handlers --


def _is_plain_linear(m: nn.Module) -> bool:
    # NonDynamicallyQuantizableLinear is MultiheadAttention's out_proj, whose weight MHA reads directly.
    return isinstance(m, nn.Linear) and not isinstance(
        m, (qat_nn.QATLinear, nn.modules.linear.NonDynamicallyQuantizableLinear))


def _dynamic_handler(module: nn.Module, config: Int8DynamicActivationInt8WeightConfig, backend: Any) -> nn.Module:
    num = backend_numerics(backend, "dynamic", per_channel=config.weight_per_channel)
    t = type(module)
    if _is_plain_linear(module):
        return dyn.DynamicLinear.from_float(module, backend, num, per_row=config.per_row)
    if t is nn.LSTM:
        return dyn.DynamicLSTM.from_float(module, backend, num, per_row=config.per_row)
    if t is nn.GRU:
        return dyn.DynamicGRU.from_float(module, backend, num, per_row=config.per_row)
    if t is nn.LSTMCell:
        return dyn.DynamicLSTMCell.from_float(module, backend, num, per_row=config.per_row)
    if t is nn.GRUCell:
        return dyn.DynamicGRUCell.from_float(module, backend, num, per_row=config.per_row)
    if t is nn.RNNCell:
        return dyn.DynamicRNNCell.from_float(module, backend, num, per_row=config.per_row)
    if _quantize_embedding(module, config, backend):
        cls = wo.QuantizedEmbedding if t is nn.Embedding else wo.QuantizedEmbeddingBag
        return cls.from_float(module, backend, bits=_embedding_bits(config))
    return module


def _weight_only_handler(module: nn.Module, config: Int8WeightOnlyConfig, backend: Any) -> nn.Module:
    if _is_plain_linear(module):
        return wo.Int8WeightOnlyLinear.from_float(module, backend, backend_numerics(backend, "static"),
                                                  group_size=config.group_size)
    if _quantize_embedding(module, config, backend):
        cls = wo.QuantizedEmbedding if type(module) is nn.Embedding else wo.QuantizedEmbeddingBag
        return cls.from_float(module, backend, bits=_embedding_bits(config))
    return module


def _int4_handler(module: nn.Module, config: Int4WeightOnlyConfig, backend: Any) -> nn.Module:
    if _is_plain_linear(module):
        if module.in_features % config.group_size:
            raise QuantplugError(f"Int4WeightOnlyConfig(group_size={config.group_size}): a Linear with "
                                 f"in_features={module.in_features} cannot be split into groups of "
                                 f"{config.group_size}; exclude it with filter_fn or pick a group size in "
                                 f"{list(INT4_GROUP_SIZES)} that divides it")
        return wo.Int4WeightOnlyLinear.from_float(module, backend, None, group_size=config.group_size)
    return module


class _FusingHandler:
    """A handler with a model-level fusion step (static PTQ and QAT)."""

    fold_bn = True

    def plan_fusion(self, model: nn.Module, config: Any, accept: Callable[[str, nn.Module], bool]
                    ) -> list[tuple[str, nn.Module, list[str]]]:
        """``[(head name, fused container, absorbed module names)]``; nothing in ``model`` changes."""
        if not config.fuse and not config.modules_to_fuse:
            return []
        groups = fz.find_fusion_groups(model, config.modules_to_fuse, detect=config.fuse)
        plan = []
        for g in groups:
            reps = fz.fusion_replacements(model, [g], fold_bn=self.fold_bn, accept=accept)
            if g.head in reps:
                plan.append((g.head, reps[g.head], [n for n in reps if n != g.head]))
        return plan


class _StaticHandler(_FusingHandler):
    fold_bn = True

    def __call__(self, module: nn.Module, config: Int8StaticActivationInt8WeightConfig, backend: Any) -> nn.Module:
        num = backend_numerics(backend, "static", per_channel=config.weight_per_channel)
        args = (backend.name, num, config.act_observer, config.weight_per_channel)
        if isinstance(module, fz.LinearReLU):
            return st.ObservedLinear(module[0], True, *args)
        if isinstance(module, (fz.ConvReLU1d, fz.ConvReLU2d)):
            _require_conv(module[0], backend, config)
            return st.ObservedConv(module[0], True, *args)
        if _is_plain_linear(module):
            return st.ObservedLinear(module, False, *args)
        if type(module) in (nn.Conv1d, nn.Conv2d):
            _require_conv(module, backend, config)
            return st.ObservedConv(module, False, *args)
        return module


def _qat_numerics(backend: Any, config: QATConfig) -> qat_nn.QATNumerics:
    static = backend_numerics(backend, "qat", per_channel=config.weight_per_channel)
    dynamic = backend_numerics(backend, "dynamic", per_channel=config.weight_per_channel) \
        if config.target == "dynamic" else None
    row_eq = config.target == "dynamic" and config.per_row and not dyn.kernels_support_per_row(backend.kernels)
    rows = dyn.per_row_act_range(backend.kernels)
    if dynamic is not None and config.per_row and not row_eq and rows is not None:
        # the kernel quantizes per-row activations on its own range (fbgemm: all 8 bits): train on that grid
        dynamic = replace(dynamic, act_range=rows)
    return qat_nn.QATNumerics(static, dynamic, config, row_equalize=row_eq)


class _QATHandler(_FusingHandler):
    fold_bn = False

    def plan_fusion(self, model, config, accept):
        """Fusion only matters for the static target (relu and bn folded into the int8 kernel)."""
        if config.target != "static":
            return []
        return super().plan_fusion(model, config, accept)

    def __call__(self, module: nn.Module, config: QATConfig, backend: Any) -> nn.Module:
        qn = _qat_numerics(backend, config)
        kw = dict(target=config.target, weight_dtype=config.weight_dtype, group_size=config.group_size)
        if isinstance(module, fz.LinearReLU):
            return qat_nn.QATLinear.from_float(module[0], qn, relu=True, **kw)
        if _is_plain_linear(module):
            if config.weight_dtype == "int4" and module.in_features % config.group_size:
                raise QuantplugError(f"QATConfig(weight_dtype='int4', group_size={config.group_size}): Linear with "
                                     f"in_features={module.in_features} is not divisible into groups; exclude it "
                                     f"with filter_fn")
            return qat_nn.QATLinear.from_float(module, qn, **kw)
        if config.target == "static":
            if isinstance(module, (fz.ConvBn2d, fz.ConvBnReLU2d, fz.ConvReLU2d)) or type(module) is nn.Conv2d:
                _require_conv(module if type(module) is nn.Conv2d else module[0], backend, config)
            if isinstance(module, (fz.ConvBn2d, fz.ConvBnReLU2d)):
                return qat_nn.QATConv2d(module[0], qn, bn=module[1], relu=isinstance(module, fz.ConvBnReLU2d))
            if isinstance(module, fz.ConvReLU2d):
                return qat_nn.QATConv2d(module[0], qn, relu=True)
            if type(module) is nn.Conv2d:
                return qat_nn.QATConv2d(module, qn)
        if type(module) is nn.Embedding and module.max_norm is None and _quantize_embedding(module, config, backend):
            return qat_nn.QATEmbedding(module, backend.name)
        return module


#: config class -> module transform, registered by the core's plugin through
#: the ``quantplug_register_configs`` hook (see ``builtin_plugin.py``).
BUILTIN_HANDLERS: dict[type, Callable[..., nn.Module]] = {
    Int8DynamicActivationInt8WeightConfig: _dynamic_handler,
    Int8WeightOnlyConfig: _weight_only_handler,
    Int4WeightOnlyConfig: _int4_handler,
    Int8StaticActivationInt8WeightConfig: _StaticHandler(),
    QATConfig: _QATHandler(),
}

_STAGE = {Int8StaticActivationInt8WeightConfig: "calibrating", QATConfig: "qat"}


# ---------------------------------------------------------------- quantize_ --


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _handler_for(config: Any) -> Callable[..., nn.Module]:
    from .registry import get_config_transform

    if not isinstance(config, BaseConfig):
        raise TypeError(describe_bad_config(config))
    try:
        return get_config_transform(type(config))
    except KeyError:
        from .registry import _load

        known = ", ".join(sorted(c.__name__ for c in _load().configs)) or "none"
        raise ConfigNotRegisteredError(
            f"no module handler is registered for {type(config).__name__} (registered: {known}). Register one "
            f"with @quantplug.register_quantize_module_handler({type(config).__name__}) on a function "
            f"(module, config, backend) -> module, or from a plugin's quantplug_register_configs hook") from None


def _default_filter(config: Any) -> Callable[[nn.Module, str], bool] | None:
    types = getattr(type(config), "module_types", None)
    if types is None:
        return None
    return lambda m, fqn: isinstance(m, types)


def quantize_(model: nn.Module, config: BaseConfig, *, backend: Any = None,
              filter_fn: Callable[[nn.Module, str], bool] | None = None) -> QuantizeInfo:
    """Quantize ``model`` in place by swapping its submodules for ``config``'s quantized modules.

    :param model: any ``nn.Module``; the root itself is not replaced (wrap a
        bare layer in ``nn.Sequential``).
    :param config: a :class:`~quantplug.configs.BaseConfig` instance, e.g.
        ``Int8DynamicActivationInt8WeightConfig()``.
    :param backend: backend name/alias or ``Backend``; ``None`` picks the best
        installed backend for this CPU (see :func:`select_backend`), logged and
        recorded in the result.
    :param filter_fn: ``filter_fn(module, qualified_name) -> bool``; only
        modules for which it is true are offered to the config's handler
        (their children are still visited otherwise). ``None``: every module
        for the built-in configs, ``config.module_types`` for others.
    :returns: a :class:`QuantizeInfo`, also stored as ``model.quantplug_info``.
    :raises TypeError: ``config`` is not a config object (a function or class
        passed by mistake gets a message saying what to pass).
    :raises ConfigNotRegisteredError: no handler is registered for the config class.
    :raises BackendCapabilityError: the backend cannot run the config.
    """
    handler = _handler_for(config)
    b, reason = select_backend(config, backend)
    logger.info("quantplug.quantize_: %s on backend %r (%s)", type(config).__name__, b.name, reason)
    if filter_fn is None:
        filter_fn = _default_filter(config)
    accept = (lambda fqn, m: True) if filter_fn is None else (lambda fqn, m: bool(filter_fn(m, fqn)))

    overrides: dict[str, tuple[nn.Module, list[str]]] = {}
    plan_fusion = getattr(handler, "plan_fusion", None)
    if plan_fusion is not None:
        for head, fused, absorbed in plan_fusion(model, config, accept):
            overrides[head] = (fused, absorbed)

    if accept("", model):
        new_root = handler(model, config, b)
        if new_root is not model:
            raise QuantplugError(f"quantize_ works in place and cannot replace the root module itself "
                                 f"({type(model).__name__}); wrap it, e.g. nn.Sequential(model)")

    replacements: dict[str, nn.Module] = {}
    fused_groups: list[list[str]] = []

    def visit(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            fqn = f"{prefix}{name}"
            if fqn in replacements:
                continue  # an absorbed bn/relu already planned as Identity
            candidate, absorbed = overrides.get(fqn, (child, []))
            new = handler(candidate, config, b) if accept(fqn, child) else candidate
            if new is not candidate:
                replacements[fqn] = new
                if absorbed:
                    fused_groups.append([fqn, *absorbed])
                    for a in absorbed:
                        replacements[a] = nn.Identity()
                continue
            visit(child, f"{fqn}.")

    visit(model, "")
    # Everything is built: now swap (nothing above touched the model).
    for fqn in sorted(replacements, key=lambda n: n.count(".")):
        _set_submodule(model, fqn, replacements[fqn])
    info = QuantizeInfo(backend=b.name, backend_reason=reason, config=config.to_dict(),
                        swapped={k: type(v).__name__ for k, v in replacements.items()}, fused=fused_groups,
                        stage=_STAGE.get(type(config), "quantized"))
    setattr(model, INFO_ATTR, info)
    if not replacements:
        logger.warning("quantplug.quantize_: %s matched no module in %s", type(config).__name__, type(model).__name__)
    return info


def prepare_qat(model: nn.Module, config: QATConfig | None = None, *, backend: Any = None,
                filter_fn: Callable[[nn.Module, str], bool] | None = None) -> QuantizeInfo:
    """Swap Linear / Conv2d (+bn, +relu) / Embedding for fake-quantized modules, in place.

    The fake quantization follows the chosen backend's kernels; train as
    usual (any optimizer, DDP, FSDP), then call :func:`convert` in eval mode.
    Parameters are the original ``nn.Parameter`` objects, so an optimizer
    created before ``prepare_qat`` keeps working (except for LSQ scales, which
    are new parameters: create the optimizer after ``prepare_qat`` with
    ``learn_ranges=True``).

    When ``torch.distributed`` is initialised, every observer is switched to
    synchronise its statistics across ranks (see :mod:`quantplug.distributed`),
    so data-parallel ranks keep identical qparams.
    """
    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"prepare_qat expects a QATConfig, got {type(config).__name__}; "
                        f"use quantize_ for {type(config).__name__}")
    info = quantize_(model, config, backend=backend, filter_fn=filter_fn)
    from .distributed import is_distributed, set_observer_sync

    if is_distributed():
        set_observer_sync(model, True)
    return info


# ------------------------------------------------------------------ convert --


def _observers_of(mod: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for attr in ("input_observer", "output_observer", "input_fake_quant", "output_fake_quant", "weight_fake_quant"):
        o = getattr(mod, attr, None)
        if o is not None:
            out.append((attr, o))
    return out


def _uncalibrated(name: str, mod: nn.Module) -> list[str]:
    missing = []
    for attr, o in _observers_of(mod):
        if attr == "weight_fake_quant":
            continue  # weights are constants: their qparams come from the weight itself
        obs = getattr(o, "activation_post_process", o)
        if isinstance(o, qat_nn.DynamicFakeQuantize):
            continue
        if hasattr(o, "batches_observed") and int(o.batches_observed) > 0:
            continue  # LSQ initialised from data
        if hasattr(obs, "has_observed") and not obs.has_observed:
            missing.append(f"{name}.{attr}")
    return missing


def _convert_one(name: str, mod: nn.Module, backend_cache: dict) -> nn.Module | None:
    from .registry import get_backend

    def backend_of(bname: str):
        if bname not in backend_cache:
            backend_cache[bname] = get_backend(bname)
        return backend_cache[bname]

    if isinstance(mod, st.ObservedLinear):
        b = backend_of(mod.backend_name)
        return st.QuantizedLinear.from_observed(mod, b, backend_numerics(b, "static", per_channel=mod.weight_per_channel))
    if isinstance(mod, st.ObservedConv):
        b = backend_of(mod.backend_name)
        num = backend_numerics(b, "static", per_channel=mod.weight_per_channel)
        cls = st.QuantizedConv1d if isinstance(mod.float_module, nn.Conv1d) else st.QuantizedConv2d
        return cls.from_observed(mod, b, num)
    if isinstance(mod, qat_nn.QATLinear):
        b = backend_of(mod.backend_name)
        if mod.weight_dtype == "int4":
            return wo.Int4WeightOnlyLinear.from_float(mod, b, None, group_size=mod.group_size,
                                                      scales=mod.weight_fake_quant.calculate_qparams(mod.weight))
        if mod.target == "static":
            num = backend_numerics(b, "qat")
            w_q, s, z = _weight_from_fq(mod.weight, num, mod.weight_fake_quant)
            return st.QuantizedLinear(mod.in_features, mod.out_features, w_q, s, z, mod.bias,
                                      _fq_qparams(mod.input_fake_quant), _fq_qparams(mod.output_fake_quant),
                                      relu=mod.relu, backend=b, numerics=num)
        if mod.target == "dynamic":
            return dyn.DynamicLinear.from_float(mod, b, backend_numerics(b, "dynamic"), per_row=mod.per_row,
                                                observer=mod.weight_fake_quant)
        return wo.Int8WeightOnlyLinear.from_float(mod, b, backend_numerics(b, "qat"), observer=mod.weight_fake_quant)
    if isinstance(mod, qat_nn.QATConv2d):
        b = backend_of(mod.backend_name)
        num = backend_numerics(b, "qat")
        w, bias = mod.folded_weight_bias()
        w_q, s, z = _weight_from_fq(w, num, mod.weight_fake_quant)
        conv = nn.Conv2d(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                         dilation=mod.dilation, groups=mod.groups, bias=bias is not None, padding_mode=mod.padding_mode,
                         device="meta")
        conv.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        return st.QuantizedConv2d(conv, w_q, s, z, _fq_qparams(mod.input_fake_quant), _fq_qparams(mod.output_fake_quant),
                                  relu=mod.relu, backend=b, numerics=num)
    if isinstance(mod, qat_nn.QATEmbedding):
        return wo.QuantizedEmbedding.from_float(mod, backend_of(mod.backend_name))
    return None


def _weight_from_fq(weight: torch.Tensor, numerics: Any, fq: nn.Module):
    from .nn._common import quantize_weight

    return quantize_weight(weight, numerics, observer=fq)


def _fq_qparams(fq: nn.Module) -> tuple[float, int]:
    scale, zp = fq.calculate_qparams()
    return float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])


def convert(model: nn.Module, *, check_calibration: bool = True) -> nn.Module:
    """Finish the static or QAT flow in place: observed / fake-quantized modules become int8 modules.

    :param model: a model after ``quantize_(model, Int8StaticActivationInt8WeightConfig())``
        and calibration, or after ``prepare_qat`` and training. Put it in eval
        mode first for QAT (BN running statistics are folded).
    :param check_calibration: raise :class:`CalibrationError` naming every
        activation observer that saw no data.
    :returns: ``model`` (modified in place).
    """
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (st.ObservedLinear, st.ObservedConv, qat_nn.QATLinear, qat_nn.QATConv2d,
                                    qat_nn.QATEmbedding))]
    if not candidates:
        raise QuantplugError("convert found no module to convert: call quantize_ with "
                             "Int8StaticActivationInt8WeightConfig (then calibrate) or prepare_qat (then train) first")
    if check_calibration:
        missing = [m for n, mod in candidates for m in _uncalibrated(n, mod)]
        if missing:
            raise CalibrationError(f"these observers saw no data, so their qparams would be meaningless: "
                                   f"{', '.join(missing)}. Run calibration (or training) batches through the model "
                                   f"before convert, or make sure those layers are reached")
    from .distributed import is_distributed, sync_observers

    if is_distributed():
        sync_observers(model)  # every rank converts with the qparams of all ranks' data
    cache: dict = {}
    replacements = {}
    skip_prefixes: list[str] = []
    for name, mod in candidates:
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        new = _convert_one(name, mod, cache)
        if new is not None:
            replacements[name] = new
            skip_prefixes.append(name + ".")
    for name, new in replacements.items():
        if name == "":
            raise QuantplugError("convert cannot replace the root module; wrap it in nn.Sequential")
        _set_submodule(model, name, new)
    info = getattr(model, INFO_ATTR, None)
    if isinstance(info, QuantizeInfo):
        info.stage = "converted"
        info.swapped.update({k: type(v).__name__ for k, v in replacements.items()})
    model.eval()
    return model
