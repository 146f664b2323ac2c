"""Side-by-side timing of the x86_onednn kernels against torch's quantized engines.

Not a test: run by hand, e.g.
    python plugins/x86_onednn/tools/bench.py --threads 1 --what linear,conv,wo
Prints one line per op/shape: ours, torch's best int8 engine (x86/onednn/fbgemm),
torch fp32, ratios and our GOPS. Median of repeated calls, all in one process.
``--cpu-time`` times with the process CPU clock instead of the wall clock: on a machine
shared with other jobs it measures the work, not the waiting (meaningful with --threads 1).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from quantplug_x86_onednn.kernels import load_kernels

ENGINES = ("x86", "onednn", "fbgemm")
CLOCK = time.perf_counter


def timeit(fn, min_runs=7, min_s=0.3):
    """Median seconds of ``fn()`` after two warm-up calls."""
    with torch.no_grad():
        fn(), fn()
        ts, t_end = [], time.perf_counter() + min_s
        while len(ts) < min_runs or time.perf_counter() < t_end:
            t0 = CLOCK()
            fn()
            ts.append(CLOCK() - t0)
    return statistics.median(ts)


def best_engine(make):
    best = (None, None)
    for e in ENGINES:
        try:
            torch.backends.quantized.engine = e
            t = timeit(make(e))
        except Exception:  # an engine may refuse a shape
            continue
        if best[0] is None or t < best[0]:
            best = (t, e)
    return best


def wq_of(w):
    s = (w.abs().amax(1) / 127).float()
    return torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8), s


def line(label, ours, torch_t, eng, fp32, ops):
    r = f"{torch_t / ours:5.2f}x" if torch_t else "   - "
    print(f"{label:38s} ours {ours * 1e6:9.1f} us  torch {eng or '-':6s} {torch_t * 1e6 if torch_t else 0:9.1f} us "
          f"{r}  fp32 {fp32 * 1e6:9.1f} us {fp32 / ours:5.2f}x  {ops / ours / 1e9:6.0f} GOPS", flush=True)


def bench_linear(k, shapes, dynamic_too=True):
    for m, kk, n in shapes:
        w = torch.randn(n, kk)
        w_q, s = wq_of(w)
        bias = torch.randn(n)
        packed = k.pack_linear_weight(w_q, s, torch.zeros(n, dtype=torch.int32))
        x = torch.randn(m, kk)
        x_q = torch.randint(0, 256, (m, kk), dtype=torch.uint8)
        ours = timeit(lambda: k.linear(x_q, 0.02, 128, packed, bias, 0.05, 128))
        wqt = torch.quantize_per_channel(w, s.double(), torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        xqt = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)

        def mk(e, dyn=False):
            p = torch.ops.quantized.linear_prepack(wqt, bias)
            if dyn:
                return lambda: torch.ops.quantized.linear_dynamic(x, p, False)
            return lambda: torch.ops.quantized.linear(xqt, p, 0.05, 128)
        tt, eng = best_engine(mk)
        fp32 = timeit(lambda: torch.nn.functional.linear(x, w, bias))
        line(f"linear static {m}x{kk}x{n}", ours, tt, eng, fp32, 2 * m * kk * n)
        if dynamic_too:
            ours = timeit(lambda: k.linear_dynamic(x, packed, bias))
            tt, eng = best_engine(lambda e: mk(e, True))
            line(f"linear dynamic {m}x{kk}x{n}", ours, tt, eng, fp32, 2 * m * kk * n)


def bench_conv(k, convs):
    for name, cin, cout, ks, stride, hw, groups in convs:
        pad = ks // 2
        w = torch.randn(cout, cin // groups, ks, ks)
        s = (w.abs().amax((1, 2, 3)) / 127).float()
        w_q = torch.round(w / s[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        bias = torch.randn(cout)
        packed = k.pack_conv2d_weight(w_q, s, torch.zeros(cout, dtype=torch.int32), stride, pad, 1, groups)
        x = torch.randn(1, cin, hw, hw).contiguous(memory_format=torch.channels_last)
        x_q = torch.randint(0, 256, (1, cin, hw, hw), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        ours = timeit(lambda: k.conv2d(x_q, 0.02, 128, packed, bias, 0.05, 128))
        wqt = torch.quantize_per_channel(w, s.double(), torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        xqt = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8).contiguous(memory_format=torch.channels_last)

        def mk(e):
            p = torch.ops.quantized.conv2d_prepack(wqt, bias, [stride] * 2, [pad] * 2, [1, 1], groups)
            return lambda: torch.ops.quantized.conv2d(xqt, p, 0.05, 128)
        tt, eng = best_engine(mk)
        fp32 = timeit(lambda: torch.nn.functional.conv2d(x, w, bias, stride, pad, 1, groups))
        oh = (hw + 2 * pad - ks) // stride + 1
        line(name, ours, tt, eng, fp32, 2 * cout * (cin // groups) * ks * ks * oh * oh)


def bench_weight_only(k, shapes):
    for m, kk, n in shapes:
        w = torch.randn(n, kk)
        x = torch.randn(m, kk)
        bias = torch.randn(n)
        fp32 = timeit(lambda: torch.nn.functional.linear(x, w, bias))
        w_q, s = wq_of(w)
        p8 = k.pack_linear_weight(w_q, s, torch.zeros(n, dtype=torch.int32))
        t8 = timeit(lambda: k.linear_weight_only(x, p8, bias))
        line(f"wo int8 {m}x{kk}x{n}", t8, fp32, "fp32", fp32, 2 * m * kk * n)
        for g in (32, 128):
            sg = (w.reshape(n, kk // g, g).abs().amax(-1) / 7.5).float()
            q4 = torch.round(w / sg.repeat_interleave(g, 1)).clamp(-8, 7).to(torch.int8)
            p4 = k.pack_linear_weight_int4(q4, sg, g)
            t4 = timeit(lambda: k.linear_int4_weight_only(x, p4, bias))
            line(f"wo int4 g{g} {m}x{kk}x{n}", t4, fp32, "fp32", fp32, 2 * m * kk * n)


LINEAR = [(m, kk, n) for kk, n in ((768, 768), (768, 3072), (3072, 768), (4096, 4096)) for m in (1, 8, 32, 128, 512)]
CONVS = (
    ("conv 3->64 7x7/2 224", 3, 64, 7, 2, 224, 1),
    ("conv 64->64 3x3 56", 64, 64, 3, 1, 56, 1),
    ("conv 128->128 3x3 28", 128, 128, 3, 1, 28, 1),
    ("conv 256->256 3x3 14", 256, 256, 3, 1, 14, 1),
    ("conv 512->512 3x3 7", 512, 512, 3, 1, 7, 1),
    ("dw 3x3 144ch 56", 144, 144, 3, 1, 56, 144),
    ("grouped 3x3 128ch g=4 28", 128, 128, 3, 1, 28, 4),
    ("pw 1x1 144->24 56", 144, 24, 1, 1, 56, 1),
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1")
    ap.add_argument("--what", default="linear,conv,wo")
    ap.add_argument("--m", default="", help="only these M for linear (comma list)")
    ap.add_argument("--kn", default="", help="only this K,N for linear, e.g. 4096,4096")
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    k = load_kernels()
    print(f"isa={k.selected_isa()} ukernel={k.ukernel_name()}")
    shapes = LINEAR
    if args.m:
        ms = {int(v) for v in args.m.split(",")}
        shapes = [s for s in shapes if s[0] in ms]
    if args.kn:
        kk, n = (int(v) for v in args.kn.split(","))
        shapes = [s for s in shapes if (s[1], s[2]) == (kk, n)]
    for t in (int(v) for v in args.threads.split(",")):
        torch.set_num_threads(t)
        print(f"--- {t} thread(s)")
        if "linear" in args.what:
            bench_linear(k, shapes)
        if "conv" in args.what:
            bench_conv(k, CONVS)
        if "wo" in args.what and hasattr(k, "linear_int4_weight_only"):
            bench_weight_only(k, [(1, 4096, 4096), (8, 4096, 4096), (32, 4096, 4096)])


if __name__ == "__main__":
    main()
