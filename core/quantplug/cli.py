"""The ``quantplug`` command line (also ``python -m quantplug``).

``quantplug backends`` prints every installed backend with its version,
aliases, modes and the kernel ISA it will use on this machine;
``quantplug backends --matrix`` prints the ops x backends x modes table of
``docs/backends.md`` (derived from each backend's ``BackendConfig``), and
``--write-doc docs/backends.md`` refreshes that file's generated section.
``quantplug new-backend NAME [--path DIR]`` scaffolds a backend plugin package.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "format_backends_table", "format_backend_matrix", "write_backend_matrix"]

MATRIX_BEGIN = "<!-- BEGIN GENERATED: quantplug backends --matrix -->"
MATRIX_END = "<!-- END GENERATED -->"


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


def _dtype_label(d) -> str:
    name = getattr(d.dtype, "name", None) or str(d.dtype).removeprefix("torch.")
    lo, hi = d.quant_min_lower_bound, d.quant_max_upper_bound
    return f"{name}[{lo}..{hi}]" if lo is not None and hi is not None else name


def _pattern_modes(pc) -> list[str]:
    """Short mode tags of one pattern's dtype configs: S static, D dynamic, W8/W4 weight-only."""
    tags = []
    for dc in pc.dtype_configs:
        w = dc.weight_dtype
        w_name = str(getattr(w.dtype, "name", w.dtype)) if w is not None else ""
        if dc.is_dynamic:
            tag = "D"
        elif dc.input_dtype is None and w is not None:
            tag = "W4" if "4" in w_name else "W8"
        else:
            tag = "S"
        if tag not in tags:
            tags.append(tag)
    return tags


def format_backend_matrix() -> str:
    """Markdown: modes and numerics per backend, then ops x backends (from each ``BackendConfig``).

    A cell lists the modes whose dtype configs accept the pattern (``S`` static
    int8, ``D`` dynamic, ``W8``/``W4`` weight-only) and ``k`` when a backend
    kernel runs it after lowering (otherwise it stays in reference q/dq form).
    """
    from . import list_backends
    from .testing.capabilities import capabilities

    backends = list_backends()
    out = ["| backend | distribution | modes (graph flow) | eager-only modes | activations | weights | "
           "dynamic per row | kernel methods |", "|---|---|---|---|---|---|---|---|"]
    for b in backends:
        c = capabilities(b)
        act = f"{str(c.act_dtype).removeprefix('torch.')} {c.act_range[0]}..{c.act_range[1]}" + \
            (" symmetric" if c.act_symmetric else "")
        wt = f"{c.weight_range[0]}..{c.weight_range[1]}" + (" symmetric" if c.weight_symmetric else "") + \
            (" per-channel" if c.per_channel else " per-tensor") + (", int4 groups" if c.int4 else "")
        kernels = ", ".join(k for k, has in (("linear", c.static_linear), ("linear_dynamic", c.dynamic_linear),
                                             ("conv2d", c.conv2d_kernel), ("add", c.add_kernel)) if has) or "none"
        per_row = ("yes" if c.dynamic_per_row else "no (per tensor)") if c.dynamic_linear else "-"
        eager_only = ", ".join(m for m in c.modes if m not in c.graph_modes) or "-"
        out.append(f"| `{b.name}` | `{b.distribution}` | {', '.join(c.graph_modes)} | {eager_only} | {act} | {wt} | "
                   f"{per_row} | {kernels} |")
    patterns: list[tuple[str, ...]] = []
    for b in backends:
        for pc in b.backend_config.configs:
            if pc.pattern not in patterns:
                patterns.append(pc.pattern)
    out += ["", "| op pattern | " + " | ".join(f"`{b.name}`" for b in backends) + " |",
            "|---|" + "---|" * len(backends)]
    for pattern in patterns:
        cells = []
        for b in backends:
            pc = b.backend_config.get(pattern)
            if pc is None:
                cells.append("-")
                continue
            tags = ",".join(_pattern_modes(pc)) or "S"
            cells.append(f"{tags} k" if pc.kernel else tags)
        out.append(f"| {'-'.join(pattern)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_backend_matrix(path: str | Path) -> bool:
    """Replace the generated section of ``path`` with :func:`format_backend_matrix`; True if it changed."""
    path = Path(path)
    text = path.read_text()
    pattern = re.compile(re.escape(MATRIX_BEGIN) + ".*?" + re.escape(MATRIX_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no section between {MATRIX_BEGIN!r} and {MATRIX_END!r}")
    new = pattern.sub(lambda _m: f"{MATRIX_BEGIN}\n{format_backend_matrix()}\n{MATRIX_END}", text)
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quantplug`` console script."""
    parser = argparse.ArgumentParser(prog="quantplug", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("backends", help="list installed backends and the kernel ISA each uses here")
    lst.add_argument("--matrix", action="store_true", help="print the ops x backends x modes markdown table")
    lst.add_argument("--write-doc", metavar="PATH", help="refresh the generated table in PATH (docs/backends.md)")
    new = sub.add_parser("new-backend", help="scaffold a backend plugin package (quantplug-NAME)")
    new.add_argument("name", help="backend name, e.g. mychip (package quantplug_mychip)")
    new.add_argument("--path", default=".", help="parent directory of the new project (default: .)")
    new.add_argument("--force", action="store_true", help="overwrite an existing project directory")
    args = parser.parse_args(argv)
    if args.command == "backends":
        if args.write_doc:
            try:
                changed = write_backend_matrix(args.write_doc)
            except (OSError, ValueError) as exc:
                print(f"quantplug backends --write-doc: {exc}", file=sys.stderr)
                return 2
            print(f"{args.write_doc}: {'updated' if changed else 'already up to date'}")
        elif args.matrix:
            print(format_backend_matrix())
        else:
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
