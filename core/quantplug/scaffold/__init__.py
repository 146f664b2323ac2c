"""``quantplug new-backend NAME``: scaffold a backend plugin package that installs and passes its tests.

The generated project (``quantplug-NAME/``) holds everything a backend needs:

* ``pyproject.toml`` with the ``quantplug.backends`` entry point, and ``setup.py``
  naming the cffi build script;
* ``csrc/NAME_kernels.h`` (the cffi declarations between the CDEF markers) and
  ``csrc/NAME_linear.c``: a scalar int8 linear with quantplug's exact requantization;
* ``src/quantplug_NAME/``: ``plugin.py`` (the hook), ``backend_config.py``,
  ``quantizer.py`` (a ``PatternQuantizer``), ``kernels.py`` (a
  ``CffiKernelLibrary`` with the kernel API), ``_ffi_build.py``, ``_version.py``;
* ``tests/``: the conformance suite (one import) and an example test.

The kernel build reads quantplug's headers and build helper from the *installed*
quantplug, so the plugin is installed with ``pip install --no-build-isolation .``
(see ``_ffi_build.py`` in the generated package).
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from .._version import __version__

__all__ = ["create_backend", "validate_backend_name", "TEMPLATE_SUFFIX"]

TEMPLATE_SUFFIX = ".tmpl"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")
_RESERVED = {"reference", "fbgemm", "qnnpack", "xnnpack", "arm_xnnpack", "x86", "onednn", "x86_onednn"}


def validate_backend_name(name: str) -> str:
    """Return ``name`` if it can name a backend, a package and a C prefix; else raise ``ValueError``."""
    if not _NAME_RE.match(name or "") or name.endswith("_") or "__" in name:
        raise ValueError(f"backend name {name!r}: use 2-31 lowercase letters, digits and single underscores, "
                         f"starting with a letter (it becomes quantplug_{name} and the C prefix {name}_)")
    if keyword.iskeyword(name):
        raise ValueError(f"backend name {name!r} is a Python keyword")
    if name in _RESERVED:
        raise ValueError(f"backend name {name!r} is taken by quantplug or one of its plugins; pick another")
    return name


def _substitutions(name: str) -> dict[str, str]:
    major, minor = (int(p) for p in __version__.split(".")[:2])
    return {
        "__NAME__": name,
        "__PKG__": f"quantplug_{name}",
        "__DIST__": f"quantplug-{name.replace('_', '-')}",
        "__CLASS__": "".join(part.capitalize() for part in name.split("_")),
        "__GUARD__": name.upper(),
        "__QP_MINOR__": f"{major}.{minor}",
        "__QP_NEXT_MINOR__": f"{major}.{minor + 1}",
    }


def _render(text: str, subs: dict[str, str]) -> str:
    for key, value in subs.items():
        text = text.replace(key, value)
    leftover = re.search(r"__[A-Z_]+__", text)
    if leftover and leftover.group() in subs:  # pragma: no cover - guards the template set
        raise RuntimeError(f"unrendered placeholder {leftover.group()}")
    return text


def create_backend(name: str, path: str | Path = ".", *, force: bool = False) -> Path:
    """Write a new backend plugin project for ``name`` under ``path``; returns its directory.

    :param name: the backend name (``get_quantizer(name)``), e.g. ``"mychip"``.
    :param path: parent directory; the project is ``path/quantplug-<name>``.
    :param force: overwrite files of an existing project directory.
    :raises ValueError: invalid name.
    :raises FileExistsError: the directory exists and ``force`` is false.
    """
    validate_backend_name(name)
    subs = _substitutions(name)
    target = Path(path) / subs["__DIST__"]
    if target.exists() and not force:
        raise FileExistsError(f"{target} already exists; choose another --path or remove it")
    template = resources.files(__name__) / "template"
    written = 0
    for rel_parts, src in _walk(template):
        rel = "/".join(rel_parts)
        if not rel.endswith(TEMPLATE_SUFFIX):
            continue
        out = target / _render(rel[: -len(TEMPLATE_SUFFIX)], subs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_render(src.read_text(encoding="utf-8"), subs), encoding="utf-8")
        written += 1
    if written == 0:  # pragma: no cover - a broken install without package data
        raise RuntimeError("quantplug's scaffold templates are missing from this installation")
    return target


def _walk(node, parts: tuple[str, ...] = ()):
    """(path parts, file) for every file under a Traversable, sorted (Traversable has no rglob)."""
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            yield from _walk(child, parts + (child.name,))
        else:
            yield parts + (child.name,), child
