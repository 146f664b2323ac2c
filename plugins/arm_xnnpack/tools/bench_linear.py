"""Static int8 linear, quantplug xnnpack vs torch x86 / qnnpack engines, 1 thread, one process.

Interleaved: every repeat times ours, x86 and qnnpack back to back and the
ratio is taken per repeat; the median ratio over repeats is reported (robust
to load changes on a shared machine), and the ratio of the fastest repeats.
"""
import statistics, sys, time, warnings, torch, quantplug
warnings.filterwarnings("ignore")
torch.manual_seed(0); torch.set_num_threads(1)
k = quantplug.get_backend("xnnpack").kernels
REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
def timed(f, inner):
    t0 = time.perf_counter()
    for _ in range(inner): f()
    return (time.perf_counter() - t0) / inner
print(f"isa={k.selected_isa()} threads=1 reps={REPS}")
print(f"{'M':>4} {'K':>5} {'N':>5} {'ours us':>8} {'x86 us':>8} {'qnnpack us':>10} {'x86/ours':>8} {'qnn/ours':>8}"
      f" | min-of-reps: {'x86/ours':>8} {'qnn/ours':>8}")
for (M, K, N) in [(1, 512, 512), (8, 512, 512), (32, 512, 512), (64, 768, 768), (128, 1024, 1024), (256, 512, 2048), (33, 257, 129)]:
    x = torch.randn(M, K); w = torch.randn(N, K) * 0.05; b = torch.randn(N)
    xs, xz = float(x.abs().max() / 127), 3
    wsc = w.abs().amax(1) / 127
    wq = torch.clamp(torch.round(w / wsc[:, None]), -127, 127).to(torch.int8)
    xq = torch.clamp(torch.round(x / xs) + xz, -128, 127).to(torch.int8)
    packed = k.pack_linear_weight(wq, wsc.float(), torch.zeros(N, dtype=torch.int32))
    fns = {"ours": lambda: k.linear(xq, xs, xz, packed, b, 0.05, -2)}
    for eng in ("x86", "qnnpack"):
        torch.backends.quantized.engine = eng
        tx = torch.quantize_per_tensor(x, xs, xz + 128, torch.quint8)
        tw = torch._make_per_channel_quantized_tensor(wq, wsc.double(), torch.zeros(N, dtype=torch.long), 0)
        p = torch.ops.quantized.linear_prepack(tw, b)
        # the packed params carry their engine's kernel: no engine switch needed per call
        fns[eng] = (lambda tx, p: (lambda: torch.ops.quantized.linear(tx, p, 0.05, 126)))(tx, p)
    for f in fns.values(): f()
    inner = max(1, int(0.003 / max(timed(fns["ours"], 3), 1e-7)))
    t = {name: [] for name in fns}
    for _ in range(REPS):
        for name, f in fns.items():
            t[name].append(timed(f, inner))
    med = {n: statistics.median(v) for n, v in t.items()}
    r86 = statistics.median(a / o for a, o in zip(t["x86"], t["ours"]))
    rq = statistics.median(a / o for a, o in zip(t["qnnpack"], t["ours"]))
    best = {n: min(v) for n, v in t.items()}
    print(f"{M:4d} {K:5d} {N:5d} {med['ours']*1e6:8.1f} {med['x86']*1e6:8.1f} {med['qnnpack']*1e6:10.1f} {r86:8.2f} {rq:8.2f}"
          f" |              {best['x86'] / best['ours']:8.2f} {best['qnnpack'] / best['ours']:8.2f}")
