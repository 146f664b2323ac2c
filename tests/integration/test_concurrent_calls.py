"""Several Python threads calling one packed weight at once get the single-threaded answers.

Why: the plugins cache prepared per-weight state (C "plans", checked-once flags) on the packed
weight and release the GIL inside their kernels, so a server that runs one model from several
request threads exercises cache creation and kernel calls concurrently, with the shared C
thread pool under them. Results must not depend on the interleaving.
"""

import threading
import time

import torch


def _packed_linear(kernels, n: int, k: int):
    gen = torch.Generator().manual_seed(n + k)
    w = torch.randn(n, k, generator=gen)
    scales = (w.abs().amax(1) / 127).float()
    w_q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return kernels.pack_linear_weight(w_q, scales, torch.zeros(n, dtype=torch.int32)), torch.randn(n, generator=gen)


def _run_threads(calls, wants, threads: int = 4, rounds: int = 40) -> list:
    """Each thread calls every case in a different order; returns the mismatches."""
    bad = []

    def work(t: int) -> None:
        for r in range(rounds):
            j = (t + r) % len(calls)
            if not torch.equal(calls[j](), wants[j]):
                bad.append((t, r, j))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return bad


def test_dynamic_and_static_linear_from_several_threads(backend):
    kernels = backend.kernels
    threads_before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        packed, bias = _packed_linear(kernels, 96, 80)
        xs = [torch.randn(m, 80, generator=torch.Generator().manual_seed(m)) for m in (1, 2, 7, 33)]
        signed = backend.name == "xnnpack"  # int8 activations; the others take uint8
        lo, zp = (-128, 0) if signed else (0, 128)
        x_qs = [torch.randint(lo, lo + 256, (m, 80), dtype=torch.int8 if signed else torch.uint8) for m in (1, 3, 16)]
        calls = [lambda x=x: kernels.linear_dynamic(x, packed, bias) for x in xs]
        calls += [lambda x=x: kernels.linear(x, 0.02, zp, packed, bias, 0.05, zp) for x in x_qs]
        # the first call of each case builds the caches; drop them so the threads race on that
        wants = [c() for c in calls]
        for attr in [a for a in vars(packed) if a.startswith("_")]:
            delattr(packed, attr)
        assert _run_threads(calls, wants) == []
    finally:
        torch.set_num_threads(threads_before)


def test_kernels_release_the_gil_while_they_compute(backend):
    """A Python thread keeps running while another thread is inside a long kernel call.

    cffi drops the GIL around every C call; this checks it end to end (a wrapper that held a
    lock, or a kernel called through a GIL-holding path, would freeze the other thread). One
    dynamic linear of 1024x2048x2048 takes tens of milliseconds; the watcher thread records
    when it ran, and some of those times must fall in the middle half of the kernel call.
    """
    kernels = backend.kernels
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)  # one kernel thread: the watcher has the other core
    try:
        packed, bias = _packed_linear(kernels, 2048, 2048)
        x = torch.randn(1024, 2048, generator=torch.Generator().manual_seed(3))
        kernels.linear_dynamic(x, packed, bias)  # warm: plans and caches built outside the window
        seen: list[float] = []  # when the watcher ran, at most one entry per 0.1 ms
        stop = threading.Event()

        def watch() -> None:
            last = 0.0
            while not stop.is_set():
                now = time.perf_counter()
                if now - last >= 1e-4:
                    seen.append(now)
                    last = now

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            time.sleep(0.01)  # the watcher is running
            windows = []
            for _ in range(3):
                t0 = time.perf_counter()
                kernels.linear_dynamic(x, packed, bias)
                windows.append((t0, time.perf_counter()))
        finally:
            stop.set()
            watcher.join()
        inside = 0
        for t0, t1 in windows:
            a, b = t0 + (t1 - t0) / 4, t1 - (t1 - t0) / 4
            inside += sum(1 for t in seen if a <= t <= b)
        assert inside > 0, f"{backend.name}: no Python progress during {[round((b - a) * 1e3, 1) for a, b in windows]} ms of kernel calls"
    finally:
        torch.set_num_threads(threads_before)
