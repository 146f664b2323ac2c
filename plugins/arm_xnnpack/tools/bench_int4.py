"""int4 weight-only linear: our qb4w per ISA vs torch fp32 F.linear (same process, median of repeats)."""
import torch

from _timing import bench, setup

k = setup()
for M, K, N, G in [(1, 4096, 4096, 128), (8, 2048, 2048, 32), (32, 1024, 1024, 64)]:
    w = torch.randint(-8, 8, (N, K), dtype=torch.int8); s = torch.rand(N, K // G) * 0.01
    x = torch.randn(M, K); b = torch.randn(N)
    p = k.pack_linear_weight_int4(w, s, G)
    wf = (w.float().view(N, K // G, G) * s[..., None]).view(N, K)
    row = [f"M={M} K={K} N={N} g={G}"]
    tf = bench(lambda: torch.nn.functional.linear(x, wf, b)); row.append(f"torch fp32 {tf*1e6:.0f}us")
    for isa in ("scalar", "avx2", "avx512"):
        with k.use_isa(isa):
            t = bench(lambda: k.linear_int4_weight_only(x, p, b), reps=5 if isa == "scalar" else 20)
        row.append(f"{isa} {t*1e6:.0f}us ({tf/t:.2f}x fp32)")
    print("  ".join(row))
