"""Timing and table helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["TIMING", "time_call", "markdown_table", "sqnr"]

#: defaults of :func:`time_call`, set from a script's command line
TIMING = {"min_seconds": 0.5}


def time_call(fn: Callable[[], object], *, min_runs: int = 5, min_seconds: float | None = None, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds (after ``warmup`` calls), over at least
    ``min_runs`` calls and ``min_seconds`` (default ``TIMING["min_seconds"]``)."""
    if min_seconds is None:
        min_seconds = TIMING["min_seconds"]
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_runs or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if len(times) > 10000:
                break
    return statistics.median(times)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def sqnr(ref: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB."""
    ref, test = ref.float(), test.float()
    noise = torch.linalg.norm(ref - test)
    return float("inf") if noise == 0 else float(20 * torch.log10(torch.linalg.norm(ref) / noise))
