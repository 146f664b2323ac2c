"""The installed distribution is found through its entry point and registers ``fbgemm``."""

import subprocess
import sys
from importlib import metadata
from types import SimpleNamespace

import pytest

import quantplug
from quantplug import KernelBuildMismatchError


def test_entry_point_of_the_installed_distribution():
    eps = [ep for ep in metadata.entry_points(group="quantplug.backends") if ep.name == "fbgemm"]
    assert len(eps) == 1
    ep = eps[0]
    assert ep.value == "quantplug_fbgemm.plugin"
    assert ep.dist is not None and ep.dist.name == "quantplug-fbgemm"
    import quantplug_fbgemm

    assert ep.dist.version == quantplug_fbgemm.__version__
    # installed, not imported from the source tree
    assert "site-packages" in quantplug_fbgemm.__file__ or "dist-packages" in quantplug_fbgemm.__file__


def test_get_backend_returns_fbgemm():
    import quantplug_fbgemm
    from quantplug_fbgemm.kernels import FbgemmKernels

    backend = quantplug.get_backend("fbgemm")
    assert backend.name == "fbgemm" and backend.aliases == ()
    assert backend.names == ("fbgemm",)
    assert backend.distribution == "quantplug-fbgemm"
    assert backend.version == quantplug_fbgemm.__version__
    assert set(backend.modes) == {"static", "dynamic", "qat"}
    assert isinstance(backend.kernels, FbgemmKernels)
    assert backend.kernels is quantplug_fbgemm.load_kernels()
    assert backend.kernel_isa() == backend.kernels.usable_isas()[0]
    assert backend.extras["torch_engine"] == "fbgemm"
    assert isinstance(backend.get_quantizer(), quantplug_fbgemm.FbgemmQuantizer)
    assert backend.backend_config.name == "fbgemm"
    assert isinstance(quantplug.get_quantizer("fbgemm", is_dynamic=True), quantplug_fbgemm.FbgemmQuantizer)


def test_cli_lists_fbgemm_with_its_isa_and_quantizer_needs_no_kernels():
    # one fresh interpreter (torch import dominates the cost) checks two things:
    # 1. the quantizer is usable without loading the compiled kernels (lazy import);
    # 2. `quantplug backends` (the CLI entry point) lists fbgemm with the ISA it uses here.
    code = ("import sys, quantplug_fbgemm; q = quantplug_fbgemm.FbgemmQuantizer(); "
            "print('lazy', 'quantplug_fbgemm._kernels' not in sys.modules); "
            "from quantplug.cli import main; sys.exit(main(['backends']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "lazy True"
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("fbgemm "))
    isa = quantplug.get_backend("fbgemm").kernel_isa()
    assert "quantplug-fbgemm" in line and isa in line.split()
    assert "failed to load" not in out.stdout


def test_stale_build_is_refused():
    from quantplug_fbgemm.kernels import FbgemmKernels, load_kernels

    real = load_kernels()
    def fake(version=b"0.0.0-old", api=None):
        lib = SimpleNamespace(qp_build_version=lambda: real.ffi.new("char[]", version),
                              qp_runtime_api_version=lambda: real.lib.qp_runtime_api_version() if api is None else api)
        return SimpleNamespace(ffi=real.ffi, __name__="quantplug_fbgemm._kernels", lib=lib)

    with pytest.raises(KernelBuildMismatchError, match=r"compiled for quantplug-fbgemm 0\.0\.0-old.*pip install --force-reinstall"):
        FbgemmKernels(fake())
    with pytest.raises(KernelBuildMismatchError, match=r"C runtime API 999.*--no-deps quantplug-fbgemm"):
        FbgemmKernels(fake(api=999))


def test_missing_build_gives_a_clear_import_error(monkeypatch):
    import quantplug_fbgemm.kernels as kmod

    monkeypatch.setattr(kmod, "_KERNELS", None)
    monkeypatch.setitem(sys.modules, "quantplug_fbgemm._kernels", None)  # import now fails
    with pytest.raises(ImportError, match="quantplug_fbgemm._kernels is not built.*pip install --force-reinstall --no-deps quantplug-fbgemm"):
        kmod.load_kernels()
