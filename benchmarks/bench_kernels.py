"""Kernel benchmarks: every installed backend's kernels vs torch fp32 vs torch's own quantized engine.

Run (plugins installed):
    python benchmarks/bench_kernels.py [--threads 1,2] [--quick] [--backends fbgemm,x86_onednn]

For each backend it prints markdown tables, one row per op and shape, with our median
latency, torch fp32's, torch's best quantized engine for that backend's target (fbgemm and
x86_onednn -> best of torch's x86 / onednn / fbgemm, qnnpack -> qnnpack, xnnpack -> best of x86
and qnnpack; the engine that won is named in each row) and the ratios (>1 means we are faster), all measured side by side in this one run. It
also measures the AVX-512 VNNI register-only peak (benchmarks/peak/vnni_peak.c) and reports
our large-GEMM throughput as a fraction of it, and the per-call overhead of the lowered
custom op on a 1x768x768 linear.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import TIMING, markdown_table, sqnr, time_call  # noqa: E402

import quantplug  # noqa: E402
from quantplug.kernels import flatten_packed  # noqa: E402
from quantplug.direct_calls import direct_call  # noqa: E402

LINEAR_M = (1, 8, 32, 128, 512)
LINEAR_KN = ((768, 768), (768, 3072), (3072, 768), (4096, 4096))
# (name, cin, cout, k, stride, hw, groups)
CONVS = (
    ("resnet18 conv1 7x7/2", 3, 64, 7, 2, 224, 1),
    ("resnet18 64->64 3x3", 64, 64, 3, 1, 56, 1),
    ("resnet18 128->128 3x3", 128, 128, 3, 1, 28, 1),
    ("resnet18 256->256 3x3", 256, 256, 3, 1, 14, 1),
    ("resnet18 512->512 3x3", 512, 512, 3, 1, 7, 1),
    ("mobilenet dw 3x3 144ch", 144, 144, 3, 1, 56, 144),
    ("mobilenet pw 1x1 144->24", 144, 24, 1, 1, 56, 1),
)
TORCH_ENGINES = {"fbgemm": ("fbgemm", "x86", "onednn"), "x86_onednn": ("x86", "onednn", "fbgemm"), "qnnpack": ("qnnpack",),
                 "xnnpack": ("x86", "qnnpack"), "reference": ("x86",)}


#: command-line overrides of the shape lists (empty: the defaults above)
SHAPES: dict[str, list | None] = {"m": [], "kn": [], "conv": None}


def vnni_peak_gops() -> float | None:
    src = os.path.join(os.path.dirname(__file__), "peak", "vnni_peak.c")
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "peak")
        try:
            subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512vnni", src, "-o", exe], check=True, capture_output=True)
            # best of 5: another job on the core halves a single run (seen: 249 and 370 GOPS)
            return max(float(subprocess.run([exe], check=True, capture_output=True, text=True).stdout) for _ in range(5))
        except (OSError, subprocess.CalledProcessError, ValueError):
            return None


_READ_BW: dict[int, float] = {}


def read_bw_gbs(sizes: list[int]) -> dict[int, float]:
    """Measured single-thread read bandwidth (GB/s) of a cache-resident buffer of each size
    (benchmarks/peak/read_bw.c); sizes it could not measure are left out."""
    todo = sorted({s for s in sizes if s not in _READ_BW})
    if todo:
        src = os.path.join(os.path.dirname(__file__), "peak", "read_bw.c")
        with tempfile.TemporaryDirectory() as d:
            exe = os.path.join(d, "read_bw")
            try:
                subprocess.run(["gcc", "-O2", "-mavx512f", src, "-o", exe], check=True, capture_output=True)
                out = subprocess.run([exe, *map(str, todo)], check=True, capture_output=True, text=True).stdout
                _READ_BW.update({int(b): float(g) for b, g in (line.split() for line in out.splitlines())})
            except (OSError, subprocess.CalledProcessError, ValueError):
                pass
    return {s: _READ_BW[s] for s in sizes if s in _READ_BW}


def decode_floors(decode: list[tuple], peak: float | None) -> str:
    """Why ">= 2x torch at M = 1 and 8" is reachable on some shapes and not on others: for each
    M = 1 / 8 static row, the time no kernel can beat (its int8 weights streamed once at the
    measured read bandwidth of a buffer that size, or its multiply-adds at the measured VNNI
    peak, whichever is longer) next to ours and half of torch's time."""
    bw = read_bw_gbs([k * n for _, _, k, n, _, _ in decode])
    rows = []
    for label, m, k, n, ours, tq in decode:
        if k * n not in bw or not tq:
            continue
        t_bw = k * n / (bw[k * n] * 1e9)
        t_ops = 2 * m * k * n / (peak * 1e9) if peak else 0.0
        floor = max(t_bw, t_ops)
        need = 100 * floor / (tq / 2)  # how close to the floor 2x torch would have to run
        rows.append([label, f"{k * n / 1e6:.2f} MB @ {bw[k * n]:.0f} GB/s", f"{floor * 1e6:.1f}",
                     f"{ours * 1e6:.1f} ({100 * floor / ours:.0f}%)", f"{tq * 1e6 / 2:.1f} ({need:.0f}%)",
                     "no: faster than the floor" if need > 100 else "barely: near the floor" if need > 80 else "yes"])
    head = ["op / shape", "weights, read bandwidth", "floor (us)", "ours (us, % of floor speed)",
            "2x torch (us, % of floor speed)", "2x possible"]
    return markdown_table(head, rows) if rows else ""


def act_dtype_of(backend) -> tuple[torch.dtype, int, int]:
    cfg = backend.backend_config.get("linear") or backend.backend_config.configs[0]
    dc = next(d for d in cfg.dtype_configs if d.input_dtype is not None and not d.is_dynamic)
    dt = dc.input_dtype.dtype
    lo = dc.input_dtype.quant_min_lower_bound if dc.input_dtype.quant_min_lower_bound is not None else (0 if dt == torch.uint8 else -128)
    hi = dc.input_dtype.quant_max_upper_bound if dc.input_dtype.quant_max_upper_bound is not None else (255 if dt == torch.uint8 else 127)
    return dt, lo, hi


def torch_linear(engine, x, w, bias, dynamic):
    torch.backends.quantized.engine = engine
    per_tensor = engine == "qnnpack"
    if per_tensor:
        wq = torch.quantize_per_tensor(w, float(w.abs().max() / 127), 0, torch.qint8)
    else:
        wq = torch.quantize_per_channel(w, w.abs().amax(1) / 127, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(wq, bias)
    if dynamic:
        return lambda: torch.ops.quantized.linear_dynamic(x, packed, engine == "fbgemm")
    xq = torch.quantize_per_tensor(x, float(x.abs().max() / 127), 128, torch.quint8)
    return lambda: torch.ops.quantized.linear(xq, packed, 0.05, 128)


def torch_conv(engine, x, w, bias, stride, pad, groups):
    torch.backends.quantized.engine = engine
    wq = torch.quantize_per_channel(w, w.abs().amax((1, 2, 3)) / 127, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8) \
        if engine != "qnnpack" else torch.quantize_per_tensor(w, float(w.abs().max() / 127), 0, torch.qint8)
    packed = torch.ops.quantized.conv2d_prepack(wq, bias, [stride] * 2, [pad] * 2, [1, 1], groups)
    xq = torch.quantize_per_tensor(x, float(x.abs().max() / 127), 128, torch.quint8).contiguous(memory_format=torch.channels_last)
    return lambda: torch.ops.quantized.conv2d(xq, packed, 0.05, 128)


def best_torch(engines, make):
    best, name = None, None
    for e in engines:
        try:
            fn = make(e)
            t = time_call(fn)
        except Exception:  # an engine may not support a shape or dtype
            continue
        if best is None or t < best:
            best, name = t, e
    return best, name


def ratio(a, b):
    return f"{b / a:.2f}x" if a and b else "-"


def bench_linear(backend, k, threads, quick, times, decode=None):
    """Rows for static and dynamic linear; our seconds per label go into ``times``, and the
    M = 1 / 8 static rows' (label, M, K, N, ours, torch) into ``decode`` (:func:`decode_floors`)."""
    dt, lo, hi = act_dtype_of(backend)
    rows, peak_rows = [], []
    ms = SHAPES["m"] or (LINEAR_M[:3] if quick else LINEAR_M)
    kns = SHAPES["kn"] or (LINEAR_KN[:2] if quick else LINEAR_KN)
    for K, N in kns:
        w = torch.randn(N, K)
        scales = (w.abs().amax(1) / 127).float()
        w_q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        packed = k.pack_linear_weight(w_q, scales, torch.zeros(N, dtype=torch.int32))
        bias = torch.randn(N)
        for M in ms:
            x = torch.randn(M, K)
            x_q = torch.randint(lo, hi + 1, (M, K), dtype=dt)
            zp = (lo + hi + 1) // 2
            ours = time_call(lambda: k.linear(x_q, 0.02, zp, packed, bias, 0.05, zp))
            fp32 = time_call(lambda: torch.nn.functional.linear(x, w, bias))
            tq, eng = best_torch(TORCH_ENGINES.get(backend.name, ("x86",)), lambda e: torch_linear(e, x, w, bias, False))
            row = [f"linear static {M}x{K}x{N}", f"{ours * 1e6:.1f}", f"{fp32 * 1e6:.1f}", f"{tq * 1e6:.1f} ({eng})" if tq else "-",
                   ratio(ours, fp32), ratio(ours, tq), f"{2 * M * K * N / ours / 1e9:.0f}"]
            rows.append(row)
            times[row[0]] = ours
            if decode is not None and M in (1, 8):
                decode.append((row[0], M, K, N, ours, tq))
            if hasattr(k, "linear_dynamic"):
                ours_d = time_call(lambda: k.linear_dynamic(x, packed, bias))
                tqd, engd = best_torch(TORCH_ENGINES.get(backend.name, ("x86",)), lambda e: torch_linear(e, x, w, bias, True))
                rows.append([f"linear dynamic {M}x{K}x{N}", f"{ours_d * 1e6:.1f}", f"{fp32 * 1e6:.1f}",
                             f"{tqd * 1e6:.1f} ({engd})" if tqd else "-", ratio(ours_d, fp32), ratio(ours_d, tqd),
                             f"{2 * M * K * N / ours_d / 1e9:.0f}"])
                times[rows[-1][0]] = ours_d
            if M == 512 and K == 4096:
                peak_rows.append(2 * M * K * N / ours / 1e9)
    return rows, peak_rows


def bench_conv(backend, k, quick, times):
    """Rows for the conv shapes (channels-last input), plus SQNR of the depthwise layer on
    full-range input against fp32 (the 16-bit saturation check of issue 4)."""
    if not hasattr(k, "conv2d"):
        return []
    dt, lo, hi = act_dtype_of(backend)
    rows = []
    convs = CONVS[1:3] if quick else CONVS
    if SHAPES["conv"] is not None:
        convs = [c for c in CONVS if any(w in c[0] for w in SHAPES["conv"])]
    for name, cin, cout, ks, stride, hw, groups in convs:
        pad = ks // 2
        w = torch.randn(cout, cin // groups, ks, ks)
        scales = (w.abs().amax((1, 2, 3)) / 127).float()
        w_q = torch.round(w / scales[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        packed = k.pack_conv2d_weight(w_q, scales, torch.zeros(cout, dtype=torch.int32), stride, pad, 1, groups)
        x = torch.randn(1, cin, hw, hw).contiguous(memory_format=torch.channels_last)
        x_q = torch.randint(lo, hi + 1, (1, cin, hw, hw), dtype=dt).contiguous(memory_format=torch.channels_last)
        bias = torch.randn(cout)
        zp = (lo + hi + 1) // 2
        ours = time_call(lambda: k.conv2d(x_q, 0.02, zp, packed, bias, 0.05, zp))
        fp32 = time_call(lambda: torch.nn.functional.conv2d(x, w, bias, stride, pad, 1, groups))
        tq, eng = best_torch(TORCH_ENGINES.get(backend.name, ("x86",)), lambda e: torch_conv(e, x, w, bias, stride, pad, groups))
        gops = 2 * cout * (cin // groups) * ks * ks * ((hw + 2 * pad - ks) // stride + 1) ** 2 / ours / 1e9
        rows.append([name, f"{ours * 1e6:.1f}", f"{fp32 * 1e6:.1f}", f"{tq * 1e6:.1f} ({eng})" if tq else "-",
                     ratio(ours, fp32), ratio(ours, tq), f"{gops:.0f}"])
        times[name] = ours
    return rows


WEIGHT_ONLY_M = (1, 8, 32)


def torch_weight_only(x, w_q, scales, q4=None, gscales=None, group_size=0):
    """torch's own CPU weight-only kernels (the ones torchao's CPU weight-only configs call), on
    bf16 activations, the dtype they are written for: ``aten._weight_int8pack_mm`` (int8
    per-channel) and ``aten._weight_int4pack_mm_for_cpu`` (int4 group-wise; codes stored as
    ``q + 8``, dequantized as ``(code - 8) * scale + zero``). Their fp32-activation paths are
    10-20x slower here (19 ms for 1x4096x4096 int8), so they are not a fair reference.
    Returns the callable."""
    xb = x.to(torch.bfloat16)
    if q4 is None:
        wq, sc = w_q.contiguous(), scales.to(torch.bfloat16)
        return lambda: torch.ops.aten._weight_int8pack_mm(xb, wq, sc)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu((q4.to(torch.int32) + 8).contiguous(), 1)
    sz = torch.stack([gscales.T, torch.zeros_like(gscales.T)], 2).contiguous().to(torch.bfloat16)
    return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, group_size, sz)


def bench_weight_only(backend, k, quick, times):
    """fp32 activations, int8 per-channel / int4 group-wise weights (decode-style linear) vs fp32
    and vs torch's own weight-only kernels (:func:`torch_weight_only`)."""
    if not hasattr(k, "linear_weight_only") and not hasattr(k, "linear_int4_weight_only"):
        return []
    rows = []
    K = N = 4096 if not quick else 768
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g)
    bias = torch.randn(N, generator=g)
    scales = (w.abs().amax(1) / 127).float()
    w_q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    variants = []  # (name, ours(x), torch's kernel factory(x))
    if hasattr(k, "linear_weight_only"):
        p8 = k.pack_linear_weight(w_q, scales, torch.zeros(N, dtype=torch.int32))
        variants.append(("int8", lambda x: k.linear_weight_only(x, p8, bias),
                         lambda x: torch_weight_only(x, w_q, scales)))
    if hasattr(k, "linear_int4_weight_only"):
        for gs in (32, 128):
            gsc = (w.reshape(N, K // gs, gs).abs().amax(2) / 7).clamp_min(1e-8).float()
            q4 = torch.round(w.reshape(N, K // gs, gs) / gsc[..., None]).clamp(-8, 7).to(torch.int8).reshape(N, K)
            p4 = k.pack_linear_weight_int4(q4, gsc, gs)
            variants.append((f"int4 g{gs}", lambda x, p4=p4: k.linear_int4_weight_only(x, p4, bias),
                             lambda x, q4=q4, gsc=gsc, gs=gs: torch_weight_only(x, None, None, q4, gsc, gs)))
    for M in (SHAPES["m"] or (WEIGHT_ONLY_M[:2] if quick else WEIGHT_ONLY_M)):
        x = torch.randn(M, K, generator=g)
        fp32 = time_call(lambda: torch.nn.functional.linear(x, w, bias))
        for name, fn, make_torch in variants:
            ours = time_call(lambda: fn(x))
            tq = time_call(make_torch(x))
            label = f"weight-only {name} {M}x{K}x{N}"
            rows.append([label, f"{ours * 1e6:.1f}", f"{fp32 * 1e6:.1f}", f"{tq * 1e6:.1f} (aten bf16)",
                         ratio(ours, fp32), ratio(ours, tq), f"{2 * M * K * N / ours / 1e9:.0f}"])
            times[label] = ours
    return rows


def depthwise_full_range_sqnr(backend, k):
    """SQNR (dB) vs fp32 of the 144-channel depthwise 3x3 on input that uses the backend's whole
    activation range, for ours and torch's engines: 16-bit accumulation saturates here."""
    if not hasattr(k, "conv2d"):
        return None
    dt, lo, hi = act_dtype_of(backend)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(144, 1, 3, 3, generator=g)
    scales = (w.abs().amax((1, 2, 3)) / 127).float()
    w_q = torch.round(w / scales[:, None, None, None]).clamp(-127, 127).to(torch.int8)
    x_q = torch.randint(lo, hi + 1, (1, 144, 56, 56), dtype=dt, generator=g).contiguous(memory_format=torch.channels_last)
    zp = (lo + hi + 1) // 2
    x = (x_q.float() - zp) * 0.02
    ref = torch.nn.functional.conv2d(x, w_q.float() * scales[:, None, None, None], None, 1, 1, 1, 144)
    # the output uses the backend's activation range too (fbgemm: 0..127) around the same zero point
    out_scale = float(ref.abs().max() / ((hi - lo) / 2))
    packed = k.pack_conv2d_weight(w_q, scales, torch.zeros(144, dtype=torch.int32), 1, 1, 1, 144)
    out = k.conv2d(x_q, 0.02, zp, packed, None, out_scale, zp)
    result = {"ours": sqnr(ref, (out.float() - zp) * out_scale)}
    for eng in TORCH_ENGINES.get(backend.name, ()):
        try:
            torch.backends.quantized.engine = eng
            xq = torch.quantize_per_tensor(x, 0.02, zp, torch.quint8) if dt == torch.uint8 else None
            if xq is None:
                continue
            wq = torch.quantize_per_channel(w_q.float() * scales[:, None, None, None], scales.double(),
                                            torch.zeros(144, dtype=torch.long), 0, torch.qint8)
            packed_t = torch.ops.quantized.conv2d_prepack(wq, None, [1, 1], [1, 1], [1, 1], 144)
            yq = torch.ops.quantized.conv2d(xq.contiguous(memory_format=torch.channels_last), packed_t, out_scale, zp)
            result[f"torch {eng}"] = sqnr(ref, yq.dequantize())
        except Exception:  # an engine may refuse per-channel depthwise
            continue
    return result


def custom_op_overhead(backend, k):
    """Direct kernel call vs what a lowered graph calls (the op's direct-call function, see
    ``quantplug.direct_calls``) vs the torch.library op through the dispatcher, on 1x768x768."""
    if not hasattr(k, "pack_linear_weight"):
        return None
    dt, lo, hi = act_dtype_of(backend)
    w_q = torch.randint(-127, 128, (768, 768), dtype=torch.int8)
    packed = k.pack_linear_weight(w_q, torch.full((768,), 0.01), torch.zeros(768, dtype=torch.int32))
    x_q = torch.randint(lo, hi + 1, (1, 768), dtype=dt)
    zp = (lo + hi + 1) // 2
    flat = flatten_packed(packed)
    direct = time_call(lambda: k.linear(x_q, 0.02, zp, packed, None, 0.05, zp), min_seconds=0.3)
    args = (x_q, 0.02, zp, flat, None, 0.05, zp, False, 768, backend.name)
    lowered = time_call(lambda: direct_call(torch.ops.quantplug.linear.default)(*args), min_seconds=0.3)
    op = time_call(lambda: torch.ops.quantplug.linear.default(*args), min_seconds=0.3)
    return direct, lowered, op


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="a few shapes only")
    ap.add_argument("--backends", default="")
    ap.add_argument("--m", default="", help="linear M values, e.g. 512")
    ap.add_argument("--kn", default="", help="linear KxN shapes, e.g. 4096x4096,768x768")
    ap.add_argument("--conv", default=None, help="conv layers whose name contains one of these, e.g. '3x3'; '' for none")
    ap.add_argument("--weight-only", action="store_true",
                    help="only the weight-only rows (4096x4096; M from --m, default 1,8,32)")
    ap.add_argument("--min-seconds", type=float, default=0.5, help="time each call at least this long (median)")
    args = ap.parse_args()
    SHAPES["m"] = [int(m) for m in args.m.split(",") if m]
    SHAPES["kn"] = [tuple(int(v) for v in kn.split("x")) for kn in args.kn.split(",") if kn]
    SHAPES["conv"] = None if args.conv is None else [c for c in args.conv.split(",") if c]
    TIMING["min_seconds"] = args.min_seconds
    warnings.simplefilter("ignore")
    import quantplug.lowering  # noqa: F401  (defines the lowered ops)

    peak = vnni_peak_gops()
    print(f"AVX-512 VNNI register-only peak, 1 thread: {peak} GOPS" if peak else "VNNI peak: not measurable here")
    wanted = [b for b in args.backends.split(",") if b]
    headers = ["op / shape", "ours (us)", "torch fp32 (us)", "torch int8 engine (us)", "vs fp32", "vs torch int8", "ours GOPS"]
    thread_list = [int(t) for t in args.threads.split(",")]
    ours_by_threads: dict[tuple[str, str], dict[int, float]] = {}
    for threads in thread_list:
        torch.set_num_threads(threads)
        for b in quantplug.list_backends():
            if b.kernels is None or (wanted and b.name not in wanted):
                continue
            k = b.kernels
            print(f"\n### {b.name} ({k.selected_isa()}), {threads} thread(s)\n", flush=True)
            times: dict[str, float] = {}
            if args.weight_only:
                rows, big = bench_weight_only(b, k, args.quick, times), []
            else:
                decode: list[tuple] = []
                rows, big = bench_linear(b, k, threads, args.quick, times, decode)
                rows += bench_conv(b, k, args.quick, times)
                if SHAPES["conv"] is None and not SHAPES["m"]:
                    rows += bench_weight_only(b, k, args.quick, times)
            for label, t in times.items():
                ours_by_threads.setdefault((b.name, label), {})[threads] = t
            print(markdown_table(headers, rows))
            floors = decode_floors(decode, peak) if threads == 1 and not args.weight_only else ""
            if floors:
                print("\nM = 1 / 8 static linear against what this core can do at all (floor = weight bytes / "
                      "measured read bandwidth, or multiply-adds / VNNI peak, whichever is longer):\n")
                print(floors)
            if big and peak:
                print(f"\n512x4096x4096 static: {big[0]:.0f} GOPS = {100 * big[0] / (peak * threads):.0f}% of {threads}x the measured VNNI peak")
            oh = custom_op_overhead(b, k) if threads == 1 and not args.weight_only else None
            if oh:
                print(f"\n1x768x768 static linear: direct kernel {oh[0] * 1e6:.1f} us, as a lowered graph calls it "
                      f"{oh[1] * 1e6:.1f} us (+{(oh[1] - oh[0]) * 1e6:.1f} us), the torch.library op through the "
                      f"dispatcher {oh[2] * 1e6:.1f} us (+{(oh[2] - oh[0]) * 1e6:.1f} us)")
            dw = depthwise_full_range_sqnr(b, k) if threads == 1 and not args.weight_only else None
            if dw:
                print("\ndepthwise 3x3 144ch on full-range input, SQNR vs fp32: "
                      + ", ".join(f"{name} {db:.1f} dB" for name, db in dw.items()))
    if len(thread_list) > 1:
        lo_t, hi_t = min(thread_list), max(thread_list)
        print(f"\n### thread scaling: {hi_t} threads vs {lo_t} (ours, large shapes)\n")
        rows = []
        for (name, label), by in ours_by_threads.items():
            big = label.startswith(("linear static 512x4096", "linear dynamic 512x4096")) or "3x3" in label
            if big and lo_t in by and hi_t in by:
                rows.append([name, label, f"{by[lo_t] * 1e6:.1f}", f"{by[hi_t] * 1e6:.1f}", f"{by[lo_t] / by[hi_t]:.2f}x"])
        print(markdown_table(["backend", "op / shape", f"{lo_t} thread (us)", f"{hi_t} threads (us)", "speedup"], rows))


if __name__ == "__main__":
    main()
