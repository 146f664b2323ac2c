"""The plugin-author conformance suite, run in the core-only environment with real kernels.

This is what a plugin's ``tests/test_conformance.py`` contains (one import, the fixture naming
the backend), run against ``refk``: the core's ``reference`` quantizer and BackendConfig with
the kernel contract itself (:class:`quantplug.reference_kernels.ReferenceKernels`, plus the
input checks a plugin's wrappers make) as its kernel library. Every class of the suite then
executes here without a plugin installed: discovery, quantizer, kernels (against the contract:
this checks the suite and the contract agree), graph and eager flows, serialization, errors.

``refk`` ships in no distribution of its own, so it is registered as part of ``quantplug``
(which is installed at the right version); its entry-point test skips, as for the built-in
backend. The remaining skips are honest: checks for modes the backend declares (the "undeclared
mode is refused" ones) or for constraints its BackendConfig does not impose.
"""

import pytest

import quantplug
import quantplug.registry as registry
from quantplug.testing.suite import *  # noqa: F401,F403
from tests import refkernels_backend as refk


@pytest.fixture(scope="session")
def backend_name():
    registry.reset()
    refk.register(quantplug.__version__, distribution="quantplug")
    yield refk.NAME
    registry.reset()
