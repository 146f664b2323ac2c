"""quantplug's backend conformance suite (quantplug.testing), run against the installed fbgemm backend."""

import pytest

from quantplug.testing.suite import *  # noqa: F401,F403


@pytest.fixture(scope="session")
def backend_name():
    return "fbgemm"
