"""The ``quantplug`` command line (also ``python -m quantplug``).

``quantplug backends`` prints every installed backend with its version,
aliases, modes and the kernel ISA it will use on this machine.
``quantplug new-backend NAME [--path DIR]`` scaffolds a backend plugin package.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main", "format_backends_table"]


def format_backends_table() -> str:
    """The ``quantplug backends`` table as text."""
    from . import list_backends, plugin_errors

    rows = [("backend", "distribution", "version", "aliases", "modes", "kernel isa", "cpu features")]
    for b in list_backends():
        rows.append((
            b.name, b.distribution, b.version, ",".join(b.aliases) or "-", ",".join(b.modes),
            b.kernel_isa(), ",".join(b.cpu_features()) or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for dist, err in plugin_errors().items():
        lines.append(f"! {dist} failed to load: {type(err).__name__}: {err}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quantplug`` console script."""
    parser = argparse.ArgumentParser(prog="quantplug", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("backends", help="list installed backends and the kernel ISA each uses here")
    new = sub.add_parser("new-backend", help="scaffold a backend plugin package (quantplug-NAME)")
    new.add_argument("name", help="backend name, e.g. mychip (package quantplug_mychip)")
    new.add_argument("--path", default=".", help="parent directory of the new project (default: .)")
    new.add_argument("--force", action="store_true", help="overwrite an existing project directory")
    args = parser.parse_args(argv)
    if args.command == "backends":
        print(format_backends_table())
        return 0
    if args.command == "new-backend":
        return _new_backend(args.name, args.path, args.force)
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


def _new_backend(name: str, path: str, force: bool) -> int:
    from .scaffold import create_backend

    try:
        target = create_backend(name, path, force=force)
    except (ValueError, FileExistsError) as exc:
        print(f"quantplug new-backend: {exc}", file=sys.stderr)
        return 2
    print(f"created {target}\nnext steps:\n"
          f"  pip install --no-build-isolation {target}    (compiles csrc/ against this quantplug)\n"
          f"  quantplug backends    (lists {name})\n"
          f"  python -m pytest {target / 'tests'}    (the conformance suite)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
