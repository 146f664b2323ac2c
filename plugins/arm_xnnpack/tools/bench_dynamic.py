"""Dynamic (per-tensor) linear vs torch x86 / qnnpack, and int8 weight-only linear vs fp32 F.linear (1 thread, median)."""
import torch

from _timing import bench, setup

k = setup()
print(f"{'M':>4} {'K':>5} {'N':>5} | dyn ours  x86   qnnpack  x86/ours qnn/ours | wo-int8 ours  fp32 F.linear  fp32/ours")
for M, K, N in [(1, 1024, 1024), (32, 512, 512), (128, 1024, 1024)]:
    x = torch.randn(M, K); w = torch.randn(N, K) * 0.05; b = torch.randn(N)
    s = w.abs().amax(1) / 127; wq = torch.clamp(torch.round(w / s[:, None]), -127, 127).to(torch.int8)
    p = k.pack_linear_weight(wq, s, torch.zeros(N, dtype=torch.int32))
    ours = bench(lambda: k.linear_dynamic(x, p, b))
    res = {}
    for eng in ("x86", "qnnpack"):
        torch.backends.quantized.engine = eng
        tw = torch._make_per_channel_quantized_tensor(wq, s.double(), torch.zeros(N, dtype=torch.long), 0)
        pk = torch.ops.quantized.linear_prepack(tw, b)
        res[eng] = bench(lambda: torch.ops.quantized.linear_dynamic(x, pk, False))
    wo = bench(lambda: k.linear_weight_only(x, p, b))
    wf = wq.float() * s[:, None]
    fl = bench(lambda: torch.nn.functional.linear(x, wf, b))
    print(f"{M:4d} {K:5d} {N:5d} | {ours*1e6:8.1f} {res['x86']*1e6:7.1f} {res['qnnpack']*1e6:8.1f} {res['x86']/ours:8.2f} {res['qnnpack']/ours:8.2f} |"
          f" {wo*1e6:10.1f} {fl*1e6:12.1f} {fl/wo:9.2f}")
