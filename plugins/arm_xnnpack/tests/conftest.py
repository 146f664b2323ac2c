"""Fixtures for the xnnpack plugin tests: the installed backend, its kernels and the core's reference kernels."""

import pytest
import torch

import quantplug
from quantplug.reference_kernels import ReferenceKernels

@pytest.fixture(scope="session")
def backend():
    """The backend as the registry loads it from the installed distribution's entry point."""
    return quantplug.get_backend("xnnpack")


@pytest.fixture(scope="session")
def kernels(backend):
    """The compiled kernel library (``XNNPACKKernels``)."""
    return backend.kernels


@pytest.fixture(scope="session")
def ref():
    """quantplug's pure-PyTorch kernels with XNNPACK's activation numerics (int8, [-128, 127])."""
    return ReferenceKernels(act_dtype=torch.int8, act_range=(-128, 127), dynamic_symmetric=False)


@pytest.fixture(params=["scalar", "avx2", "avx512", "avx512vnni", "neon", "neondot"])
def isa(request, kernels):
    """Every ISA path; paths this build or CPU cannot run are skipped (the C driver covers ARM under qemu)."""
    if request.param not in kernels.usable_isas():
        pytest.skip(f"ISA path {request.param!r} is not usable on this machine "
                    f"(usable: {kernels.usable_isas()}); csrc/tests/run_arm_tests.sh covers the ARM paths")
    with kernels.use_isa(request.param):
        yield request.param
