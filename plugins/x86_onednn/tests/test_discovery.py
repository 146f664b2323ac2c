"""The plugin is found through the entry point of the INSTALLED distribution."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import quantplug
from quantplug.cli import format_backends_table

DIST = "quantplug-x86-onednn"
NAMES = ("x86_onednn", "x86", "onednn")


def test_entry_point_of_installed_distribution():
    eps = [ep for ep in metadata.entry_points(group="quantplug.backends") if ep.value == "quantplug_x86_onednn.plugin"]
    assert len(eps) == 1, "exactly one quantplug.backends entry point must point at quantplug_x86_onednn.plugin"
    assert eps[0].dist is not None and eps[0].dist.name.replace("_", "-") == DIST
    assert eps[0].name == "x86_onednn"


def test_not_imported_from_the_source_tree():
    import quantplug_x86_onednn

    assert "plugins/x86_onednn/src" not in quantplug_x86_onednn.__file__.replace("\\", "/"), (
        "run the tests from outside the source tree so the installed package is tested")


@pytest.mark.parametrize("name", NAMES)
def test_get_backend_by_name_and_aliases(name):
    b = quantplug.get_backend(name)
    assert b.name == "x86_onednn"
    assert b.distribution == DIST
    assert set(b.aliases) == {"x86", "onednn"}
    assert b.version == metadata.version(DIST)


def test_backend_record():
    from quantplug_x86_onednn import X86OneDNNQuantizer
    from quantplug_x86_onednn.kernels import X86OneDNNKernels

    b = quantplug.get_backend("x86")
    assert b.quantizer_factory is X86OneDNNQuantizer
    assert isinstance(b.kernels, X86OneDNNKernels)
    assert isinstance(b.kernels, quantplug.KernelLibrary)
    assert set(b.modes) == {"static", "dynamic", "weight_only", "qat"}
    assert b.lowering is not None
    assert b.backend_config.name == "x86_onednn"
    assert DIST not in quantplug.plugin_errors()


def test_kernel_version_matches_package():
    import quantplug_x86_onednn
    from quantplug_x86_onednn import _kernels

    assert _kernels.ffi.string(_kernels.lib.qp_build_version()).decode() == quantplug_x86_onednn.__version__


def test_stale_build_is_rejected():
    from quantplug.errors import KernelBuildMismatchError
    from quantplug.kernels import CffiKernelLibrary
    from quantplug_x86_onednn import _kernels

    with pytest.raises(KernelBuildMismatchError, match="force-reinstall"):
        CffiKernelLibrary(_kernels, plugin_version="9.9.9", distribution=DIST)


def test_cli_lists_backend_with_isa():
    b = quantplug.get_backend("x86_onednn")
    table = format_backends_table()
    line = next(line for line in table.splitlines() if line.startswith("x86_onednn"))
    assert DIST in line and "x86,onednn" in line and b.kernel_isa() in line
    out = subprocess.run([sys.executable, "-m", "quantplug", "backends"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("x86_onednn") and b.kernel_isa() in line for line in out.stdout.splitlines())


def test_isa_info(xk):
    assert xk.available_isas()[-1] == "scalar"
    assert {"avx2", "avx512", "avx512vnni"} <= set(xk.available_isas())
    assert xk.selected_isa() == xk.usable_isas()[0]
    assert "scalar" in xk.usable_isas()
    suffix = {"scalar": "8x16c4__scalar", "avx2": "4x16c4__avx2_madd", "avx512": "8x16c4__avx512bw_madd",
              "avx512vnni": "8x16c4__avx512vnni", "avxvnni": "4x16c4__avxvnni"}
    for isa in xk.usable_isas():
        with xk.use_isa(isa):
            assert xk.ukernel_name() == "x86_onednn_qu8_gemm_minmax_ukernel_" + suffix[isa]
    with pytest.raises(ValueError):
        xk.set_isa("neon")
