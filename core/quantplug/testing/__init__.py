"""The plugin-author kit: a conformance suite every quantplug backend runs from its own tests.

A backend adopts the whole suite with one import and one fixture, in the
style of SQLAlchemy's dialect suite and fsspec's abstract tests::

    # plugins/mychip/tests/test_conformance.py
    import pytest
    from quantplug.testing.suite import *  # noqa: F401,F403

    @pytest.fixture(scope="session")
    def backend_name():
        return "mychip"

or without writing a file, with the pytest option this package provides::

    pytest -p quantplug.testing.pytest_plugin --quantplug-backend=mychip --pyargs quantplug.testing.suite

What runs is decided by the backend's *capabilities*, read from the backend
itself (:func:`capabilities`): its modes, the kernel methods its library has
(``linear``, ``linear_dynamic``, ``conv2d``, ``add``), the patterns of its
``BackendConfig`` and the numerics of its quantizer. Tests are tagged with the
capabilities they need (``@requires.static_linear``), never with backend
names; a test whose capability is missing is skipped with the reason.

A backend that legitimately cannot pass a test overrides it by subclassing
the test class under the same name::

    class TestKernels(TestKernels):           # noqa: F405 - from the star import
        def test_add_matches_reference(self):
            pytest.skip("mychip's add rounds half away from zero; covered by test_mychip_add")

Nothing here imports a plugin: the suite talks to the backend through the
registry (``quantplug.get_backend``) only.
"""

from __future__ import annotations

from .capabilities import Capabilities, capabilities, mode_options, reference_kernels_for

__all__ = ["Capabilities", "capabilities", "mode_options", "reference_kernels_for"]
