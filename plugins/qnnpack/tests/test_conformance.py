"""quantplug's backend conformance suite, run against the installed qnnpack backend."""

import pytest

from quantplug.testing.suite import *  # noqa: F401,F403


@pytest.fixture(scope="session")
def backend_name():
    return "qnnpack"
