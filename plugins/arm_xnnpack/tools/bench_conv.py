"""Static int8 conv2d (NHWC), quantplug xnnpack vs torch x86 / qnnpack / onednn, 1 thread, interleaved repeats (min of reps)."""
import time, warnings, torch, quantplug
warnings.filterwarnings("ignore")
torch.manual_seed(0); torch.set_num_threads(1)
k = quantplug.get_backend("xnnpack").kernels
def timed(f, inner):
    t0 = time.perf_counter()
    for _ in range(inner): f()
    return (time.perf_counter() - t0) / inner
for (cin, cout, hw, ks, groups) in [(64, 64, 28, 3, 1), (128, 128, 14, 1, 1), (96, 96, 28, 3, 96), (144, 144, 56, 3, 144)]:
    x = torch.randn(1, cin, hw, hw); w = torch.randn(cout, cin // groups, ks, ks) * 0.05; b = torch.randn(cout)
    ws = w.abs().amax((1, 2, 3)) / 127
    wq = torch.clamp(torch.round(w / ws[:, None, None, None]), -127, 127).to(torch.int8)
    xs = float(x.abs().max() / 127)
    xq = torch.clamp(torch.round(x / xs), -128, 127).to(torch.int8).contiguous(memory_format=torch.channels_last)
    pad = ks // 2
    p = k.pack_conv2d_weight(wq, ws, torch.zeros(cout, dtype=torch.int32), (1, 1), (pad, pad), (1, 1), groups)
    fns = {"ours": lambda: k.conv2d(xq, xs, 0, p, b, 0.1, 0)}
    for eng in ("x86", "qnnpack", "onednn"):
        torch.backends.quantized.engine = eng
        tx = torch.quantize_per_tensor(x, xs, 128, torch.quint8).contiguous(memory_format=torch.channels_last)
        tw = torch._make_per_channel_quantized_tensor(wq, ws.double(), torch.zeros(cout, dtype=torch.long), 0)
        pk = torch.ops.quantized.conv2d_prepack(tw, b, [1, 1], [pad, pad], [1, 1], groups)
        fns[eng] = (lambda tx, pk: (lambda: torch.ops.quantized.conv2d(tx, pk, 0.1, 128)))(tx, pk)
    for f in fns.values(): f()
    inner = max(1, int(0.003 / max(timed(fns["ours"], 2), 1e-7)))
    t = {n: [] for n in fns}
    for _ in range(15):
        for n, f in fns.items(): t[n].append(timed(f, inner))
    best = {n: min(v) for n, v in t.items()}
    print(f"cin={cin} cout={cout} {hw}x{hw} k={ks} groups={groups}: ours {best['ours']*1e6:.0f}us x86 {best['x86']*1e6:.0f}us "
          f"qnnpack {best['qnnpack']*1e6:.0f}us onednn {best['onednn']*1e6:.0f}us  best-torch/ours {min(v for n, v in best.items() if n != 'ours')/best['ours']:.2f}")
