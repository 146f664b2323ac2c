"""The hooks a quantplug plugin can implement.

A plugin is any Python object (usually a module) with functions named like the
specifications below and marked with ``@quantplug.hookimpl``. Installed plugins
are found through the entry-point group ``quantplug.backends``::

    # pyproject.toml of a plugin distribution
    [project.entry-points."quantplug.backends"]
    mybackend = "quantplug_mybackend.plugin"

Each hook receives a ``register`` callback rather than returning a list (the
pattern of simonw/llm): the core keeps name and alias bookkeeping, duplicate
checks and error attribution in one place.

Hooks are called once, lazily, on the first call to ``get_backend``,
``get_quantizer``, ``list_backends`` or the ``quantplug`` command line. A
plugin whose hook raises is reported with a ``PluginLoadWarning`` naming its
distribution; the other plugins still load.

The core's own parts (the pure-PyTorch ``reference`` backend, the built-in
observers and configs) register through these same hooks.
"""

from __future__ import annotations

from typing import Callable

import pluggy

__all__ = [
    "hookspec",
    "hookimpl",
    "quantplug_register_backends",
    "quantplug_register_observers",
    "quantplug_register_configs",
]

PROJECT_NAME = "quantplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def quantplug_register_backends(register: Callable[..., None]) -> None:
    """Register the backends this plugin provides.

    Called once per process, when the registry first loads.

    :param register: ``register(backend, aliases=())``. ``backend`` is a
        :class:`quantplug.Backend`; ``aliases`` adds names on top of
        ``backend.aliases``. Registering a name or alias that another plugin
        already claimed raises :class:`quantplug.errors.BackendConflictError`.
    :returns: nothing; results go through ``register``.

    Example::

        @quantplug.hookimpl
        def quantplug_register_backends(register):
            register(quantplug.Backend(
                name="mybackend",
                distribution="quantplug-mybackend",
                version=__version__,
                description="int8 kernels for MyChip",
                quantizer_factory=MyQuantizer,
                backend_config=my_backend_config(),
                modes=("static", "dynamic"),
                kernels=MyKernels(),
            ), aliases=("mychip",))
    """


@hookspec
def quantplug_register_observers(register: Callable[..., None]) -> None:
    """Register observer classes under a name.

    Called once per process, when the registry first loads. Names let configs
    and saved recipes refer to observers as data (``"minmax"``,
    ``"histogram"``) instead of as Python objects.

    :param register: ``register(name, observer_class)``; a name registered
        twice raises ``BackendConflictError``.
    :returns: nothing.

    Example::

        @quantplug.hookimpl
        def quantplug_register_observers(register):
            register("entropy", EntropyObserver)
    """


@hookspec
def quantplug_register_configs(register: Callable[..., None]) -> None:
    """Register eager-flow configuration classes and their module transforms.

    Called once per process, when the registry first loads. A config class is a
    dataclass deriving from ``quantplug.configs.BaseConfig``; the transform
    swaps one ``nn.Module`` for its quantized form. After registration,
    ``quantplug.quantize_(model, MyConfig())`` works without touching the core.

    :param register: ``register(config_class, transform)`` where
        ``transform(module, config, backend) -> nn.Module``.
    :returns: nothing.

    Example::

        @quantplug.hookimpl
        def quantplug_register_configs(register):
            register(MyInt2WeightOnlyConfig, swap_linear_for_int2)
    """
