"""Plugin discovery and the backend registry.

Loading happens lazily and once (guarded by a lock and a flag), the way pytest
and llm do it:

1. A pluggy ``PluginManager`` for project ``quantplug`` gets the hook specs.
2. The core's built-in plugin (reference backend, observers) registers itself.
3. Unless ``QUANTPLUG_DISABLE_PLUGIN_AUTOLOAD`` is set, every entry point in
   the group ``quantplug.backends`` is loaded. ``QUANTPLUG_LOAD_PLUGINS`` (a
   comma-separated list of distribution names) restricts loading to those.
   Each load is wrapped on its own: a plugin that fails to import is reported
   with a ``PluginLoadWarning`` naming its distribution, and the rest load.
4. ``check_pending()`` makes a misspelled hook implementation fail loudly.
5. Each plugin's ``quantplug_register_*`` hooks run one plugin at a time, so a
   hook that raises is attributed to its distribution and skipped.

Explicit registration (``register_plugin``) works with autoload disabled.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

import pluggy

from . import hookspecs
from .backend import Backend
from .errors import BackendConflictError, BackendNotFoundError, warn_plugin_failed

__all__ = [
    "ENTRY_POINT_GROUP",
    "ENV_DISABLE_AUTOLOAD",
    "ENV_LOAD_PLUGINS",
    "KNOWN_DISTRIBUTIONS",
    "get_backend",
    "get_quantizer",
    "list_backends",
    "get_observer_class",
    "get_config_transform",
    "register_plugin",
    "plugin_errors",
    "reset",
]

ENTRY_POINT_GROUP = "quantplug.backends"
ENV_DISABLE_AUTOLOAD = "QUANTPLUG_DISABLE_PLUGIN_AUTOLOAD"
ENV_LOAD_PLUGINS = "QUANTPLUG_LOAD_PLUGINS"

#: Backends the quantplug project publishes, so that an unknown name can be
#: answered with the distribution to install. The core never imports these.
KNOWN_DISTRIBUTIONS = {
    "xnnpack": "quantplug-arm-xnnpack",
    "arm_xnnpack": "quantplug-arm-xnnpack",
    "x86": "quantplug-x86-onednn",
    "onednn": "quantplug-x86-onednn",
    "x86_onednn": "quantplug-x86-onednn",
    "qnnpack": "quantplug-qnnpack",
    "fbgemm": "quantplug-fbgemm",
}

_CORE_DISTRIBUTION = "quantplug"


@dataclass
class _State:
    """Everything the registry knows after loading (one instance per process)."""

    pm: pluggy.PluginManager
    backends: dict[str, Backend] = field(default_factory=dict)  # canonical name -> backend
    names: dict[str, str] = field(default_factory=dict)  # name or alias -> canonical name
    owners: dict[str, str] = field(default_factory=dict)  # name or alias -> distribution
    observers: dict[str, type] = field(default_factory=dict)
    configs: dict[type, Callable[..., Any]] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)  # distribution -> error
    plugin_dists: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution


_lock = threading.RLock()
_state: _State | None = None
_explicit: list[tuple[object, str | None, str]] = []


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def _entry_points() -> Iterable[metadata.EntryPoint]:
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _load_entry_points(state: _State) -> None:
    allowed = os.environ.get(ENV_LOAD_PLUGINS)
    allowed_set = {a.strip() for a in allowed.split(",") if a.strip()} if allowed is not None else None
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        if allowed_set is not None and dist not in allowed_set:
            continue
        if state.pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
            state.pm.register(plugin, name=ep.name)
        except Exception as exc:  # one broken plugin must not take the others down
            state.errors[dist] = exc
            warn_plugin_failed(dist, exc)
            continue
        state.plugin_dists[ep.name] = dist


def _make_register_backend(state: _State, dist: str) -> Callable[..., None]:
    def register(backend: Backend, aliases: Iterable[str] = ()) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(
                f"plugin {dist!r} registered {backend!r}; quantplug_register_backends "
                f"must call register() with a quantplug.Backend"
            )
        names = list(dict.fromkeys((*backend.names, *aliases)))
        for n in names:
            if n in state.names:
                raise BackendConflictError(
                    f"backend name {n!r} is claimed by two plugins: {state.owners[n]!r} "
                    f"(backend {state.names[n]!r}) and {dist!r} (backend {backend.name!r}). "
                    f"Uninstall one of them, or load only one with "
                    f"{ENV_LOAD_PLUGINS}=<distribution>."
                )
        state.backends[backend.name] = backend
        for n in names:
            state.names[n] = backend.name
            state.owners[n] = dist

    return register


def _make_register_observer(state: _State, dist: str) -> Callable[..., None]:
    def register(name: str, observer_class: type) -> None:
        if name in state.observers:
            raise BackendConflictError(
                f"observer name {name!r} registered twice (second time by {dist!r})"
            )
        state.observers[name] = observer_class

    return register


def _make_register_config(state: _State, dist: str) -> Callable[..., None]:
    def register(config_class: type, transform: Callable[..., Any]) -> None:
        if config_class in state.configs:
            raise BackendConflictError(
                f"config {config_class.__name__} registered twice (second time by {dist!r})"
            )
        state.configs[config_class] = transform

    return register


_HOOKS = {
    "quantplug_register_backends": _make_register_backend,
    "quantplug_register_observers": _make_register_observer,
    "quantplug_register_configs": _make_register_config,
}


def _run_hooks(state: _State) -> None:
    for hook_name, make_register in _HOOKS.items():
        caller = getattr(state.pm.hook, hook_name)
        # Oldest registration first, so the core's built-ins come before plugins.
        for impl in reversed(caller.get_hookimpls()):
            dist = state.plugin_dists.get(impl.plugin_name, impl.plugin_name)
            try:
                impl.function(register=make_register(state, dist))
            except BackendConflictError:
                raise
            except Exception as exc:
                state.errors[dist] = exc
                warn_plugin_failed(dist, exc)


def _load() -> _State:
    global _state
    with _lock:
        if _state is not None:
            return _state
        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        state = _State(pm=pm)
        from . import builtin_plugin

        pm.register(builtin_plugin, name="quantplug.builtin")
        state.plugin_dists["quantplug.builtin"] = _CORE_DISTRIBUTION
        if not _truthy(os.environ.get(ENV_DISABLE_AUTOLOAD)):
            _load_entry_points(state)
        for plugin, name, dist in _explicit:
            if not pm.is_registered(plugin):
                pm.register(plugin, name=name)
                state.plugin_dists[pm.get_name(plugin)] = dist
        pm.check_pending()
        _run_hooks(state)
        _state = state
        return state


def register_plugin(plugin: object, *, name: str | None = None, distribution: str | None = None) -> None:
    """Register a plugin object by hand (works with autoload disabled).

    ``distribution`` is the name reported in errors; it defaults to ``name``
    or the object's ``__name__``. Takes effect immediately.
    """
    dist = distribution or name or getattr(plugin, "__name__", repr(plugin))
    with _lock:
        _explicit.append((plugin, name, dist))
        reset(keep_explicit=True)


def reset(*, keep_explicit: bool = False) -> None:
    """Forget everything loaded so the next call loads again (for tests)."""
    global _state
    with _lock:
        _state = None
        if not keep_explicit:
            _explicit.clear()


def _not_found_message(name: str, state: _State) -> str:
    installed = ", ".join(sorted(state.backends)) or "none"
    lines = [f"no quantplug backend named {name!r} is installed (installed backends: {installed})."]
    dist = KNOWN_DISTRIBUTIONS.get(name)
    if dist is not None:
        broken = state.errors.get(dist)
        if broken is not None:
            lines.append(
                f"The distribution {dist!r} is installed but failed to load: "
                f"{type(broken).__name__}: {broken}"
            )
        else:
            lines.append(f"Install it with: pip install {dist}")
    else:
        lines.append(
            f"Backends are found through the {ENTRY_POINT_GROUP!r} entry-point group; "
            f"install the plugin that provides {name!r}."
        )
    if _truthy(os.environ.get(ENV_DISABLE_AUTOLOAD)):
        lines.append(f"Note: {ENV_DISABLE_AUTOLOAD} is set, so installed plugins were not loaded.")
    return " ".join(lines)


def get_backend(name: str) -> Backend:
    """Return the backend registered under ``name`` or one of its aliases.

    Raises :class:`BackendNotFoundError` (a ``KeyError``) that lists the
    installed backends and names the distribution to ``pip install``.
    """
    state = _load()
    canonical = state.names.get(name)
    if canonical is None:
        raise BackendNotFoundError(_not_found_message(name, state))
    return state.backends[canonical]


def get_quantizer(name: str, **options: Any):
    """Build the quantizer of backend ``name``; ``options`` select its mode.

    Example: ``get_quantizer("xnnpack", is_dynamic=True)``.
    """
    return get_backend(name).get_quantizer(**options)


def list_backends() -> list[Backend]:
    """Every registered backend, sorted by name."""
    state = _load()
    return [state.backends[n] for n in sorted(state.backends)]


def get_observer_class(name: str) -> type:
    """The observer class registered under ``name`` (e.g. ``"minmax"``)."""
    state = _load()
    try:
        return state.observers[name]
    except KeyError:
        raise BackendNotFoundError(
            f"no observer named {name!r}; registered observers: {', '.join(sorted(state.observers))}"
        ) from None


def get_config_transform(config_class: type) -> Callable[..., Any]:
    """The module transform registered for an eager-flow config class."""
    state = _load()
    for klass in config_class.__mro__:
        if klass in state.configs:
            return state.configs[klass]
    known = ", ".join(sorted(c.__name__ for c in state.configs)) or "none"
    raise BackendNotFoundError(
        f"no transform is registered for config {config_class.__name__}; registered configs: "
        f"{known}. A plugin registers one through the quantplug_register_configs hook."
    )


def plugin_errors() -> dict[str, BaseException]:
    """Distributions that failed to load, with their errors."""
    return dict(_load().errors)
