"""Several Python threads calling one packed weight at once get the single-threaded answers.

Why: the plugins cache prepared per-weight state (C "plans", checked-once flags) on the packed
weight and release the GIL inside their kernels, so a server that runs one model from several
request threads exercises cache creation and kernel calls concurrently, with the shared C
thread pool under them. Results must not depend on the interleaving.
"""

import threading

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
