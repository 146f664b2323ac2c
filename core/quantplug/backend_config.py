"""``BackendConfig``: the declarative table of what a backend's kernels run.

A backend lists one :class:`BackendPatternConfig` per op pattern it supports
(``("linear",)``, ``("conv2d", "batch_norm", "relu")``...). Each says how the
pattern's output is observed and which dtype combinations its kernels accept,
with constraints (range bounds, a minimum scale, exact fixed qparams,
symmetric or per-channel weights only).

:func:`validate_annotations` checks a quantizer's annotations against the
table before any observer is inserted, so a spec the kernels cannot run is
rejected with the node and the violated constraint named, instead of turning
into a silent fp32 fallback or wrong numbers later.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.fx import GraphModule, Node

from .errors import ConstraintViolationError
from .ops import op_name
from .specs import (
    ANNOTATION_KEY,
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)

__all__ = [
    "ObservationType",
    "DTypeWithConstraints",
    "DTypeConfig",
    "BackendPatternConfig",
    "BackendConfig",
    "validate_annotations",
]


class ObservationType(enum.Enum):
    """How a pattern's output is observed relative to its input."""

    #: output gets its own observer (linear, conv, add)
    OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT = "different"
    #: output reuses the input's qparams (maxpool, reshape, cat)
    OUTPUT_SHARE_OBSERVER_WITH_INPUT = "share"
    #: output has fixed qparams (sigmoid, tanh)
    OUTPUT_FIXED_QPARAMS = "fixed"


@dataclass(frozen=True)
class DTypeWithConstraints:
    """A dtype plus what the kernels require of its qparams.

    :param quant_min_lower_bound: the spec's quant_min must be >= this.
    :param quant_max_upper_bound: the spec's quant_max must be <= this.
    :param scale_min_lower_bound: the observer's smallest scale (its ``eps``
        or ``scale_min``) must be >= this; qnnpack needs 2**-12.
    :param scale_exact_match, zero_point_exact_match: fixed qparams.
    :param symmetric_only: zero point must be 0 (symmetric qschemes).
    :param per_channel: ``True`` requires, ``False`` forbids, ``None`` allows
        per-channel quantization.
    :param group_sizes: allowed group sizes for per-group quantization.
    """

    dtype: Any
    quant_min_lower_bound: int | None = None
    quant_max_upper_bound: int | None = None
    scale_min_lower_bound: float | None = None
    scale_exact_match: float | None = None
    zero_point_exact_match: int | None = None
    symmetric_only: bool = False
    per_channel: bool | None = None
    group_sizes: tuple[int, ...] | None = None


def _as_constraints(d: Any) -> DTypeWithConstraints | None:
    if d is None or isinstance(d, DTypeWithConstraints):
        return d
    return DTypeWithConstraints(dtype=d)


@dataclass(frozen=True)
class DTypeConfig:
    """One dtype combination a pattern's kernel accepts.

    Plain dtypes are accepted where no constraint is needed. ``None`` for an
    input means "stays float" (e.g. weight-only modes keep activations float).
    """

    input_dtype: Any = None
    output_dtype: Any = None
    weight_dtype: Any = None
    bias_dtype: Any = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        for name in ("input_dtype", "output_dtype", "weight_dtype", "bias_dtype"):
            object.__setattr__(self, name, _as_constraints(getattr(self, name)))


@dataclass
class BackendPatternConfig:
    """A supported op pattern and its accepted dtype configs.

    :param pattern: op short names in data-flow order, e.g. ``("conv2d", "relu")``.
    :param observation_type: see :class:`ObservationType`.
    :param dtype_configs: accepted combinations; a pattern's annotation must
        satisfy at least one.
    :param kernel: name of the backend kernel that runs the pattern after
        lowering (shown by ``quantplug.explain``); ``None`` if it stays in
        reference form.
    """

    pattern: tuple[str, ...]
    observation_type: ObservationType = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
    dtype_configs: list[DTypeConfig] = field(default_factory=list)
    kernel: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pattern, str):
            self.pattern = (self.pattern,)
        self.pattern = tuple(self.pattern)

    def add_dtype_config(self, config: DTypeConfig) -> "BackendPatternConfig":
        """Append an accepted dtype combination (chainable)."""
        self.dtype_configs.append(config)
        return self

    @property
    def root(self) -> str:
        """The op whose node carries the input annotations (the first one)."""
        return self.pattern[0]


class BackendConfig:
    """The table of a backend's supported patterns.

    Example::

        cfg = BackendConfig("fbgemm")
        cfg.set_backend_pattern_config(BackendPatternConfig(
            ("linear", "relu"), dtype_configs=[fbgemm_int8], kernel="fbgemm.linear_relu"))
    """

    def __init__(self, name: str, configs: Iterable[BackendPatternConfig] = ()) -> None:
        self.name = name
        self._configs: dict[tuple[str, ...], BackendPatternConfig] = {}
        for c in configs:
            self.set_backend_pattern_config(c)

    def set_backend_pattern_config(self, config: BackendPatternConfig) -> "BackendConfig":
        """Add or replace the config for ``config.pattern`` (chainable)."""
        self._configs[config.pattern] = config
        return self

    def set_backend_pattern_configs(self, configs: Iterable[BackendPatternConfig]) -> "BackendConfig":
        """Add several pattern configs (chainable)."""
        for c in configs:
            self.set_backend_pattern_config(c)
        return self

    @property
    def configs(self) -> list[BackendPatternConfig]:
        """Every pattern config, in insertion order."""
        return list(self._configs.values())

    def get(self, pattern: tuple[str, ...] | str) -> BackendPatternConfig | None:
        """The config for exactly ``pattern``, or ``None``."""
        if isinstance(pattern, str):
            pattern = (pattern,)
        return self._configs.get(tuple(pattern))

    def configs_for_root(self, op: str) -> list[BackendPatternConfig]:
        """Every pattern that starts with ``op``."""
        return [c for c in self._configs.values() if c.root == op]

    def supported_ops(self) -> set[str]:
        """Every op short name that appears in some pattern."""
        return {op for p in self._configs for op in p}

    def __repr__(self) -> str:
        return f"BackendConfig({self.name!r}, patterns={[p for p in self._configs]})"


# --------------------------------------------------------------- checking --


def _observer_kwargs(spec: QuantizationSpec) -> dict[str, Any]:
    ctr = spec.observer_or_fake_quant_ctr
    kwargs: dict[str, Any] = {}
    while isinstance(ctr, functools.partial):
        kwargs = {**ctr.keywords, **kwargs}
        ctr = ctr.func
    # FakeQuantize.with_args(observer=Obs.with_args(...)) nests the observer's own kwargs.
    inner = kwargs.get("observer")
    if isinstance(inner, functools.partial):
        kwargs = {**inner.keywords, **kwargs}
    return kwargs


def _spec_problem(spec: QuantizationSpecBase | None, want: DTypeWithConstraints | None) -> str | None:
    """Why ``spec`` does not satisfy ``want`` (``None`` if it does)."""
    if want is None:
        return None if spec is None else "the kernel takes this tensor in float, but it is quantized"
    if spec is None:
        return f"the kernel needs {want.dtype} here, but the tensor is left in float"
    if isinstance(spec, SharedQuantizationSpec):
        return None  # checked where the shared qparams are defined
    dtype = getattr(spec, "dtype", None)
    if dtype != want.dtype:
        return f"dtype is {dtype}, the kernel needs {want.dtype}"
    if isinstance(spec, (QuantizationSpec, FixedQParamsQuantizationSpec, DerivedQuantizationSpec)):
        qmin, qmax = spec.range if hasattr(spec, "range") else (spec.quant_min, spec.quant_max)
        if want.quant_min_lower_bound is not None and qmin is not None and qmin < want.quant_min_lower_bound:
            return f"quant_min={qmin} is below the kernel's lower bound {want.quant_min_lower_bound}"
        if want.quant_max_upper_bound is not None and qmax is not None and qmax > want.quant_max_upper_bound:
            return f"quant_max={qmax} is above the kernel's upper bound {want.quant_max_upper_bound}"
    if isinstance(spec, FixedQParamsQuantizationSpec):
        if want.scale_exact_match is not None and spec.scale != want.scale_exact_match:
            return f"fixed scale {spec.scale} != required {want.scale_exact_match}"
        if want.zero_point_exact_match is not None and spec.zero_point != want.zero_point_exact_match:
            return f"fixed zero_point {spec.zero_point} != required {want.zero_point_exact_match}"
        if want.scale_min_lower_bound is not None and spec.scale < want.scale_min_lower_bound:
            return f"fixed scale {spec.scale} is below the kernel's minimum {want.scale_min_lower_bound}"
        return None
    if want.scale_exact_match is not None:
        return f"the kernel needs fixed qparams (scale {want.scale_exact_match}), got an observed spec"
    if isinstance(spec, QuantizationSpec):
        if want.symmetric_only and not spec.is_symmetric:
            return f"qscheme {spec.qscheme} is not symmetric; the kernel needs zero_point 0"
        if want.per_channel is True and not spec.is_per_channel and spec.group_size is None:
            return "the kernel needs per-channel quantization"
        if want.per_channel is False and spec.is_per_channel:
            return "the kernel supports per-tensor quantization only"
        if spec.group_size is not None and want.group_sizes is not None and spec.group_size not in want.group_sizes:
            return f"group_size={spec.group_size} not in supported {list(want.group_sizes)}"
        if want.scale_min_lower_bound is not None and not spec.is_dynamic:
            kw = _observer_kwargs(spec)
            smallest = kw.get("scale_min", kw.get("eps"))
            if smallest is None or smallest < want.scale_min_lower_bound:
                return (
                    f"the observer may produce scales below the kernel's minimum "
                    f"{want.scale_min_lower_bound} (its eps/scale_min is {smallest}); "
                    f"build it with .with_args(eps={want.scale_min_lower_bound})"
                )
    return None


def _dtype_config_problem(node: Node, ann, dc: DTypeConfig, weight_nodes, bias_nodes) -> str | None:
    for inp, spec in ann.input_qspec_map.items():
        if inp in weight_nodes:
            want, label = dc.weight_dtype, "weight"
        elif inp in bias_nodes:
            want, label = dc.bias_dtype, "bias"
        else:
            want, label = dc.input_dtype, "input activation"
        if isinstance(spec, QuantizationSpec) and spec.is_dynamic != dc.is_dynamic and label == "input activation":
            return f"{label} {inp.name}: dynamic={spec.is_dynamic}, the kernel needs dynamic={dc.is_dynamic}"
        problem = _spec_problem(spec, want) if (spec is not None or label != "bias") else None
        if problem:
            return f"{label} {inp.name}: {problem}"
    return None


def _weight_and_bias_inputs(node: Node) -> tuple[set[Node], set[Node]]:
    name = op_name(node)
    if name in ("linear", "conv1d", "conv2d", "conv_transpose2d", "embedding"):
        args = list(node.args)
        weight = {args[1]} if len(args) > 1 and isinstance(args[1], Node) else set()
        if name == "embedding":
            weight = {args[0]} if isinstance(args[0], Node) else set()
        bias = {args[2]} if len(args) > 2 and isinstance(args[2], Node) else set()
        return weight, bias
    return set(), set()


def validate_annotations(model: GraphModule, backend_config: BackendConfig) -> None:
    """Check every annotated node against ``backend_config``.

    Raises :class:`ConstraintViolationError` naming the node, its op and the
    violated constraint, and listing what the backend accepts.
    """
    for node in model.graph.nodes:
        ann = node.meta.get(ANNOTATION_KEY)
        if ann is None or not ann.input_qspec_map:
            continue  # output-only annotations are checked on their producer pattern
        name = op_name(node)
        if name is None:
            continue  # ops outside the table are quantizer-specific; nothing to check against
        pattern = ann.pattern or (name,)
        pattern_config = backend_config.get(pattern)
        if pattern_config is None:
            candidates = backend_config.configs_for_root(name)
            if not candidates:
                raise ConstraintViolationError(
                    f"node {node.name!r} ({name}) is annotated for quantization, but backend "
                    f"{backend_config.name!r} has no kernel pattern for {'-'.join(pattern)}. "
                    f"Supported patterns: {['-'.join(p.pattern) for p in backend_config.configs]}"
                )
            pattern_config = candidates[0]
        weights, biases = _weight_and_bias_inputs(node)
        problems = [_dtype_config_problem(node, ann, dc, weights, biases) for dc in pattern_config.dtype_configs]
        if pattern_config.dtype_configs and all(problems):
            raise ConstraintViolationError(
                f"node {node.name!r} ({'-'.join(pattern)}) violates backend {backend_config.name!r} "
                f"constraints: {problems[0]}"
                + (f" (and {len(problems) - 1} other accepted dtype configs fail too)" if len(problems) > 1 else "")
            )
        out = ann.output_qspec
        tail = _pattern_output_node(node, pattern)
        if tail is not None and tail is not node:
            tail_ann = tail.meta.get(ANNOTATION_KEY)
            out = tail_ann.output_qspec if tail_ann is not None else out
        out_problems = [_spec_problem(out, dc.output_dtype) for dc in pattern_config.dtype_configs]
        if pattern_config.dtype_configs and all(out_problems) and out is not None:
            raise ConstraintViolationError(
                f"output of node {node.name!r} ({'-'.join(pattern)}) violates backend "
                f"{backend_config.name!r} constraints: {out_problems[0]}"
            )


def _pattern_output_node(node: Node, pattern: tuple[str, ...]) -> Node | None:
    cur = node
    for _ in pattern[1:]:
        users = list(cur.users)
        if len(users) != 1:
            return cur
        cur = users[0]
    return cur
