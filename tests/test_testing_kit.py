"""The plugin-author kit itself: capabilities, the requires tags, and that the suite catches bugs.

The suite is run with pytester against two backends registered by hand (no entry point):
one whose kernels follow the contract (pure-PyTorch kernels with strict input checks, as a
plugin's C kernels must have), and one whose static linear is off by one on a few outputs.
The first must pass everything (one test is overridden the documented way, by subclassing);
the second must fail the bit-exactness test.
"""

import textwrap

import pytest

import quantplug.registry as registry
from quantplug.testing import capabilities
from quantplug.testing.suite import requires

pytest_plugins = ["pytester"]

_CONFTEST = textwrap.dedent('''
    import torch
    import quantplug
    from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config
    from quantplug.errors import KernelInputError
    from quantplug.kernels import check_tensor
    from quantplug.reference_kernels import ReferenceKernels

    BROKEN = {broken}

    class StrictKernels(ReferenceKernels):
        """The reference contract plus the shape checks a plugin's wrapper must do before C."""

        def linear(self, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False):
            check_tensor(x_q, "x_q", dtype=self.act_dtype, op="strict.linear")
            if x_q.shape[-1] != packed.k:
                raise KernelInputError(f"strict.linear: x_q has {{x_q.shape[-1]}} features, weight {{packed.k}}")
            out = super().linear(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu)
            if BROKEN and out.numel() > 40:
                out = out.clone()
                out.view(-1)[7] = out.view(-1)[7] - 1 if int(out.view(-1)[7]) > -100 else 0
            return out

        def linear_dynamic(self, x, packed, bias, per_row=False):
            check_tensor(x, "x", dtype=torch.float32, op="strict.linear_dynamic")
            if x.shape[-1] != packed.k:
                raise KernelInputError(f"strict.linear_dynamic: x has {{x.shape[-1]}} features, weight {{packed.k}}")
            return super().linear_dynamic(x, packed, bias, per_row)

        def conv2d(self, x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu=False):
            check_tensor(x_q.contiguous(), "x_q", dtype=self.act_dtype, ndim=4, op="strict.conv2d")
            if x_q.shape[1] != packed.weight.shape[1] * packed.groups:
                raise KernelInputError("strict.conv2d: channel count does not match the weight")
            return super().conv2d(x_q, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu)

    class KitQuantizer(ReferenceQuantizer):
        backend_name = "{name}"

    class KitPlugin:
        @quantplug.hookimpl
        def quantplug_register_backends(self, register):
            register(quantplug.Backend(
                name="{name}", distribution="quantplug", version=quantplug.__version__,
                description="kit self-test", quantizer_factory=KitQuantizer,
                backend_config=reference_backend_config(), modes=("static", "dynamic", "qat"),
                kernels=StrictKernels()))

    quantplug.register_plugin(KitPlugin(), name="{name}", distribution="quantplug")
''')

_TEST = textwrap.dedent('''
    import pytest
    from quantplug.testing.suite import *  # noqa: F401,F403

    @pytest.fixture(scope="session")
    def backend_name():
        return "{name}"

    class TestErrors(TestErrors):  # noqa: F405 - overriding one test, the documented way
        def test_unknown_backend_name_says_what_to_install(self):
            pytest.skip("overridden by the kit self-test")
''')


@pytest.fixture
def kit_dir(pytester, fresh_registry):
    def make(name, broken):
        pytester.makeconftest(_CONFTEST.format(name=name, broken=broken))
        pytester.makepyfile(test_conformance=_TEST.format(name=name))
        return pytester

    yield make
    registry.reset()


def test_suite_passes_for_backend_following_the_contract(kit_dir):
    # The flow and serialization classes run in test_conformance_reference.py and test_scaffold.py.
    result = kit_dir("kitgood", False).runpytest("-q", "-rs", "-p", "no:cacheprovider", "-k",
                                                 "not TestGraphFlow and not TestSerialization")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()[-3000:]
    assert outcomes["passed"] >= 65  # kernel tests ran (not skipped): the backend has kernels
    assert "overridden by the kit self-test" in result.stdout.str()


def test_suite_catches_an_off_by_one_kernel(kit_dir):
    result = kit_dir("kitbroken", True).runpytest("-q", "-p", "no:cacheprovider", "-k", "static_linear_matches")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()[-3000:]
    assert "outputs differ" in result.stdout.str()


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
