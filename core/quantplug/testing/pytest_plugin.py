"""pytest plugin adding ``--quantplug-backend=NAME`` for the conformance suite.

Run the whole suite against an installed backend without writing a test file::

    pytest -p quantplug.testing.pytest_plugin --quantplug-backend=fbgemm --pyargs quantplug.testing.suite

The suite's ``backend_name`` fixture reads the option.
"""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    """Register ``--quantplug-backend``."""
    parser.addoption("--quantplug-backend", action="store", default=None, metavar="NAME",
                     help="quantplug backend (name or alias) the conformance suite tests")
