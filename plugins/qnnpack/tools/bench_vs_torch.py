"""The qnnpack plugin's kernels against torch's own ``qnnpack`` engine, side by side in one process.

Not a test (timings are never asserted): prints a markdown table of the
median time of each op (ours, torch's qnnpack), the ratio and our GOPS.
Each repeat times ours and torch's back to back, so machine load hits
both alike; the ratio is the number to read.

    python plugins/qnnpack/tools/bench_vs_torch.py [threads] [--full]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import torch

import quantplug

LINEAR = [(1, 768, 768), (8, 768, 768), (32, 768, 768), (128, 768, 3072), (512, 1024, 1024)]
LINEAR_FULL = LINEAR + [(128, 3072, 768), (512, 4096, 4096)]
# Cin, Cout, H = W, kernel, stride, padding, groups: ResNet-18 layers, a MobileNet depthwise + pointwise
CONV = [(3, 64, 224, 7, 2, 3, 1), (64, 64, 56, 3, 1, 1, 1), (128, 128, 28, 3, 1, 1, 1), (256, 256, 14, 3, 1, 1, 1),
        (512, 512, 7, 3, 1, 1, 1), (144, 144, 56, 3, 1, 1, 144), (144, 24, 56, 1, 1, 0, 1)]


def _seconds(fn) -> float:
    """Seconds per call of ``fn``, timed over enough calls for ~20 ms."""
    fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def side_by_side(ours, theirs, repeats: int = 7) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``theirs``, alternating so both see the same load."""
    a, b = [], []
    for _ in range(repeats):
        a.append(_seconds(ours))
        b.append(_seconds(theirs))
    return statistics.median(a), statistics.median(b)


def _row(op: str, shape: str, ours: float, theirs: float, ops: float) -> str:
    return f"| {op} | {shape} | {ours * 1e6:.1f} | {theirs * 1e6:.1f} | {theirs / ours:.1f}x | {ops / ours / 1e9:.0f} |"


def bench_linear(k, shapes):
    for m, kk, n in shapes:
        x, w, b = torch.randn(m, kk), torch.randn(n, kk) * 0.05, torch.randn(n)
        ws = w.abs().amax(1) / 127
        wq = torch.quantize_per_channel(w, ws.double(), torch.zeros(n, dtype=torch.long), 0, torch.qint8)
        xq = torch.quantize_per_tensor(x, 0.05, 128, torch.quint8)
        prepacked = torch.ops.quantized.linear_prepack(wq, b)
        packed = k.pack_linear_weight(wq.int_repr(), ws.float(), torch.zeros(n, dtype=torch.int32))
        xu = xq.int_repr()
        ours, theirs = side_by_side(lambda: k.linear(xu, 0.05, 128, packed, b, 0.2, 128),
                                    lambda: torch.ops.quantized.linear(xq, prepacked, 0.2, 128))
        print(_row("linear", f"{m}x{kk}x{n}", ours, theirs, 2 * m * kk * n))
        ours, theirs = side_by_side(lambda: k.linear_dynamic(x, packed, b),
                                    lambda: torch.ops.quantized.linear_dynamic(x, prepacked))
        print(_row("linear_dynamic", f"{m}x{kk}x{n}", ours, theirs, 2 * m * kk * n))


def bench_conv(k):
    for cin, cout, hw, ks, s, p, g in CONV:
        x, w, b = torch.rand(1, cin, hw, hw) * 4, torch.randn(cout, cin // g, ks, ks) * 0.1, torch.randn(cout)
        ws = w.abs().amax((1, 2, 3)) / 127
        wq = torch.quantize_per_channel(w, ws.double(), torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        xq = torch.quantize_per_tensor(x, 0.02, 0, torch.quint8).contiguous(memory_format=torch.channels_last)
        prepacked = torch.ops.quantized.conv2d_prepack(wq, b, [s, s], [p, p], [1, 1], g)
        packed = k.pack_conv2d_weight(wq.int_repr(), ws.float(), torch.zeros(cout, dtype=torch.int32), s, p, 1, g)
        xu = xq.int_repr()
        ours, theirs = side_by_side(lambda: k.conv2d(xu, 0.02, 0, packed, b, 0.1, 0),
                                    lambda: torch.ops.quantized.conv2d(xq, prepacked, 0.1, 0))
        oh = (hw + 2 * p - ks) // s + 1
        print(_row("conv2d", f"{cin}->{cout} {ks}x{ks}/{s} g{g} @{hw}", ours, theirs,
                   2 * oh * oh * cout * (cin // g) * ks * ks))


def main(argv: list[str]) -> None:
    """Run the table for ``argv[0]`` threads (default 1)."""
    warnings.simplefilter("ignore")  # torch's deprecation notices on quantized tensors
    threads = int(argv[0]) if argv and argv[0].isdigit() else 1
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "qnnpack"
    k = quantplug.get_backend("qnnpack").kernels
    print(f"quantplug qnnpack ({k.selected_isa()}) vs torch qnnpack engine, {threads} thread(s)\n")
    print("| op | shape | ours us | torch qnnpack us | speedup | ours GOPS |")
    print("|---|---|---|---|---|---|")
    bench_linear(k, LINEAR_FULL if "--full" in argv else LINEAR)
    bench_conv(k)


if __name__ == "__main__":
    main(sys.argv[1:])
