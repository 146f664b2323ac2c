"""The plugin-author conformance suite, run against the core's own ``reference`` backend.

This is exactly what a plugin's ``tests/test_conformance.py`` contains: one import and the
fixture naming the backend. The reference backend has no kernels, so the kernel tests skip
(by capability) and the flow, serialization and error tests run.
"""

import pytest

from quantplug.testing.suite import *  # noqa: F401,F403


@pytest.fixture(scope="session")
def backend_name():
    return "reference"
