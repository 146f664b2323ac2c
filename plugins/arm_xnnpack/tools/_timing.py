"""Shared setup of the benchmark scripts in this folder (run them as scripts: ``python tools/bench_*.py``)."""
import statistics
import time
import warnings

import torch

import quantplug


def setup():
    """One thread, fixed seed, torch's quantized-tensor deprecation warnings off; the xnnpack kernels."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return quantplug.get_backend("xnnpack").kernels


def bench(f, reps=20):
    """Median seconds per call of ``f`` over ``reps`` repeats of ~10 ms each."""
    f()
    t0 = time.perf_counter()
    f()
    one = time.perf_counter() - t0
    inner = max(1, int(0.01 / max(one, 1e-7)))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            f()
        ts.append((time.perf_counter() - t0) / inner)
    return statistics.median(ts)
