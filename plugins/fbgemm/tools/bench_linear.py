"""Side-by-side timing of the fbgemm plugin's linear kernels against torch's quantized engines.

Not a test: prints a markdown table (best of interleaved rounds, same process, same inputs).
    python plugins/fbgemm/tools/bench_linear.py [--threads 1] [--shapes 1x768x768,512x4096x4096]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from quantplug_fbgemm.kernels import load_kernels


def _time_all(fns: dict, min_time: float = 0.03, repeats: int = 9) -> dict[str, float]:
    """Best-of-rounds seconds per call of each function (the least disturbed round), interleaved (one burst of each per round) so
    that load from other processes hits every contender alike."""
    counts = {}
    for name, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        counts[name] = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples = {name: [] for name in fns}
    # One thread: count this thread's CPU time, so that time slices lost to the other
    # processes sharing the machine are not charged to whichever contender was running.
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(counts[name]):
                fn()
            samples[name].append((clock() - t0) / counts[name])
    return {name: min(v) for name, v in samples.items()}


def _torch_static(engine, x_q, w_q, bias, out_scale, out_zp):
    torch.backends.quantized.engine = engine
    packed = torch.ops.quantized.linear_prepack(w_q, bias)
    return lambda: torch.ops.quantized.linear(x_q, packed, out_scale, out_zp)


def _torch_dynamic(engine, x, w_q, bias):
    torch.backends.quantized.engine = engine
    packed = torch.ops.quantized.linear_prepack(w_q, bias)
    return lambda: torch.ops.quantized.linear_dynamic(x, packed, True)


def bench(shape: tuple[int, int, int], engines: list[str]) -> dict[str, float]:
    m, k, n = shape
    kern = load_kernels()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g)
    w = torch.randn(n, k, generator=g)
    bias = torch.randn(n, generator=g)
    w_scales = (w.abs().amax(1) / 127).float()
    w_int = torch.clamp(torch.round(w / w_scales[:, None]), -127, 127).to(torch.int8)
    x_scale, x_zp = float(x.abs().max() / 63), 64
    x_u8 = torch.clamp(torch.round(x / x_scale) + x_zp, 0, 127).to(torch.uint8)
    out_scale, out_zp = 0.05 * k ** 0.5, 64
    packed = kern.pack_linear_weight(w_int, w_scales, torch.zeros(n, dtype=torch.int32))
    fns = {"ours_static": lambda: kern.linear(x_u8, x_scale, x_zp, packed, bias, out_scale, out_zp),
           "ours_dynamic": lambda: kern.linear_dynamic(x, packed, bias)}
    x_q = torch._make_per_tensor_quantized_tensor(x_u8, x_scale, x_zp)
    w_q = torch._make_per_channel_quantized_tensor(w_int, w_scales.double(), torch.zeros(n, dtype=torch.long), 0)
    for e in engines:
        fns[f"{e}_static"] = _with_engine(e, _torch_static(e, x_q, w_q, bias, out_scale, out_zp))
        fns[f"{e}_dynamic"] = _with_engine(e, _torch_dynamic(e, x, w_q, bias))
    fns["fp32"] = lambda: torch.nn.functional.linear(x, w, bias)
    return _time_all(fns)


def _with_engine(engine, fn):
    def run():
        torch.backends.quantized.engine = engine
        return fn()
    return run


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shapes", default="1x768x768,8x768x768,1x4096x4096,8x4096x4096,32x768x3072,"
                                        "128x3072x768,512x768x768,512x4096x4096")
    ap.add_argument("--engines", default="fbgemm,x86,onednn")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engines = [e for e in args.engines.split(",") if e in torch.backends.quantized.supported_engines]
    print(f"threads={args.threads} isa={load_kernels().selected_isa()} ukernel={load_kernels().gemm_ukernel()}")
    print("| M x K x N | mode | ours us | torch best us (engine) | ratio | ours GOPS |")
    print("|---|---|---|---|---|---|")
    for s in args.shapes.split(","):
        shape = tuple(int(v) for v in s.split("x"))
        r = bench(shape, engines)
        ops = 2 * shape[0] * shape[1] * shape[2]
        for mode in ("static", "dynamic"):
            best = min(engines, key=lambda e: r[f"{e}_{mode}"])
            ours, theirs = r[f"ours_{mode}"], r[f"{best}_{mode}"]
            print(f"| {s} | {mode} | {ours * 1e6:.1f} | {theirs * 1e6:.1f} ({best}) | {theirs / ours:.2f}x "
                  f"| {ops / ours / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
