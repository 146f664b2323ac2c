"""Fixtures of the qnnpack plugin tests (run against the INSTALLED distribution).

The plugin must be pip-installed (non-editable); these tests import it from
site-packages and never from the source tree.
"""

import pytest
import torch

import quantplug


@pytest.fixture(scope="session")
def backend():
    """The registered ``qnnpack`` backend (found through its entry point)."""
    return quantplug.get_backend("qnnpack")


@pytest.fixture(scope="session")
def kernels(backend):
    """The compiled kernel library of the installed plugin."""
    return backend.kernels


@pytest.fixture(autouse=True)
def _restore_isa_and_threads():
    """Every test starts and ends with the automatic ISA choice and torch's thread count."""
    threads = torch.get_num_threads()
    yield
    quantplug.get_backend("qnnpack").kernels.set_isa(None)
    torch.set_num_threads(threads)
