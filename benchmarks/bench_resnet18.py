"""ResNet-18, batch 1, 224x224: quantplug's graph flow on every backend vs fp32 and torch FX.

Run (after `make demo` or with the plugins installed):
    python benchmarks/bench_resnet18.py [--threads 1] [--calib 8]

Prints one markdown table: latency (median), speed-up vs fp32, vs torch's own FX static
quantization with the matching engine, and output SQNR vs fp32. Everything runs in eager
mode (no torch.compile) in this one process, side by side.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import markdown_table, sqnr, time_call  # noqa: E402
from models import resnet18  # noqa: E402

import quantplug  # noqa: E402

# quantplug backend -> torch engine whose FX static quantization is the reference point
TORCH_ENGINE = {"x86_onednn": "x86", "fbgemm": "fbgemm", "qnnpack": "qnnpack", "xnnpack": "qnnpack", "reference": "x86"}


def torch_fx(model, engine, calib, x):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = engine
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping(engine), (x,))
    with torch.no_grad():
        for c in calib:
            prepared(c)
    return convert_fx(prepared)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--backends", default="", help="comma-separated quantplug backends (default: all installed)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    model = resnet18()
    torch.manual_seed(1)
    calib = [torch.randn(1, 3, 224, 224) for _ in range(args.calib)]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
    t_fp32 = time_call(lambda: model(x))
    rows = [["fp32 (torch eager)", f"{t_fp32 * 1e3:.1f}", "1.00x", "-", "inf"]]
    torch_times = {}
    for engine in ("x86", "fbgemm", "qnnpack"):
        q = torch_fx(model, engine, calib, x)
        torch.backends.quantized.engine = engine
        t = time_call(lambda: q(x))
        torch_times[engine] = t
        with torch.no_grad():
            rows.append([f"torch FX {engine}", f"{t * 1e3:.1f}", f"{t_fp32 / t:.2f}x", "1.00x", f"{sqnr(ref, q(x)):.1f}"])
    wanted = [b for b in args.backends.split(",") if b]
    for b in quantplug.list_backends():
        if wanted and b.name not in wanted:
            continue
        print(f"quantizing with {b.name} ...", file=sys.stderr, flush=True)
        prepared = quantplug.prepare_pt2e(model, b.get_quantizer(), (x,))
        with torch.no_grad():
            for c in calib:
                prepared(c)
        q = quantplug.convert_pt2e(prepared)
        t = time_call(lambda: q(x))
        eng = TORCH_ENGINE.get(b.name, "x86")
        with torch.no_grad():
            out = q(x)
        report = quantplug.explain(q)
        rows.append([f"quantplug {b.name} ({b.kernel_isa()}, {len(report.kernels)} kernels / {len(report.rows)} ops)",
                     f"{t * 1e3:.1f}", f"{t_fp32 / t:.2f}x", f"{torch_times[eng] / t:.2f}x vs torch {eng}",
                     f"{sqnr(ref, out):.1f}"])
    print(f"\nResNet-18, batch 1, 224x224, {args.threads} thread(s), eager mode, median latency\n")
    print(markdown_table(["model", "latency (ms)", "vs fp32", "vs torch FX same engine", "SQNR vs fp32 (dB)"], rows))


if __name__ == "__main__":
    main()
