"""One plugin's int8 linear timed by the CPU time of the calling thread, for A/B builds.

Wall-clock medians on this shared 2-core VM move 10-40% with other jobs; the calling thread's
CPU time (``time.thread_time``) leaves out the time it spends descheduled, so two builds of one
kernel (install one, run, install the other, run) compare better this way. Not a substitute for
``bench_kernels.py``'s side-by-side tables against torch. Prints the median over ``--calls``
calls, ``--repeats`` times, for the static and the dynamic linear.

    python benchmarks/bench_linear_cpu_time.py qnnpack --m 8 --k 4096 --n 4096
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import quantplug


def cpu_time_us(fn, calls: int) -> float:
    """Median CPU time of ``fn()`` on this thread, in us, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("backend", help="fbgemm, x86_onednn, xnnpack or qnnpack")
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    kernels = quantplug.get_backend(args.backend).kernels
    m, k, n = args.m, args.k, args.n
    w = torch.randn(n, k)
    scales = (w.abs().amax(1) / 127).float()
    w_q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    packed = kernels.pack_linear_weight(w_q, scales, torch.zeros(n, dtype=torch.int32))
    bias, x = torch.randn(n), torch.randn(m, k)
    if args.backend == "xnnpack":  # int8 activations; the others take uint8
        x_q, zp = torch.randint(-128, 128, (m, k), dtype=torch.int8), 0
    else:
        x_q, zp = torch.randint(0, 256, (m, k), dtype=torch.uint8), 128
    for _ in range(args.repeats):
        static = cpu_time_us(lambda: kernels.linear(x_q, 0.02, zp, packed, bias, 0.05, zp), args.calls)
        dynamic = cpu_time_us(lambda: kernels.linear_dynamic(x, packed, bias), args.calls)
        print(f"{args.backend} {m}x{k}x{n}: static {static:.1f} us, dynamic {dynamic:.1f} us (CPU time, median)")


if __name__ == "__main__":
    main()
