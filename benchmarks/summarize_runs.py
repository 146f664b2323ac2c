"""Several saved runs of ``bench_kernels.py`` in one table: per backend and row, the "vs torch
int8" ratio of every run, its median and its range.

Why: on a shared VM one run's ratio for a single row can move by 10% either way (the other core's
jobs, L3 and memory traffic); a target such as ">= 1.0x torch" is read from the median of several
runs, each of which timed ours and torch side by side. Run:

    python benchmarks/summarize_runs.py RUN1.md RUN2.md ... [--threads 1] [--contains linear]
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict

from common import markdown_table

_SECTION = re.compile(r"^### (\S+) \(.*\), (\d+) thread")


def ratios(path: str, threads: int, contains: str) -> dict[tuple[str, str], float]:
    """``(backend, row) -> vs-torch-int8 ratio`` of one saved run (the main tables only)."""
    out: dict[tuple[str, str], float] = {}
    backend, t = None, None
    with open(path) as fh:
        for line in fh:
            m = _SECTION.match(line)
            if m:
                backend, t = m.group(1), int(m.group(2))
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            # main table rows: op, ours, fp32, torch int8 (engine), vs fp32, vs torch int8, GOPS
            if backend is None or t != threads or len(cells) != 7 or contains not in cells[0]:
                continue
            try:
                out[(backend, cells[0])] = float(cells[5].rstrip("x"))
            except ValueError:
                continue
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="saved bench_kernels.py outputs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--contains", default="", help="only rows whose op / shape contains this")
    args = ap.parse_args()
    per_row: dict[tuple[str, str], list[float]] = defaultdict(list)
    for path in args.runs:
        for key, r in ratios(path, args.threads, args.contains).items():
            per_row[key].append(r)
    rows = []
    for (backend, op), rs in sorted(per_row.items()):
        rows.append([backend, op, " ".join(f"{r:.2f}" for r in rs), f"{statistics.median(rs):.2f}x",
                     f"{min(rs):.2f}-{max(rs):.2f}x"])
    print(f"vs torch's best int8 engine, {args.threads} thread(s), {len(args.runs)} runs\n")
    print(markdown_table(["backend", "op / shape", "each run", "median", "range"], rows))
    below = [r for r in rows if float(r[3].rstrip("x")) < 1.0]
    print(f"\nrows with a median below 1.0x: {len(below)} of {len(rows)}")


if __name__ == "__main__":
    main()
