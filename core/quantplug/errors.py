"""Exceptions raised by quantplug.

Every error says what is wrong *and* what to do about it: which layer, which
tensor, which distribution to install. They all derive from ``QuantplugError``
so callers can catch the family, and also from the builtin a Python user would
expect (``KeyError`` for unknown names, ``ValueError`` for bad values, ...).
"""

from __future__ import annotations

import warnings

__all__ = [
    "QuantplugError",
    "BackendNotFoundError",
    "BackendConflictError",
    "PluginLoadWarning",
    "ConstraintViolationError",
    "KernelInputError",
    "KernelBuildMismatchError",
    "CalibrationError",
]


class QuantplugError(Exception):
    """Base class of every error quantplug raises on purpose."""


class BackendNotFoundError(QuantplugError, KeyError):
    """A backend name that no installed plugin registered.

    Subclasses ``KeyError`` so ``except KeyError`` works, but prints its
    message plainly (``KeyError`` would show it quoted, newlines escaped).
    """

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class BackendConflictError(QuantplugError, RuntimeError):
    """Two plugins claimed the same backend name or alias."""


class PluginLoadWarning(UserWarning):
    """A plugin distribution failed to load; the other plugins still loaded."""


class ConstraintViolationError(QuantplugError, ValueError):
    """A quantizer annotated something its backend's kernels cannot run."""


class KernelInputError(QuantplugError, ValueError):
    """A tensor handed to a C kernel has the wrong dtype, shape, layout or device."""


class KernelBuildMismatchError(QuantplugError, ImportError):
    """A compiled kernel module was built for another version of its plugin."""


class CalibrationError(QuantplugError, RuntimeError):
    """Observers saw no data before ``convert``; qparams would be meaningless."""


def warn_plugin_failed(distribution: str, error: BaseException) -> None:
    """Emit the standard warning for a plugin distribution that failed to load."""
    warnings.warn(
        f"quantplug: plugin distribution {distribution!r} failed to load and was skipped: "
        f"{type(error).__name__}: {error}. The other backends are still available; "
        f"reinstall it (pip install --force-reinstall {distribution}) or uninstall it.",
        PluginLoadWarning,
        stacklevel=3,
    )
