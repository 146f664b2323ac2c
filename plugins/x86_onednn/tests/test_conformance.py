"""The core's backend conformance suite, run against ``x86_onednn``."""

import pytest

from quantplug.testing.suite import *  # noqa: F401,F403


@pytest.fixture(scope="session")
def backend_name():
    return "x86_onednn"
