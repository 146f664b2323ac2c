"""Integration tests need every official plugin: fail loudly (never skip) when one is missing."""

import pytest

import quantplug

OFFICIAL = ("fbgemm", "x86_onednn", "xnnpack", "qnnpack")


@pytest.fixture(scope="session", autouse=True)
def _all_plugins_installed():
    missing = []
    for name in OFFICIAL:
        try:
            quantplug.get_backend(name)
        except KeyError as err:
            missing.append(str(err))
    if missing:
        pytest.fail("integration tests need all four plugins installed:\n" + "\n".join(missing), pytrace=False)


@pytest.fixture(params=OFFICIAL)
def backend(request):
    """Each official backend in turn."""
    return quantplug.get_backend(request.param)
