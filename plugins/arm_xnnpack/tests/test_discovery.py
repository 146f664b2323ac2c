"""The plugin is found through the entry point of the INSTALLED distribution, under its name and alias."""

import subprocess
import sys
from importlib import metadata

import pytest

import quantplug
from quantplug.cli import format_backends_table
from quantplug.errors import KernelBuildMismatchError

import quantplug_arm_xnnpack as pkg
from quantplug_arm_xnnpack.kernels import XNNPACKKernels

BACKEND, ALIASES = "xnnpack", ("arm_xnnpack",)


def test_entry_point_of_installed_distribution():
    eps = [ep for ep in metadata.entry_points(group="quantplug.backends") if ep.value == "quantplug_arm_xnnpack.plugin"]
    assert len(eps) == 1, "quantplug-arm-xnnpack must declare exactly one quantplug.backends entry point"
    assert eps[0].dist is not None and eps[0].dist.name == "quantplug-arm-xnnpack"
    assert eps[0].dist.version == pkg.__version__
    # installed, not imported from the source tree
    assert "plugins/arm_xnnpack/src" not in pkg.__file__.replace("\\", "/")


@pytest.mark.parametrize("name", (BACKEND, *ALIASES))
def test_get_backend_by_name_and_alias(name):
    b = quantplug.get_backend(name)
    assert b.name == BACKEND and b.aliases == ALIASES
    assert b.distribution == "quantplug-arm-xnnpack" and b.version == pkg.__version__
    assert set(b.modes) == {"static", "dynamic", "weight_only", "qat"}
    assert isinstance(b.kernels, XNNPACKKernels)
    assert b.backend_config.name == BACKEND
    assert quantplug.plugin_errors().get("quantplug-arm-xnnpack") is None


def test_cli_lists_backend_with_isa(backend):
    table = format_backends_table()
    row = next(line for line in table.splitlines() if line.startswith(BACKEND + " "))
    assert "quantplug-arm-xnnpack" in row and "arm_xnnpack" in row
    assert backend.kernels.selected_isa() in row.split()
    out = subprocess.run([sys.executable, "-m", "quantplug", "backends"], capture_output=True, text=True, check=True)
    assert any(line.startswith(BACKEND + " ") and backend.kernel_isa() in line for line in out.stdout.splitlines())


def test_isa_reporting(kernels):
    usable = kernels.usable_isas()
    assert usable[-1] == "scalar" and kernels.selected_isa() == usable[0]
    assert set(kernels.available_isas()) >= set(usable)
    import platform
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert kernels.available_isas() == ["avx512vnni", "avx512", "avx2", "scalar"]
    elif machine in ("aarch64", "arm64"):
        assert kernels.available_isas() == ["neondot", "neon", "scalar"]
    with pytest.raises(ValueError, match="not usable"):
        kernels.set_isa(next(i for i in ("neon", "avx2") if i not in usable))


class _FakeModule:
    """A compiled module whose embedded version is not the package's."""

    def __init__(self, real, version):
        self.__name__ = real.__name__
        self.ffi = real.ffi
        self._version = real.ffi.new("char[]", version.encode())
        real_lib = real.lib

        class Lib:
            def __getattr__(self, name):
                return getattr(real_lib, name)

        self.lib = Lib()
        self.lib.qp_build_version = lambda: self._version


def test_stale_build_is_rejected():
    from quantplug_arm_xnnpack import _kernels

    with pytest.raises(KernelBuildMismatchError, match="quantplug-arm-xnnpack"):
        XNNPACKKernels(_FakeModule(_kernels, "0.0.0-stale"))


def test_missing_build_has_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "quantplug_arm_xnnpack._kernels", None)  # import now fails
    monkeypatch.delattr(pkg, "_kernels", raising=False)
    with pytest.raises(ImportError, match="pip install --force-reinstall --no-deps quantplug-arm-xnnpack"):
        XNNPACKKernels()


def test_public_api():
    for name in ("XNNPACKQuantizer", "get_symmetric_quantization_config", "get_arm_xnnpack_backend_config",
                 "get_int4_weight_only_quantization_config", "XNNPACKKernels", "PackedLinearWeight", "__version__"):
        assert hasattr(pkg, name), name
    assert set(pkg.__all__) <= set(dir(pkg))
