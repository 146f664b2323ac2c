"""The installed distribution is found through its entry point and reports its kernels."""

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import quantplug
from quantplug.errors import KernelBuildMismatchError

import quantplug_qnnpack
from quantplug_qnnpack.kernels import QNNPACKKernels


def test_entry_point_of_installed_distribution():
    eps = importlib.metadata.entry_points(group="quantplug.backends")
    mine = [ep for ep in eps if ep.name == "qnnpack"]
    assert len(mine) == 1
    assert mine[0].value == "quantplug_qnnpack.plugin"
    assert mine[0].dist.name == "quantplug-qnnpack"
    assert mine[0].dist.version == quantplug_qnnpack.__version__
    # installed, not imported from the source tree
    assert "site-packages" in Path(quantplug_qnnpack.__file__).parts


def test_get_backend_by_name_no_aliases(backend):
    assert backend.name == "qnnpack"
    assert backend.aliases == ()
    assert backend.names == ("qnnpack",)
    assert backend.distribution == "quantplug-qnnpack"
    assert backend.version == quantplug_qnnpack.__version__
    assert set(backend.modes) == {"static", "dynamic", "qat"}
    assert quantplug.get_backend("qnnpack") is backend
    assert "qnnpack" in [b.name for b in quantplug.list_backends()]
    assert isinstance(backend.kernels, QNNPACKKernels)


def test_kernel_isas_reported(kernels):
    compiled = kernels.available_isas()
    assert "scalar" in compiled
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert set(compiled) == {"avx512vnni", "avx512", "avx2", "sse2", "scalar"}
    elif machine in ("aarch64", "arm64"):
        assert set(compiled) == {"neondot", "neon", "scalar"}
    usable = kernels.usable_isas()
    assert usable[-1] == "scalar" and kernels.selected_isa() == usable[0]
    assert set(usable) <= set(compiled)


def test_cli_lists_backend_with_isa(kernels):
    out = subprocess.run([sys.executable, "-m", "quantplug", "backends"], capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("qnnpack ")]
    assert len(rows) == 1, out
    row = rows[0]
    assert row[1] == "quantplug-qnnpack" and row[2] == quantplug_qnnpack.__version__
    assert kernels.selected_isa() in row


def test_stale_build_is_refused(kernels):
    import quantplug_qnnpack._kernels as module

    class Stale(QNNPACKKernels):
        pass

    from quantplug.kernels import CffiKernelLibrary

    with pytest.raises(KernelBuildMismatchError, match="pip install --force-reinstall --no-deps quantplug-qnnpack"):
        CffiKernelLibrary(module, plugin_version="0.0.0-other", distribution="quantplug-qnnpack")
    assert Stale(module).selected_isa() == kernels.selected_isa()


def test_public_api():
    for name in ("QNNPACKQuantizer", "get_symmetric_quantization_config", "get_qnnpack_backend_config",
                 "load_kernels", "__version__"):
        assert hasattr(quantplug_qnnpack, name)
    assert quantplug_qnnpack.load_kernels() is quantplug.get_backend("qnnpack").kernels
