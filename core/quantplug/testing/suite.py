"""The quantplug backend conformance suite.

Adopt it from a plugin's test folder (``tests/test_conformance.py``)::

    import pytest
    from quantplug.testing.suite import *  # noqa: F401,F403

    @pytest.fixture(scope="session")
    def backend_name():
        return "mybackend"

Every test class below is then collected in that module. The ``backend_name``
fixture here only reads ``--quantplug-backend`` (with
``-p quantplug.testing.pytest_plugin``) or the ``QUANTPLUG_TEST_BACKEND``
environment variable; override it as above to pin the backend in code.

What is checked, each part tagged by the capability it needs (see
:mod:`quantplug.testing.capabilities`):

* :class:`TestDiscovery`: the backend is registered under its name and
  aliases, comes from its distribution's ``quantplug.backends`` entry point,
  reports the installed version, loaded without errors, and tells its ISA.
* :class:`TestQuantizer`: annotations for every declared mode validate against
  the backend's own ``BackendConfig``; specs violating it are rejected with the
  node named; modes it does not declare are refused.
* :class:`TestKernels`: every kernel method the library has, against the
  pure-PyTorch contract (:class:`quantplug.reference_kernels.ReferenceKernels`)
  on every ISA path usable here: static linear and conv2d **bit-exact**,
  dynamic linear within a stated error bound, add within 1 LSB; bad inputs
  raise :class:`quantplug.KernelInputError`.
* :class:`TestGraphFlow`: prepare, calibrate, convert end to end with SQNR
  thresholds; lowered model vs reference representation within one step.
* :class:`TestEagerFlow`: ``quantize_`` / ``prepare_qat`` / ``convert`` for
  every mode, including eager-only ones; undeclared modes refused; eager
  models round-trip bit-identically through ``quantplug.save``/``load`` and
  through ``load_state_dict`` into a model quantized from other weights.
* :class:`TestSerialization`: ``quantplug.save``/``load``, ``state_dict``
  into a freshly converted model and ``torch.export.save``/``load`` give
  bit-identical outputs; damaged files are rejected.
* :class:`TestErrors`: uncalibrated convert and unknown options fail clearly.

Three facts are declared by the backend rather than inferred
(:data:`quantplug.testing.capabilities.DECLARATIONS`):
``supports_dynamic_per_row = False`` on a kernel library whose dynamic linear is
per tensor only (the suite then requires ``per_row=True`` to be refused),
``dynamic_per_row_act_range`` when per-row dynamic activations use another grid
than per-tensor ones, and ``eager_only_modes`` on a quantizer class for modes
only ``quantize_`` runs.

Override a test a backend cannot pass by subclassing its class under the same
name in the adopting module and redefining the test (SQLAlchemy style).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
import types
from importlib import metadata
from typing import Callable

import pytest
import torch

import quantplug
from quantplug.affine import sqnr
from quantplug.direct_calls import op_of
from quantplug.errors import CalibrationError, ConstraintViolationError, KernelInputError
from quantplug.kernels import flatten_packed, unflatten_packed
from quantplug.testing.capabilities import Capabilities, capabilities as _read_capabilities
from quantplug.testing.capabilities import mode_options, reference_kernels_for
from quantplug.testing.models import MLP, ConvNet, SingleLinear, calibrate

__all__ = [
    "requires",
    "backend_name",
    "backend",
    "capabilities",
    "kernels",
    "reference_kernels",
    "static_flow",
    "quantplug_check_requirements",
    "TestDiscovery",
    "TestQuantizer",
    "TestKernels",
    "TestGraphFlow",
    "TestEagerFlow",
    "TestSerialization",
    "TestErrors",
]

ENV_BACKEND = "QUANTPLUG_TEST_BACKEND"
_REQUIRES_ATTR = "__quantplug_requires__"


# ----------------------------------------------------------- requirements --


class _Requires:
    """``@requires.static_linear``: skip the test unless the backend has the capability.

    Works on test functions and classes; several decorators stack. An unknown
    capability name is an ``AttributeError`` at import, so a typo cannot turn
    into a silently skipped test.
    """

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in {f.name for f in dataclasses.fields(Capabilities)}:
            raise AttributeError(f"unknown capability {name!r}")

        def mark(obj):
            setattr(obj, _REQUIRES_ATTR, tuple(getattr(obj, _REQUIRES_ATTR, ())) + (name,))
            return obj

        return mark


requires = _Requires()


# --------------------------------------------------------------- fixtures --


@pytest.fixture(scope="session")
def backend_name(request) -> str:
    """The backend under test. Override this fixture, or pass ``--quantplug-backend``."""
    name = request.config.getoption("--quantplug-backend", default=None) or os.environ.get(ENV_BACKEND)
    if not name:
        raise NotImplementedError(
            "the quantplug conformance suite needs a backend: override the `backend_name` fixture in the "
            "module that does `from quantplug.testing.suite import *`, or run pytest with "
            "`-p quantplug.testing.pytest_plugin --quantplug-backend=NAME`, or set QUANTPLUG_TEST_BACKEND")
    return name


@pytest.fixture(scope="session")
def backend(backend_name):
    """The registered ``quantplug.Backend``."""
    return quantplug.get_backend(backend_name)


@pytest.fixture(scope="session")
def capabilities(backend) -> Capabilities:
    """Capability flags read from the backend."""
    return _read_capabilities(backend)


@pytest.fixture(scope="session")
def kernels(backend):
    """The backend's kernel library (tests needing it are tagged ``@requires.kernels``)."""
    return backend.kernels


@pytest.fixture(scope="session")
def reference_kernels(capabilities):
    """The pure-PyTorch contract with this backend's activation dtype and range."""
    return reference_kernels_for(capabilities)


@pytest.fixture(autouse=True)
def quantplug_check_requirements(request):
    """Skip a test whose class or function requires a capability the backend lacks."""
    needed = list(getattr(request.cls, _REQUIRES_ATTR, ())) if request.cls is not None else []
    needed += list(getattr(request.function, _REQUIRES_ATTR, ()))
    if not needed:
        return
    caps: Capabilities = request.getfixturevalue("capabilities")
    missing = [n for n in needed if not caps.has(n)]
    if missing:
        pytest.skip(f"backend {caps.backend!r} lacks capability {', '.join(missing)}")


def _for_each_isa(kernels, capabilities: Capabilities, body: Callable[[str], None]) -> None:
    """Run ``body(isa)`` on every ISA path usable here (or once, without ISA selection)."""
    if not capabilities.isa_selection:
        body(kernels.selected_isa())
        return
    for isa in capabilities.isas:
        with kernels.use_isa(isa):
            body(isa)


# ---------------------------------------------------------- input makers --


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randint(g, lo: int, hi: int, shape, dtype) -> torch.Tensor:
    return torch.randint(lo, hi + 1, tuple(shape), generator=g, dtype=torch.int32).to(dtype)


def _act_zero_point(caps: Capabilities, g) -> int:
    lo, hi = caps.act_range
    if caps.act_symmetric:
        return 0 if caps.act_dtype == torch.int8 else (lo + hi + 1) // 2
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _weight(caps: Capabilities, g, shape, extreme: str | None = None):
    """int8 weights in the backend's range (uint8-weight backends store them shifted into int8)."""
    lo, hi = caps.weight_range
    if hi > 127:  # uint8 weights: the kernel contract takes int8 storage with a shifted zero point
        lo, hi = lo - 128, hi - 128
    n = shape[0]
    if extreme == "max":
        w = torch.full(shape, hi, dtype=torch.int8)
    elif extreme == "min":
        w = torch.full(shape, lo, dtype=torch.int8)
    else:
        w = _randint(g, lo, hi, shape, torch.int8)
    if caps.weight_symmetric:
        zp = torch.zeros(n, dtype=torch.int32)
    else:
        zp = _randint(g, max(lo, -64), min(hi, 64), (n,), torch.int32)
    scales = (torch.rand(n, generator=g) * 0.018 + 0.002).to(torch.float32)
    return w.contiguous(), scales.contiguous(), zp.contiguous()


def _activations(caps: Capabilities, g, shape, extreme: str | None = None) -> torch.Tensor:
    lo, hi = caps.act_range
    if extreme == "max":
        return torch.full(shape, hi, dtype=caps.act_dtype)
    if extreme == "min":
        return torch.full(shape, lo, dtype=caps.act_dtype)
    return _randint(g, lo, hi, shape, caps.act_dtype)


def _out_qparams(y: torch.Tensor, caps: Capabilities) -> tuple[float, int]:
    """Output qparams covering ~80% of ``y``'s range, so some outputs saturate."""
    lo, hi = caps.act_range
    span = float(y.max() - y.min()) or 1.0
    scale = max(span * 0.8 / (hi - lo), 1e-4)
    zp = int(max(lo, min(hi, lo - round(float(y.min()) * 0.8 / scale))))
    return scale, zp


_LINEAR_SHAPES = [(1, 1, 1), (3, 17, 5), (17, 64, 33), (4, 129, 16), (2, 256, 7)]


# ------------------------------------------------------------- discovery --


def _normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


class TestDiscovery:
    """The backend is found, named, versioned and described correctly."""

    def test_registered_under_every_name(self, backend):
        for name in backend.names:
            assert quantplug.get_backend(name) is backend, f"get_backend({name!r}) returned another backend"

    def test_listed_by_list_backends_and_cli(self, backend):
        from quantplug.cli import format_backends_table

        assert backend in quantplug.list_backends()
        rows = [line.split()[0] for line in format_backends_table().splitlines()[2:] if line.strip()]
        assert backend.name in rows

    def test_found_through_entry_point(self, backend):
        if backend.distribution == "quantplug":
            pytest.skip("the core's built-in backend registers through the builtin plugin, not an entry point")
        group = metadata.entry_points(group="quantplug.backends")
        dists = {_normalize(ep.dist.name) for ep in group if ep.dist is not None}
        assert _normalize(backend.distribution) in dists, (
            f"no 'quantplug.backends' entry point from distribution {backend.distribution!r}; found {sorted(dists)}. "
            f"Declare [project.entry-points.\"quantplug.backends\"] in its pyproject.toml and install it")

    def test_version_matches_installed_distribution(self, backend):
        try:
            installed = metadata.version(backend.distribution)
        except metadata.PackageNotFoundError:
            pytest.fail(f"backend {backend.name!r} names distribution {backend.distribution!r}, which is not "
                        f"installed; error messages would tell users to install the wrong thing")
        assert backend.version == installed

    def test_loaded_without_errors(self, backend):
        errors = quantplug.plugin_errors()
        assert backend.distribution not in errors, errors.get(backend.distribution)

    @requires.kernels
    def test_kernel_runtime_info(self, backend, kernels, capabilities):
        isa = kernels.selected_isa()
        assert isa in list(kernels.available_isas()) + ["pytorch"]
        assert backend.kernel_isa() == isa
        assert all(isinstance(f, str) for f in kernels.cpu_features())
        if capabilities.isa_selection:
            assert set(capabilities.isas) <= set(kernels.available_isas())
            assert isa in capabilities.isas, "the automatic choice must be a path this CPU can run"


# ------------------------------------------------------------- quantizer --


_EXPORT_INPUTS = {
    "single_linear": (SingleLinear, (4, 24)),
    "mlp256": (lambda: MLP(256, 256, 16), (4, 256)),
    "convnet": (ConvNet, (2, 3, 8, 8)),
}


@functools.lru_cache(maxsize=None)
def _exported_once(kind: str):
    from quantplug.prepare import export_model

    make, shape = _EXPORT_INPUTS[kind]
    torch.manual_seed(0)
    return export_model(make().eval(), (torch.randn(*shape),))


def _export(kind: str):
    """A fresh copy of one of the suite's small models, exported once per process (export is slow)."""
    return copy.deepcopy(_exported_once(kind))


def _linear_node(gm):
    from quantplug.ops import is_op

    return next(n for n in gm.graph.nodes if is_op(n, "linear"))


class TestQuantizer:
    """The quantizer annotates what its BackendConfig accepts, and nothing it rejects."""

    def test_quantizer_names_this_backend(self, backend):
        q = backend.get_quantizer(**(mode_options(backend, backend.modes[0]) or {}))
        name = getattr(q, "backend_name", None)
        assert name is not None and quantplug.get_backend(name) is backend, (
            f"the quantizer's backend_name {name!r} must resolve to this backend: lowering looks kernels up by it")

    @pytest.mark.parametrize("mode", ["static", "dynamic", "qat", "weight_only"])
    def test_annotations_validate_against_backend_config(self, backend, capabilities, mode):
        """Every mode the graph flow runs annotates linear layers within the BackendConfig.

        A mode the backend does not declare is tested by ``test_undeclared_mode_refused``
        instead, an eager-only mode by :class:`TestEagerFlow`.
        """
        from quantplug.backend_config import validate_annotations
        from quantplug.specs import ANNOTATION_KEY

        if mode not in capabilities.graph_modes:
            why = "eager-only (declared in eager_only_modes)" if mode in capabilities.modes else "not declared"
            pytest.skip(f"{backend.name}: mode {mode!r} is {why}; the graph quantizer is not asked for it")
        options = mode_options(backend, mode)
        assert options is not None, (
            f"{backend.name} declares {mode!r} but its quantizer factory has no option selecting it "
            f"(expected is_{mode}=True)")
        q = backend.get_quantizer(**options)
        # weight-only kernels are linear ones, often group-wise: K a multiple of 32/64/128
        kind = "convnet" if capabilities.conv_patterns and mode != "weight_only" else "mlp256"
        gm = q.transform_for_annotation(_export(kind))
        q.annotate(gm)
        validate_annotations(gm, backend.backend_config)
        annotated = [n for n in gm.graph.nodes if ANNOTATION_KEY in n.meta]
        assert annotated, f"{backend.name} quantizer ({mode}) annotated nothing in a model with linear layers"
        assert ANNOTATION_KEY in _linear_node(gm).meta, f"{mode} quantizer left linear unannotated"

    @requires.static
    def test_wrong_activation_dtype_rejected(self, backend):
        from quantplug.observers import MinMaxObserver
        from quantplug.specs import ANNOTATION_KEY, QuantizationSpec

        q = backend.get_quantizer()
        gm = q.transform_for_annotation(_export("single_linear"))
        q.annotate(gm)
        lin = _linear_node(gm)
        ann = lin.meta[ANNOTATION_KEY]
        bad = QuantizationSpec(dtype=torch.int32, observer_or_fake_quant_ctr=MinMaxObserver.with_args(dtype=torch.int32))
        ann.input_qspec_map[lin.args[0]] = bad
        with pytest.raises(ConstraintViolationError, match=re.escape(lin.name)):
            q.validate(gm)

    @requires.static
    def test_activation_range_over_bound_rejected(self, backend, capabilities):
        from quantplug.observers import MinMaxObserver
        from quantplug.specs import ANNOTATION_KEY, QuantizationSpec

        cfg = backend.backend_config.get(("linear",))
        bounds = [dc.input_dtype for dc in (cfg.dtype_configs if cfg else []) if dc.input_dtype is not None
                  and dc.input_dtype.dtype == capabilities.act_dtype and not dc.is_dynamic]
        full = {torch.uint8: (0, 255), torch.int8: (-128, 127)}[capabilities.act_dtype]
        limited = [b for b in bounds if (b.quant_max_upper_bound or full[1]) < full[1]
                   or (b.quant_min_lower_bound if b.quant_min_lower_bound is not None else full[0]) > full[0]]
        if not bounds or len(limited) < len(bounds):
            pytest.skip("the backend accepts the full activation range; no range bound to violate")
        q = backend.get_quantizer()
        gm = q.transform_for_annotation(_export("single_linear"))
        q.annotate(gm)
        lin = _linear_node(gm)
        bad = QuantizationSpec(dtype=capabilities.act_dtype, quant_min=full[0], quant_max=full[1],
                               observer_or_fake_quant_ctr=MinMaxObserver.with_args(dtype=capabilities.act_dtype))
        lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] = bad
        with pytest.raises(ConstraintViolationError, match=re.escape(lin.name)):
            q.validate(gm)

    @requires.static
    def test_asymmetric_weights_rejected_where_symmetric_required(self, backend):
        from quantplug.observers import PerChannelMinMaxObserver
        from quantplug.specs import ANNOTATION_KEY, QuantizationSpec

        cfg = backend.backend_config.get(("linear",))
        weights = [dc.weight_dtype for dc in (cfg.dtype_configs if cfg else []) if dc.weight_dtype is not None]
        if not weights or not all(w.symmetric_only for w in weights):
            pytest.skip("the backend accepts asymmetric weights")
        q = backend.get_quantizer()
        gm = q.transform_for_annotation(_export("single_linear"))
        q.annotate(gm)
        lin = _linear_node(gm)
        dtype = weights[0].dtype
        bad = QuantizationSpec(dtype=dtype, qscheme=torch.per_channel_affine, ch_axis=0,
                               observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(
                                   dtype=dtype if isinstance(dtype, torch.dtype) else torch.int8,
                                   qscheme=torch.per_channel_affine))
        lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[1]] = bad
        with pytest.raises(ConstraintViolationError, match=re.escape(lin.name)):
            q.validate(gm)

    @pytest.mark.parametrize("mode", ["dynamic", "qat", "weight_only"])
    def test_undeclared_mode_refused(self, backend, mode):
        if mode in backend.modes:
            pytest.skip(f"{backend.name} declares {mode!r}: tested by test_annotations_validate_against_backend_config")
        options = mode_options(backend, mode) or {f"is_{mode}": True}
        with pytest.raises((ValueError, TypeError)) as info:
            backend.get_quantizer(**options)
        assert next(iter(options)) in str(info.value), "the error must name the option the backend cannot run"


# ---------------------------------------------------------------- kernels --


@requires.kernels
class TestKernels:
    """Every declared kernel against the pure-PyTorch contract, on every usable ISA path."""

    def test_isa_selection(self, kernels, capabilities):
        if not capabilities.isa_selection:
            pytest.skip("the kernel library has no ISA selection")
        before = kernels.selected_isa()
        for isa in capabilities.isas:
            with kernels.use_isa(isa):
                assert kernels.selected_isa() == isa
        assert kernels.selected_isa() == before
        with pytest.raises(ValueError):
            kernels.set_isa("no-such-isa")

    @pytest.mark.parametrize("dtype,qmin,qmax", [(torch.uint8, 0, 255), (torch.uint8, 0, 127), (torch.int8, -128, 127)])
    def test_shared_quantize_per_tensor_bit_exact_on_every_isa(self, kernels, capabilities, dtype, qmin, qmax):
        """The core's quantize kernel (compiled into every plugin) equals ``quantize_affine`` on each path:
        ties to even, NaN to the zero point, +-inf and huge values clamped, SIMD bodies and scalar tails."""
        if not callable(getattr(kernels, "quantize_per_tensor", None)):
            pytest.skip("the kernel library has no quantize_per_tensor")
        from quantplug.affine import quantize_affine

        g = _gen(5)
        scale = 0.0625  # a power of two: x * (1/scale) is exact, so the .5 steps below are true ties
        # 1000 elements: whole 16- and 32-wide blocks plus a tail
        x = torch.randn(1000, generator=g) * 4
        x[:64] = (torch.arange(64, dtype=torch.float32) - 32 + 0.5) * scale
        x[64:72] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0, -0.0, 3e-39])
        for zp in (qmin, (qmin + qmax) // 2, qmax):
            ref = quantize_affine(x, torch.tensor(scale), torch.tensor(zp), quant_min=qmin, quant_max=qmax, dtype=dtype)

            def check(isa, zp=zp, ref=ref):
                for n in (1000, 31, 7):
                    out = kernels.quantize_per_tensor(x[:n].contiguous(), scale, zp, dtype, qmin, qmax)
                    diff = (out.to(torch.int32) - ref[:n].to(torch.int32)).abs()
                    assert torch.equal(out, ref[:n]), \
                        f"[{isa}] zp={zp} n={n}: {int((diff > 0).sum())} values differ (first at {int(diff.argmax())})"

            _for_each_isa(kernels, capabilities, check)

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
    def test_shared_dequantize_per_tensor_bit_exact_on_every_isa(self, kernels, capabilities, dtype):
        """The core's dequantize kernel equals ``(q - zp) * scale`` in float32 on each path, for
        every byte value, SIMD bodies and scalar tails, and a zero point beyond the SIMD paths' range."""
        if not callable(getattr(kernels, "dequantize_per_tensor", None)):
            pytest.skip("the kernel library has no dequantize_per_tensor")
        info = torch.iinfo(dtype)
        q = torch.arange(info.min, info.max + 1, dtype=torch.int32).repeat(4)[:1000].to(dtype)
        scale = 0.0173
        for zp in (info.min, 0, info.max, 100000):
            ref = (q.to(torch.int32) - zp).to(torch.float32) * torch.tensor(scale, dtype=torch.float32)

            def check(isa, zp=zp, ref=ref):
                for n in (1000, 31, 7):
                    out = kernels.dequantize_per_tensor(q[:n].contiguous(), scale, zp)
                    assert out.dtype == torch.float32 and torch.equal(out, ref[:n]), \
                        f"[{isa}] zp={zp} n={n}: {int((out != ref[:n]).sum())} values differ"

            _for_each_isa(kernels, capabilities, check)
        # shapes whose contiguous strides are also channels_last strides: the output stays contiguous
        for shape in ((2, 1, 3, 3), (2, 5, 1, 1)):
            qs = q[:18 if shape[1] == 1 else 10].reshape(shape)
            out = kernels.dequantize_per_tensor(qs, scale, 1)
            assert out.shape == shape and out.is_contiguous()
            assert torch.equal(out, (qs.to(torch.int32) - 1).to(torch.float32) * torch.tensor(scale))
            assert kernels.quantize_per_tensor(out, scale, 1, dtype).is_contiguous()

    @pytest.mark.parametrize("shape,layout", [((1, 512, 7, 7), "channels_last"), ((2, 19, 3, 5), "channels_last"),
                                              ((2, 19, 3, 5), "nchw")])
    def test_global_avg_pool_bit_exact_on_every_isa(self, kernels, capabilities, shape, layout):
        """The core's requantizing global average pool (what lowered models end with): float32
        ``sum(x - zp) * (x_scale / (out_scale * H * W))``, rounded half to even, clamped."""
        if not callable(getattr(kernels, "global_avg_pool", None)):
            pytest.skip("the kernel library has no global_avg_pool")
        lo, hi = capabilities.act_range
        n, c, h, w = shape
        x = torch.randint(lo, hi + 1, shape, generator=_gen(13)).to(capabilities.act_dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        xs, xz, os_, oz = 0.05, (lo + hi) // 2, 0.013, lo + 3
        if layout == "nchw":  # exact ties: out_scale * H * W and x_scale = half of it are exact in float32
            os_ = 0.0625
            xs = os_ * h * w * 0.5  # multiplier exactly 0.5: odd sums land on .5 (ties to even)
        acc = (x.to(torch.int64) - xz).sum((2, 3)).to(torch.float32)
        m = torch.tensor(xs, dtype=torch.float32) / (torch.tensor(os_, dtype=torch.float32) * (h * w))
        ref = (torch.round((acc * m).clamp(lo - oz, hi - oz)) + oz).to(capabilities.act_dtype).reshape(n, c, 1, 1)

        def check(isa):
            out = kernels.global_avg_pool(x, xs, xz, os_, oz, lo, hi)  # the backend's activation range
            assert out.shape == ref.shape and torch.equal(out, ref), f"[{isa}] {shape} {layout}"

        _for_each_isa(kernels, capabilities, check)

    @requires.static_linear
    def test_packed_linear_weight_is_plain_data(self, kernels, capabilities):
        w, s, z = _weight(capabilities, _gen(1), (5, 7))
        packed = kernels.pack_linear_weight(w, s, z)
        tensors = flatten_packed(packed)
        again = unflatten_packed(type(packed), tensors)
        assert [torch.equal(a, b) for a, b in zip(flatten_packed(again), tensors)] == [True] * len(tensors)
        if hasattr(packed, "n"):
            assert (packed.n, packed.k) == (5, 7)

    @requires.static_linear
    @pytest.mark.parametrize("relu", [False, True])
    @pytest.mark.parametrize("m,k,n", _LINEAR_SHAPES)
    def test_static_linear_matches_reference_bit_exact(self, kernels, reference_kernels, capabilities, m, k, n, relu):
        g = _gen(m * 1000 + k * 10 + n)
        x = _activations(capabilities, g, (m, k))
        xzp = _act_zero_point(capabilities, g)
        w, s, z = _weight(capabilities, g, (n, k))
        bias = torch.randn(n, generator=g) * 0.5
        xs = 0.05
        y = ((x.float() - xzp) * xs) @ ((w.float() - z.float().reshape(-1, 1)) * s.reshape(-1, 1)).t() + bias
        os_, ozp = _out_qparams(y, capabilities)
        ref = reference_kernels.linear(x, xs, xzp, reference_kernels.pack_linear_weight(w, s, z), bias, os_, ozp, relu=relu)
        packed = kernels.pack_linear_weight(w, s, z)

        def check(isa):
            out = kernels.linear(x, xs, xzp, packed, bias, os_, ozp, relu=relu)
            assert out.dtype == ref.dtype and out.shape == ref.shape
            diff = (out.to(torch.int32) - ref.to(torch.int32)).abs()
            assert torch.equal(out, ref), f"[{isa}] {int((diff > 0).sum())} of {diff.numel()} outputs differ (max {int(diff.max())})"

        _for_each_isa(kernels, capabilities, check)

    @requires.static_linear
    @pytest.mark.parametrize("x_extreme,w_extreme", [("max", "max"), ("min", "max"), ("max", "min"), ("min", "min")])
    def test_static_linear_extreme_values(self, kernels, reference_kernels, capabilities, x_extreme, w_extreme):
        g = _gen(7)
        m, k, n = 3, 515, 9
        x = _activations(capabilities, g, (m, k), x_extreme)
        w, s, z = _weight(capabilities, g, (n, k), w_extreme)
        lo, hi = capabilities.act_range
        for xzp in (lo, hi):
            for bias in (None, torch.full((n,), 3.0)):
                ref = reference_kernels.linear(x, 0.02, xzp, reference_kernels.pack_linear_weight(w, s, z), bias, 0.5, (lo + hi) // 2)
                packed = kernels.pack_linear_weight(w, s, z)

                def check(isa, xzp=xzp, bias=bias, ref=ref, packed=packed):
                    out = kernels.linear(x, 0.02, xzp, packed, bias, 0.5, (lo + hi) // 2)
                    assert torch.equal(out, ref), f"[{isa}] x={x_extreme} w={w_extreme} x_zp={xzp} bias={bias is not None}"

                _for_each_isa(kernels, capabilities, check)

    @requires.static_linear
    def test_static_linear_leading_batch_dims(self, kernels, reference_kernels, capabilities):
        g = _gen(11)
        x = _activations(capabilities, g, (2, 3, 20))
        w, s, z = _weight(capabilities, g, (6, 20))
        xzp, ozp = _act_zero_point(capabilities, g), _act_zero_point(capabilities, g)
        ref = reference_kernels.linear(x, 0.05, xzp, reference_kernels.pack_linear_weight(w, s, z), None, 0.3, ozp)
        out = kernels.linear(x, 0.05, xzp, kernels.pack_linear_weight(w, s, z), None, 0.3, ozp)
        assert out.shape == (2, 3, 6) and torch.equal(out, ref)

    @requires.dynamic_linear
    @pytest.mark.parametrize("per_row", [False, True])
    @pytest.mark.parametrize("m,k,n", _LINEAR_SHAPES + [(2, 8, 3)])
    def test_dynamic_linear_within_error_bound(self, kernels, capabilities, m, k, n, per_row):
        """fp32 output within one activation quantization step per weight magnitude of float math.

        Bound: activations are quantized with a step of at most ``2 * max|x| / 127`` (any 8-bit
        grid, even a 7-bit reduce_range one, covering ``[min(x, 0), max(x, 0)]``), so each
        product errs by at most ``step * |w|``: ``|y - y_float| <= step * sum_k |w_deq[n, k]|``.
        """
        g = _gen(m * 77 + k + n)
        x = torch.randn(m, k, generator=g) * 3
        w, s, z = _weight(capabilities, g, (n, k))
        bias = torch.randn(n, generator=g)
        w_deq = (w.float() - z.float().reshape(-1, 1)) * s.reshape(-1, 1)
        y_float = x.double() @ w_deq.double().t() + bias.double()
        step = 2 * float(x.abs().max()) / 127
        bound = step * w_deq.abs().sum(1).double() + 1e-4 * (1 + y_float.abs())
        packed = kernels.pack_linear_weight(w, s, z)

        if per_row and not capabilities.dynamic_per_row:
            # Declared unsupported (supports_dynamic_per_row = False): it must be refused, loudly.
            with pytest.raises((KernelInputError, ValueError, NotImplementedError), match="per_row"):
                kernels.linear_dynamic(x, packed, bias, per_row=True)
            return

        def check(isa):
            out = kernels.linear_dynamic(x, packed, bias, per_row=per_row)
            assert out.dtype == torch.float32 and out.shape == (m, n)
            err = (out.double() - y_float).abs()
            assert bool((err <= bound).all()), f"[{isa}] max error {float(err.max()):.4g} over bound {float(bound.min()):.4g}"

        _for_each_isa(kernels, capabilities, check)

    @requires.conv2d_kernel
    @pytest.mark.parametrize("geometry", [
        # N, C, H, W, Cout, k, stride, pad, dilation, groups
        (1, 3, 8, 8, 4, 3, 1, 1, 1, 1),
        (2, 8, 7, 7, 8, 1, 1, 0, 1, 1),
        (1, 4, 9, 9, 6, 3, 2, 0, 1, 1),
        (1, 8, 6, 6, 8, 3, 1, 1, 1, 8),
        (1, 4, 6, 6, 8, 3, 1, 1, 1, 2),
        (1, 4, 10, 10, 4, 3, 1, 2, 2, 1),
    ], ids=["3x3", "1x1", "stride2", "depthwise", "grouped", "dilated"])
    @pytest.mark.parametrize("relu", [False, True])
    def test_conv2d_matches_reference_bit_exact(self, kernels, reference_kernels, capabilities, geometry, relu):
        n_, c, h, w_, cout, ks, stride, pad, dil, groups = geometry
        g = _gen(sum(geometry))
        x = _activations(capabilities, g, (n_, c, h, w_))
        xzp = _act_zero_point(capabilities, g)
        w, s, z = _weight(capabilities, g, (cout, c // groups, ks, ks))
        bias = torch.randn(cout, generator=g) * 0.3
        os_, ozp = 0.4, (capabilities.act_range[0] + capabilities.act_range[1]) // 2
        ref = reference_kernels.conv2d(x, 0.05, xzp, reference_kernels.pack_conv2d_weight(w, s, z, stride, pad, dil, groups),
                                       bias, os_, ozp, relu=relu)
        try:
            packed = kernels.pack_conv2d_weight(w, s, z, stride, pad, dil, groups)
        except NotImplementedError as exc:
            pytest.skip(f"geometry not supported: {exc}")

        def check(isa):
            for layout in (torch.contiguous_format, torch.channels_last):
                out = kernels.conv2d(x.contiguous(memory_format=layout), 0.05, xzp, packed, bias, os_, ozp, relu=relu)
                assert out.shape == ref.shape and out.dtype == ref.dtype
                diff = (out.to(torch.int32) - ref.to(torch.int32)).abs()
                assert torch.equal(out, ref), f"[{isa}, {layout}] {int((diff > 0).sum())} outputs differ (max {int(diff.max())})"

        _for_each_isa(kernels, capabilities, check)

    @requires.add_kernel
    @pytest.mark.parametrize("relu", [False, True])
    def test_add_within_one_lsb(self, kernels, reference_kernels, capabilities, relu):
        """Add may requantize in fixed point instead of float32: 1 LSB of rounding freedom."""
        g = _gen(3)
        a = _activations(capabilities, g, (2, 3, 5, 7))
        b = _activations(capabilities, g, (2, 3, 5, 7))
        azp, bzp, ozp = (_act_zero_point(capabilities, g) for _ in range(3))
        ref = reference_kernels.add(a, 0.05, azp, b, 0.03, bzp, 0.07, ozp, relu=relu)

        def check(isa):
            out = kernels.add(a, 0.05, azp, b, 0.03, bzp, 0.07, ozp, relu=relu)
            diff = (out.to(torch.int32) - ref.to(torch.int32)).abs()
            assert out.shape == ref.shape and int(diff.max()) <= 1, f"[{isa}] max difference {int(diff.max())} LSB"

        _for_each_isa(kernels, capabilities, check)

    @requires.static_linear
    @pytest.mark.parametrize("case", ["float_x", "other_int_dtype", "non_contiguous", "wrong_k", "meta_device",
                                      "float_weight", "weight_1d", "scales_wrong_length", "zero_points_float"])
    def test_bad_linear_inputs_raise_kernel_input_error(self, kernels, capabilities, case):
        g = _gen(5)
        x = _activations(capabilities, g, (4, 8))
        w, s, z = _weight(capabilities, g, (4, 8))
        other = torch.int8 if capabilities.act_dtype == torch.uint8 else torch.uint8
        if case.startswith(("float_weight", "weight_1d", "scales", "zero_points")):
            args = {"float_weight": (w.float(), s, z), "weight_1d": (w.reshape(-1), s, z),
                    "scales_wrong_length": (w, s[:3].contiguous(), z), "zero_points_float": (w, s, z.float())}[case]
            with pytest.raises(KernelInputError):
                kernels.pack_linear_weight(*args)
            return
        packed = kernels.pack_linear_weight(w, s, z)
        bad = {"float_x": x.float(), "other_int_dtype": x.to(other), "non_contiguous": torch.cat([x, x], 1)[:, ::2],
               "wrong_k": x[:, :5].contiguous(), "meta_device": torch.empty((4, 8), dtype=x.dtype, device="meta")}[case]
        with pytest.raises(KernelInputError):
            kernels.linear(bad, 0.1, 0, packed, None, 0.1, 0)

    @requires.dynamic_linear
    @pytest.mark.parametrize("case", ["int_x", "wrong_k", "non_contiguous"])
    def test_bad_dynamic_inputs_raise_kernel_input_error(self, kernels, capabilities, case):
        w, s, z = _weight(capabilities, _gen(2), (4, 8))
        packed = kernels.pack_linear_weight(w, s, z)
        x = torch.randn(4, 8)
        bad = {"int_x": x.to(torch.int8), "wrong_k": x[:, :5].contiguous(), "non_contiguous": torch.randn(8, 4).t()}[case]
        with pytest.raises(KernelInputError):
            kernels.linear_dynamic(bad, packed, None)

    @requires.conv2d_kernel
    @pytest.mark.parametrize("case", ["three_d", "wrong_channels", "float_x"])
    def test_bad_conv_inputs_raise_kernel_input_error(self, kernels, capabilities, case):
        w, s, z = _weight(capabilities, _gen(4), (4, 3, 3, 3))
        packed = kernels.pack_conv2d_weight(w, s, z, 1, 1, 1, 1)
        x = _activations(capabilities, _gen(4), (1, 3, 6, 6))
        bad = {"three_d": x[0], "wrong_channels": _activations(capabilities, _gen(4), (1, 5, 6, 6)),
               "float_x": x.float()}[case]
        with pytest.raises(KernelInputError):
            kernels.conv2d(bad, 0.1, 0, packed, None, 0.1, 0)


# ------------------------------------------------------------- graph flow --


@functools.lru_cache(maxsize=8)
def _static_flow_cached(backend_name: str) -> types.SimpleNamespace:
    return _static_flow(backend_name)


def _static_flow(backend_name: str) -> types.SimpleNamespace:
    """The suite's MLP, seeded: two calls give the same model, calibration and qparams."""
    backend = quantplug.get_backend(backend_name)
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(16, 32)
    prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(), (x,))
    calibrate(prepared, [torch.randn(16, 32) for _ in range(6)] + [x])
    reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
    lowered = quantplug.convert_pt2e(prepared)
    return types.SimpleNamespace(model=model, x=x, reference=reference, lowered=lowered)


@pytest.fixture(scope="session")
def static_flow(backend, capabilities):
    """The suite's MLP through prepare, calibrate and convert (lowered and reference forms)."""
    if not capabilities.static:
        pytest.skip(f"{backend.name} has no static mode")
    return _static_flow_cached(backend.name)


def _output_step(gm) -> float | None:
    from quantplug.lowering import QDQ_KERNEL_OPS
    from quantplug.quant_ops import ops as qops

    dequantize = (qops.dequantize_per_tensor.default, QDQ_KERNEL_OPS[qops.dequantize_per_tensor.default])
    out = next(n for n in gm.graph.nodes if n.op == "output")
    for node in out.all_input_nodes:
        if op_of(node.target) in dequantize:
            return float(node.args[1])
    return None


class TestGraphFlow:
    """prepare -> calibrate -> convert end to end, with the backend's own quantizer."""

    @requires.static
    def test_static_mlp_sqnr(self, static_flow):
        # Three int8 linears and an add: ~40 dB per 8-bit tensor at best, a few dB lost per
        # quantized step, 6 dB more with 7-bit (reduce_range) activations. 25 dB leaves room
        # for random init and still fails on a wrong scale, zero point or layout (< 10 dB).
        f = static_flow
        assert sqnr(f.model(f.x), f.lowered(f.x)) > 25.0

    @requires.static
    def test_lowered_agrees_with_reference_within_one_step(self, backend):
        torch.manual_seed(1)
        model = SingleLinear(relu=True).eval()
        x = torch.randn(8, 24)
        prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(), (x,))
        calibrate(prepared, [torch.randn(8, 24) for _ in range(4)] + [x])
        reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
        lowered = quantplug.convert_pt2e(prepared)
        step = _output_step(reference)
        assert step is not None, "the reference representation should end in dequantize"
        diff = (lowered(x) - reference(x)).abs().max()
        assert float(diff) <= step * 1.001, f"lowered and reference differ by {float(diff) / step:.2f} steps"

    @requires.static
    def test_lowered_agrees_with_reference_beyond_the_calibrated_range(self, backend, capabilities):
        """Inputs 6x larger than calibration saturate every quantized output: the kernels must clip
        to each quantize node's own range (fbgemm's reduce_range 0..127 included), not their dtype's."""
        torch.manual_seed(4)
        cases = [(SingleLinear(relu=False).eval(), (8, 24))]
        if capabilities.conv_patterns:
            cases.append((ConvNet().eval(), (2, 3, 12, 12)))
        for model, shape in cases:
            prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(), (torch.randn(shape),))
            calibrate(prepared, [torch.randn(shape) for _ in range(4)])
            reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
            lowered = quantplug.convert_pt2e(prepared)
            step = _output_step(reference)
            x = torch.randn(shape) * 6
            diff = float((lowered(x) - reference(x)).abs().max())
            assert diff <= step * 1.001, \
                f"{type(model).__name__}: lowered and reference differ by {diff / step:.2f} steps on saturating inputs"

    @requires.static_linear
    def test_explain_lists_backend_kernels(self, static_flow, backend):
        report = quantplug.explain(static_flow.lowered)
        assert report.backend == backend.name
        kernel_ops = {r.op for r in report.kernels}
        assert "linear" in kernel_ops, f"no linear ran on {backend.name}'s kernels:\n{report}"

    @requires.static
    def test_dynamic_batch_after_convert(self, static_flow):
        for b in (1, 5):
            assert static_flow.lowered(torch.randn(b, 32)).shape == (b, 16)

    @requires.static
    @requires.conv_patterns
    def test_conv_model_sqnr(self, backend):
        torch.manual_seed(2)
        model = ConvNet().eval()
        x = torch.randn(2, 3, 12, 12)
        prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(), (x,))
        calibrate(prepared, [torch.randn(2, 3, 12, 12) for _ in range(4)] + [x])
        converted = quantplug.convert_pt2e(prepared)
        # conv-bn-relu, conv + residual add, pooling and a linear: more quantized steps than the
        # MLP, so 20 dB (an order of magnitude of error energy below the signal).
        assert sqnr(model(x), converted(x)) > 20.0

    @requires.dynamic
    def test_dynamic_mlp(self, backend, capabilities):
        torch.manual_seed(3)
        model = MLP().eval()
        x = torch.randn(8, 32)
        prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(**mode_options(backend, "dynamic")), (x,))
        calibrate(prepared, [x])
        converted = quantplug.convert_pt2e(prepared)
        # Weights int8 per channel, activations requantized per call: only rounding noise, > 30 dB
        # ideally; 25 dB allows 7-bit dynamic ranges.
        assert sqnr(model(x), converted(x)) > 25.0
        if capabilities.dynamic_linear:
            assert any(r.op == "linear_dynamic" for r in quantplug.explain(converted).kernels)

    @requires.qat
    def test_qat_train_then_convert(self, backend):
        torch.manual_seed(4)
        model = MLP()
        x = torch.randn(16, 32)
        prepared = quantplug.prepare_qat_pt2e(model, backend.get_quantizer(**mode_options(backend, "qat")), (x,))
        opt = torch.optim.SGD(prepared.parameters(), lr=1e-3)
        for _ in range(3):
            opt.zero_grad()
            loss = (prepared(x) - torch.ones(16, 16)).pow(2).mean()
            loss.backward()
            opt.step()
        quantplug.move_exported_model_to_eval(prepared)
        with torch.no_grad():
            fake = prepared(x)
        converted = quantplug.convert_pt2e(prepared)
        # The converted model computes what fake quantization simulated, up to rounding of
        # the accumulators: a few steps at most, far above 25 dB.
        assert sqnr(fake, converted(x)) > 25.0


# ------------------------------------------------------------- eager flow --


def _eager_model() -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)).eval()


def _eager_configs(mode: str, capabilities: Capabilities) -> list:
    """The eager-flow configs of ``mode`` (weight-only: int8, plus int4 where the config has it)."""
    if mode == "static":
        return [quantplug.Int8StaticActivationInt8WeightConfig()]
    if mode == "dynamic":
        return [quantplug.Int8DynamicActivationInt8WeightConfig()]
    if mode == "qat":
        return [quantplug.QATConfig()]
    # The weight-only dtypes the BackendConfig accepts (activations float): int8 and/or int4.
    configs = [quantplug.Int8WeightOnlyConfig()] if capabilities.weight_only_int8 else []
    if capabilities.int4:
        configs.append(quantplug.Int4WeightOnlyConfig(group_size=32))
    if not configs and "weight_only" not in capabilities.modes:
        configs = [quantplug.Int8WeightOnlyConfig()]  # to check the refusal
    return configs


def _run_eager(model, config, backend_name: str, batches) -> None:
    """quantize_ (or prepare_qat + a few training steps), calibrate, convert: the whole eager flow."""
    if isinstance(config, quantplug.QATConfig):
        quantplug.prepare_qat(model, config, backend=backend_name)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for x in batches:
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        quantplug.convert(model.eval())
        return
    quantplug.quantize_(model, config, backend=backend_name)
    if isinstance(config, quantplug.Int8StaticActivationInt8WeightConfig):
        calibrate(model, batches)
        quantplug.convert(model)


class TestEagerFlow:
    """``quantplug.quantize_`` / ``prepare_qat`` / ``convert`` for every mode, graph or eager-only.

    Declared modes must quantize, stay close to float and survive ``quantplug.save`` /
    ``load``, ``load_state_dict`` and ``torch.export`` save / load bit-identically;
    undeclared ones must be refused without touching the model.
    """

    @pytest.mark.parametrize("mode", ["static", "dynamic", "weight_only", "qat"])
    def test_mode(self, backend, capabilities, mode, tmp_path):
        from quantplug.configs import BackendCapabilityError
        from quantplug.serialization import load, load_exported, save

        batches = [torch.randn(8, 128, generator=_gen(i)) for i in range(4)]
        x = torch.randn(5, 128, generator=_gen(9))
        configs = _eager_configs(mode, capabilities)
        assert configs, (f"{backend.name} declares {mode!r} but its BackendConfig accepts no weight-only dtype "
                         f"(a DTypeConfig with input_dtype=None and int8 or int4 weights)")
        for config in configs:
            label = type(config).__name__
            model = _eager_model()
            y_float = model(x)
            if mode not in capabilities.modes:
                before = {k: v.clone() for k, v in model.state_dict().items()}
                with pytest.raises(BackendCapabilityError, match=mode):
                    _run_eager(model, config, backend.name, batches)
                assert isinstance(model[0], torch.nn.Linear), f"{label}: a refused config changed the model"
                assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
                continue
            _run_eager(model, config, backend.name, batches)
            assert not isinstance(model[0], torch.nn.Linear), f"{label} on {backend.name} swapped nothing"
            assert model.quantplug_info.backend == backend.name
            with torch.no_grad():
                y = model(x)
            # int8: ~40 dB per tensor, two layers, 7-bit activations on some backends: 25 dB.
            # int4 group-wise weights: ~6 dB per bit less, 12 dB.
            floor = 12.0 if isinstance(config, quantplug.Int4WeightOnlyConfig) else 25.0
            assert sqnr(y_float, y) > floor, f"{label} on {backend.name}: SQNR {float(sqnr(y_float, y)):.1f} dB"
            path = save(model, tmp_path / f"{mode}-{label}.safetensors")
            loaded = load(path, model=_eager_model())
            # state_dict into the same flow run on *different* fp32 weights: every number the
            # quantized model uses (weights, scales, activation qparams) must be state.
            other = _eager_model()
            with torch.no_grad():
                for p in other.parameters():
                    p.mul_(-0.5)
            _run_eager(other, config, backend.name, [b * 2 for b in batches])
            result = other.load_state_dict(model.state_dict(), strict=True)
            assert not result.missing_keys and not result.unexpected_keys
            with torch.no_grad():
                assert torch.equal(loaded(x), y), f"{label}: output changed after quantplug.save/load"
                assert torch.equal(other(x), y), f"{label}: output differs after load_state_dict"
            # torch.export: traced modules call the registered quantplug:: ops, which must reach the
            # same kernels after torch.export.save / load
            torch.export.save(torch.export.export(model, (x,)), tmp_path / f"{mode}-{label}.pt2")
            program = load_exported(tmp_path / f"{mode}-{label}.pt2")
            with torch.no_grad():
                assert torch.equal(program.module()(x), y), f"{label}: output differs after torch.export save/load"


# ---------------------------------------------------------- serialization --


class TestSerialization:
    """Saved models load bit-identical; damaged files are refused."""

    @requires.static
    @pytest.mark.parametrize("layout", ["file", "directory"])
    def test_save_load_bit_identical(self, static_flow, tmp_path, layout):
        from quantplug.serialization import load, save

        path = tmp_path / ("m.safetensors" if layout == "file" else "m")
        save(static_flow.lowered, path)
        loaded = load(path)
        for x in (static_flow.x, torch.randn(3, 32)):
            assert torch.equal(loaded(x), static_flow.lowered(x))

    @requires.static
    def test_state_dict_into_a_freshly_converted_model(self, static_flow, backend):
        """Weights and packed buffers are state; activation qparams are graph constants, so the
        fresh model is converted from the same model and calibration data."""
        fresh = _static_flow(backend.name).lowered
        state = fresh.state_dict()
        assert state, "a lowered model keeps its packed weights as state"
        with torch.no_grad():
            for t in state.values():
                t.zero_()  # prove the values come from the loaded state dict
        result = fresh.load_state_dict(static_flow.lowered.state_dict(), strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert torch.equal(fresh(static_flow.x), static_flow.lowered(static_flow.x))

    @requires.static
    def test_damaged_file_rejected(self, static_flow, tmp_path):
        from quantplug.serialization import CorruptModelFileError, load, save

        path = tmp_path / "m.safetensors"
        save(static_flow.lowered, path)
        data = bytearray(path.read_bytes())
        (tmp_path / "truncated.safetensors").write_bytes(bytes(data[: len(data) // 2]))
        with pytest.raises(CorruptModelFileError):
            load(tmp_path / "truncated.safetensors")
        data[-3] ^= 0x5A  # inside the last tensor's bytes
        (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
        with pytest.raises(CorruptModelFileError):
            load(tmp_path / "flipped.safetensors")

    @requires.static
    def test_torch_export_save_load(self, static_flow, tmp_path):
        from quantplug.serialization import load_exported

        ep = torch.export.export(static_flow.lowered, (static_flow.x,))
        torch.export.save(ep, tmp_path / "m.pt2")
        again = load_exported(tmp_path / "m.pt2")
        assert torch.equal(again.module()(static_flow.x), static_flow.lowered(static_flow.x))


# ------------------------------------------------------------------ errors --


class TestErrors:
    """Misuse fails early with a message that says what to do."""

    @requires.static
    def test_uncalibrated_convert_names_observers(self, backend):
        prepared = quantplug.prepare_pt2e(MLP().eval(), backend.get_quantizer(), (torch.randn(2, 32),))
        with pytest.raises(CalibrationError, match="activation_post_process"):
            quantplug.convert_pt2e(prepared)

    def test_unknown_quantizer_option_rejected(self, backend):
        with pytest.raises((TypeError, ValueError)):
            backend.get_quantizer(no_such_option_for_any_backend=True)

    def test_unknown_backend_name_says_what_to_install(self, backend):
        with pytest.raises(KeyError, match="installed backends"):
            quantplug.get_backend(backend.name + "_does_not_exist")
