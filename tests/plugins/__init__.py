"""Fixture plugins used by the discovery tests (registered by hand, never installed)."""
