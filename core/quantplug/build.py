"""Build support for plugins' cffi kernels (used at install time, not at run time).

This module imports only the standard library and cffi: a plugin's build runs
in pip's isolated build environment, where neither torch nor an installed
quantplug exists. A plugin's ``_ffi_build.py`` therefore loads this file by
path (from the source tree, or from an installed quantplug) and calls
:func:`make_ffi`::

    ffi = build.make_ffi(
        "quantplug_fbgemm._kernels",
        header=HERE / "csrc" / "fbgemm_kernels.h",
        sources=[HERE / "csrc" / "gemm.c", ...],
        version=VERSION,
    )

What it does for every plugin, so none of them repeats it:

* reads the cffi declarations from the plugin header between the markers
  ``QP_CDEF_BEGIN`` / ``QP_CDEF_END`` (declarations are never written twice),
  and prepends the shared runtime's (``qp_runtime.h``);
* compiles the shared runtime (``csrc/qp_runtime.c``, ``qp_quantize.c``, ``qp_pool.c``) into the extension;
* embeds the plugin version (``qp_build_version()``), which the Python side
  checks at import so a stale build raises instead of computing garbage;
* picks portable compiler flags: never ``-march=native`` — SIMD paths are
  compiled through function ``target`` attributes and chosen at run time.

Environment overrides (read at build time):

``QUANTPLUG_CFLAGS``     extra compiler flags, appended.
``QUANTPLUG_SANITIZE``   e.g. ``address,undefined``: build with sanitizers.
``QUANTPLUG_OPT``        optimisation level flag, default ``-O3``.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["get_include", "runtime_sources", "read_cdef", "compiler_flags", "linker_flags", "make_ffi"]

_HERE = Path(__file__).resolve().parent
_CDEF_RE = re.compile(r"/\*\s*QP_CDEF_BEGIN\s*\*/(.*?)/\*\s*QP_CDEF_END\s*\*/", re.S)


def get_include() -> str:
    """Directory holding ``quantplug/qp_runtime.h`` and ``quantplug/qp_requant.h``."""
    return str(_HERE / "csrc" / "include")


#: Shared C sources compiled into every plugin extension. They are
#: ``#include``d into the cffi-generated module rather than listed as
#: sources, because setuptools refuses source paths outside the plugin.
RUNTIME_SOURCES = ("qp_runtime.c", "qp_quantize.c", "qp_pool.c")


#: Headers of the shared C API; their CDEF blocks are exposed to Python by every plugin.
SHARED_HEADERS = ("qp_runtime.h", "qp_quantize.h", "qp_pool.h")


def runtime_sources() -> list[str]:
    """Absolute paths of the shared runtime C files every plugin extension compiles in."""
    return [str(_HERE / "csrc" / name) for name in RUNTIME_SOURCES]


def read_cdef(header: str | os.PathLike[str]) -> str:
    """The cffi declarations of ``header``: every block between the CDEF markers.

    Raises ``ValueError`` when the header has no marked block, since a header
    without one would silently export nothing to Python.
    """
    text = Path(header).read_text()
    blocks = _CDEF_RE.findall(text)
    if not blocks:
        raise ValueError(f"{header}: no /* QP_CDEF_BEGIN */ ... /* QP_CDEF_END */ block")
    return "\n".join(blocks)


def compiler_flags(machine: str | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Compiler flags for the kernels on ``machine`` (default: this one).

    The baseline is the architecture's minimum (x86-64: SSE2; aarch64:
    ARMv8-A with NEON), so the extension loads on any CPU of that
    architecture; faster paths exist behind run-time checks.
    """
    env = os.environ if env is None else env
    machine = (machine or platform.machine()).lower()
    flags = [env.get("QUANTPLUG_OPT", "-O3"), "-std=gnu11", "-fno-strict-aliasing", "-fvisibility=hidden"]
    if machine in ("aarch64", "arm64"):
        flags.append("-march=armv8-a")
    flags += sanitizer_flags(env)
    flags += shlex.split(env.get("QUANTPLUG_CFLAGS", ""))
    return flags


def sanitizer_flags(env: Mapping[str, str] | None = None) -> list[str]:
    """``-fsanitize=...`` flags requested by ``QUANTPLUG_SANITIZE`` (empty if unset)."""
    env = os.environ if env is None else env
    wanted = [s.strip() for s in env.get("QUANTPLUG_SANITIZE", "").split(",") if s.strip()]
    allowed = {"address", "undefined"}
    bad = set(wanted) - allowed
    if bad:
        raise ValueError(f"QUANTPLUG_SANITIZE: unsupported sanitizers {sorted(bad)}; use {sorted(allowed)}")
    if not wanted:
        return []
    flags = [f"-fsanitize={','.join(wanted)}", "-fno-omit-frame-pointer", "-g"]
    if "undefined" in wanted:
        flags.append("-fno-sanitize-recover=undefined")  # make UB fatal, so tests see it
    return flags


def linker_flags(env: Mapping[str, str] | None = None) -> list[str]:
    """Linker flags: pthreads, libm and any sanitizer runtimes."""
    return ["-lpthread", "-lm"] + sanitizer_flags(env)


def _relative(path: str | os.PathLike[str]) -> str:
    # setuptools rejects absolute source paths; the build runs from the plugin root.
    p = Path(path)
    return os.path.relpath(p) if p.is_absolute() else str(p)


def make_ffi(
    module_name: str,
    *,
    header: str | os.PathLike[str],
    sources: Iterable[str | os.PathLike[str]],
    version: str,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    machine: str | None = None,
):
    """Create the ``cffi.FFI`` object for a plugin's kernel module (API mode).

    :param module_name: dotted name of the extension, e.g. ``"quantplug_fbgemm._kernels"``.
    :param header: the plugin's public header; its CDEF block is the Python API.
    :param sources: the plugin's C files.
    :param version: the plugin's version, embedded and checked at import.
    """
    import cffi  # imported here so this module can be read without cffi installed

    header = Path(header)
    ffi = cffi.FFI()
    shared = [Path(get_include()) / "quantplug" / h for h in SHARED_HEADERS]
    ffi.cdef("\n".join(read_cdef(h) for h in [*shared, header]))
    ffi.set_source(
        module_name,
        "".join(f'#include "quantplug/{h}"\n' for h in SHARED_HEADERS) + f'#include "{header.name}"\n' + "".join(f'#include "{name}"\n' for name in RUNTIME_SOURCES),
        sources=[_relative(s) for s in sources],
        include_dirs=[get_include(), str(_HERE / "csrc"), str(header.parent), *map(str, include_dirs)],
        define_macros=[("QP_BUILD_VERSION", f'"{version}"')],
        extra_compile_args=compiler_flags(machine),
        extra_link_args=linker_flags(),
    )
    return ffi
