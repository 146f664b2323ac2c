"""The plugin-author kit itself: capabilities, the requires tags, and that the suite catches bugs.

The suite is run in a pytest subprocess against backends registered by hand (no entry point) whose
kernels are the contract with strict input checks (``tests/refkernels_backend.py``): one that
follows it must pass everything (one test is overridden the documented way, by subclassing);
one whose static linear is off by one on a few outputs must fail the bit-exactness test; one
that declares ``supports_dynamic_per_row = False`` and refuses per-row passes, and one that
declares it but silently computes per row anyway fails.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import quantplug.registry as registry
from quantplug.testing import capabilities
from quantplug.testing.suite import requires

_CONFTEST = textwrap.dedent('''
    import quantplug
    from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config
    from tests.refkernels_backend import StrictReferenceKernels


    class KitKernels(StrictReferenceKernels):
        """The contract with strict input checks, or one of the bugs the suite must catch."""

        def __init__(self, variant):
            super().__init__()
            self.variant = variant
            self.supports_dynamic_per_row = variant not in ("per_tensor", "per_tensor_lying")

        def linear(self, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False):
            out = super().linear(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu)
            if self.variant == "broken" and out.numel() > 40:
                out = out.clone()
                out.view(-1)[7] = out.view(-1)[7] - 1 if int(out.view(-1)[7]) > -100 else 0
            return out

        def linear_dynamic(self, x, packed, bias, per_row=False):
            if per_row and self.variant == "per_tensor":
                raise NotImplementedError("kit.linear_dynamic: per_row=True is not supported")
            return super().linear_dynamic(x, packed, bias, per_row)


    def _plugin(name, variant):
        class KitQuantizer(ReferenceQuantizer):
            backend_name = name
            eager_only_modes = ()  # this backend declares no weight_only mode

        class KitPlugin:
            @quantplug.hookimpl
            def quantplug_register_backends(self, register):
                register(quantplug.Backend(
                    name=name, distribution="quantplug", version=quantplug.__version__,
                    description=f"kit self-test ({{variant}})", quantizer_factory=KitQuantizer,
                    backend_config=reference_backend_config(), modes=("static", "dynamic", "qat"),
                    kernels=KitKernels(variant)))

        return KitPlugin()


    for _variant in {variants!r}:
        quantplug.register_plugin(_plugin("kit_" + _variant, _variant), name="kit_" + _variant,
                                  distribution="quantplug")
''')

# One adopting module per backend; classes that test_conformance_reference.py already runs
# against the same kernels are removed to keep this fast.
_TEST = textwrap.dedent('''
    import pytest
    from quantplug.testing.suite import *  # noqa: F401,F403

    del TestGraphFlow, TestEagerFlow, TestSerialization  # noqa: F821
    {extra}

    @pytest.fixture(scope="session")
    def backend_name():
        return "kit_{variant}"
''')

_OVERRIDE = '''
# TestKernels and TestQuantizer run against these same kernels in test_conformance_reference.py.
del TestKernels, TestQuantizer  # noqa: F821


class TestErrors(TestErrors):  # noqa: F405 - overriding one test, the documented way
    def test_unknown_backend_name_says_what_to_install(self):
        pytest.skip("overridden by the kit self-test")
'''

_ONLY = '''
del TestDiscovery, TestQuantizer, TestErrors  # noqa: F821
_Kernels = TestKernels  # noqa: F405


class TestKernels:
    {test} = _Kernels.{test}
'''

_VARIANTS = ("good", "broken", "per_tensor", "per_tensor_lying")
_TARGET = {"broken": "test_static_linear_matches_reference_bit_exact",
           "per_tensor": "test_dynamic_linear_within_error_bound",
           "per_tensor_lying": "test_dynamic_linear_within_error_bound"}


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory):
    """The suite run once, in a subprocess, against one kit backend per variant: ``{test id: outcome}``.

    A subprocess (not pytester's in-process run) so that modules imported by the inner run
    (torch.library registrations) cannot leak into or clash with this session.
    """
    root = tmp_path_factory.mktemp("kit")
    (root / "conftest.py").write_text(_CONFTEST.format(variants=_VARIANTS))
    for v in _VARIANTS:
        # The good variant runs discovery and errors (with one override, the documented way); each
        # bug variant only the test its bug breaks.
        extra = _OVERRIDE if v == "good" else _ONLY.format(test=_TARGET[v])
        (root / f"test_{v}.py").write_text(_TEST.format(variant=v, extra=extra))
    env = {k: val for k, val in os.environ.items() if not k.startswith(("QUANTPLUG_", "PYTEST_"))}
    env["QUANTPLUG_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only the kit backends
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(root)], capture_output=True, text=True, env=env, cwd=root, timeout=600)
    return proc, [(line.split(" ", 1)[0], line) for line in proc.stdout.splitlines()
                  if line.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))]


def _results(kit_run, module: str, contains: str = "") -> list[tuple[str, str]]:
    _proc, rows = kit_run
    return [(o, line) for o, line in rows if f"test_{module}.py" in line and contains in line]


def test_suite_passes_for_backend_following_the_contract(kit_run):
    proc, _ = kit_run
    rows = _results(kit_run, "good")
    bad = [line for o, line in rows if o in ("FAILED", "ERROR")]
    assert rows and not bad, "\n".join(bad) + proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sum(o == "PASSED" for o, _ in rows) >= 7  # discovery and error tests ran
    assert any("overridden by the kit self-test" in line for _, line in rows)


def test_suite_catches_an_off_by_one_kernel(kit_run):
    proc, _ = kit_run
    rows = _results(kit_run, "broken", "static_linear_matches")
    assert any(o == "FAILED" for o, _ in rows), proc.stdout[-3000:]
    assert "outputs differ" in proc.stdout


@pytest.mark.parametrize("variant,ok", [("per_tensor", True), ("per_tensor_lying", False)])
def test_declared_per_tensor_dynamic_must_refuse_per_row(kit_run, variant, ok):
    proc, _ = kit_run
    rows = _results(kit_run, variant, "dynamic_linear_within_error_bound")
    assert len(rows) == 12 and not any(o == "SKIPPED" for o, _ in rows), proc.stdout[-3000:]
    failed = [line for o, line in rows if o == "FAILED"]
    if ok:
        assert not failed, "\n".join(failed)
    else:
        assert len(failed) == 6 and all("True]" in line for line in failed), "\n".join(failed)
        assert "DID NOT RAISE" in proc.stdout


def test_declarations_are_read_and_checked(fresh_registry):
    import dataclasses

    from quantplug.reference_kernels import ReferenceKernels
    from tests import refkernels_backend as refk

    backend = registry.get_backend("reference")
    assert capabilities(backend).dynamic_per_row is False  # no kernels at all

    class PerTensor(ReferenceKernels):
        supports_dynamic_per_row = False

    class EagerWeightOnly(refk.RefkQuantizer):
        eager_only_modes = ("weight_only",)

    base = dataclasses.replace(backend, kernels=ReferenceKernels(), quantizer_factory=refk.RefkQuantizer)
    assert capabilities(base).dynamic_per_row is True
    assert capabilities(dataclasses.replace(base, kernels=PerTensor())).dynamic_per_row is False
    caps = capabilities(dataclasses.replace(base, quantizer_factory=EagerWeightOnly))
    assert "weight_only" in caps.modes and "weight_only" not in caps.graph_modes and not caps.weight_only
    assert caps.static and "static" in caps.graph_modes

    class Typo(refk.RefkQuantizer):
        eager_only_modes = "weight_only"  # a string, not a tuple

    class Undeclared(refk.RefkQuantizer):
        eager_only_modes = ("int2",)

    class NotBool(ReferenceKernels):
        supports_dynamic_per_row = "no"

    with pytest.raises(TypeError, match="eager_only_modes"):
        capabilities(dataclasses.replace(base, quantizer_factory=Typo))
    with pytest.raises(ValueError, match="int2"):
        capabilities(dataclasses.replace(base, quantizer_factory=Undeclared))
    with pytest.raises(TypeError, match="supports_dynamic_per_row"):
        capabilities(dataclasses.replace(base, kernels=NotBool()))


def test_capabilities_read_from_the_backend(fresh_registry):
    caps = capabilities(registry.get_backend("reference"))
    assert caps.static and caps.dynamic and caps.qat and not caps.kernels
    assert not caps.static_linear and caps.conv_patterns and caps.per_channel
    assert caps.act_dtype.is_signed and caps.act_range == (-128, 127) and caps.weight_range == (-127, 127)
    with pytest.raises(AttributeError):
        caps.has("no_such_capability")


def test_requires_rejects_unknown_capability():
    with pytest.raises(AttributeError, match="unknown capability"):
        requires.static_linaer  # noqa: B018 - the typo is the point


def test_the_kit_imports_no_plugin():
    """Every import in quantplug.testing names the core or a third-party library, never a plugin."""
    import ast
    from pathlib import Path

    import quantplug.testing

    for path in Path(quantplug.testing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            assert not [n for n in names if n.startswith("quantplug_")], f"{path.name} imports {names}"
