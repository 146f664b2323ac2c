"""Shared fixtures for the core and cross-plugin tests.

``fresh_registry`` gives each test that needs it a registry that forgets
what it loaded before and after the test, so tests that change environment
variables or register fake plugins cannot leak into each other.
"""

import pytest

import quantplug.registry as registry


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry loaded anew inside the test and reset after it."""
    registry.reset()
    yield registry
    registry.reset()
