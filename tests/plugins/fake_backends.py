"""Small plugin objects for the registry tests: a good one, a clashing one, a broken one."""

import torch

import quantplug
from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config


def _backend(name, aliases=()):
    return quantplug.Backend(
        name=name, distribution=f"fake-{name}", version="9.9", description="test backend",
        quantizer_factory=ReferenceQuantizer, backend_config=reference_backend_config(), aliases=aliases,
    )


class GoodPlugin:
    """Registers backend ``fake`` with alias ``fk``."""

    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        register(_backend("fake", aliases=("fk",)))


class ClashingPlugin:
    """Claims the alias ``fk`` that GoodPlugin already owns."""

    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        register(_backend("other", aliases=("fk",)))


class RaisingPlugin:
    """Its hook raises, as a plugin with a bug at registration would."""

    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        raise RuntimeError("kernel library missing")


class MisspelledPlugin:
    """A hook implementation whose name matches no spec (must fail loudly)."""

    @quantplug.hookimpl
    def quantplug_register_backend(self, register):  # missing trailing "s"
        pass


class NotABackendPlugin:
    """Registers something that is not a Backend."""

    @quantplug.hookimpl
    def quantplug_register_backends(self, register):
        register({"name": "dict"})


assert torch is not None
