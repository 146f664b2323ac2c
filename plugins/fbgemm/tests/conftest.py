"""Fixtures of the fbgemm plugin tests (run against the INSTALLED distribution)."""

import pytest
import torch

from quantplug.reference_kernels import ReferenceKernels


@pytest.fixture(scope="session")
def kernels():
    """The process-wide compiled kernel library of the installed plugin."""
    from quantplug_fbgemm.kernels import load_kernels

    return load_kernels()


@pytest.fixture(scope="session")
def ref():
    """The core's pure-PyTorch kernels with fbgemm's activation numerics (uint8, 0..127)."""
    return ReferenceKernels(torch.uint8, (0, 127))


@pytest.fixture(scope="session")
def isas(kernels):
    """Every ISA path compiled in that this CPU can run (scalar included)."""
    return kernels.usable_isas()


@pytest.fixture
def each_thread_count():
    """run(fn): calls fn() with torch at 1 and then 2 threads (the count is restored after)."""
    before = torch.get_num_threads()

    def run(fn, counts=(1, 2)):
        for threads in counts:
            torch.set_num_threads(threads)
            fn()

    yield run
    torch.set_num_threads(before)
