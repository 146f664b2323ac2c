"""Per-tensor quantize / dequantize: each installed plugin's kernel vs torch's own.

The eager flow quantizes every quantized module's input and dequantizes its output (a
64x32x8x8 conv output is 131072 values), so these elementwise kernels sit on its critical
path. Ours: the plugin's kernel library methods (the core's shared C kernel, compiled into
every plugin, with its SIMD path chosen at run time). Torch: ``torch.quantize_per_tensor``
to ``quint8`` / ``qint8`` and ``Tensor.dequantize``; for scale, ``uint8 -> float32``
(``Tensor.float``), a conversion with the same memory traffic and no arithmetic. One thread.

    python benchmarks/bench_quantize.py [--sizes 16,65536,131072,524288]
"""

from __future__ import annotations

import argparse

import torch

import quantplug
from common import TIMING, markdown_table, time_call

_TORCH_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8}


def rows_for(backend, sizes: list[int]) -> list[list[str]]:
    """One row per (dtype, size): ours and torch, quantize and dequantize, in microseconds."""
    k = backend.kernels
    lo_hi = {torch.uint8: (0, 255), torch.int8: (-128, 127)}
    rows = []
    for dtype in (torch.uint8, torch.int8):
        zp = 3 if dtype == torch.uint8 else -2
        for n in sizes:
            x = torch.randn(n) * 4
            q = k.quantize_per_tensor(x, 0.05, zp, dtype, *lo_hi[dtype])
            tq = torch.quantize_per_tensor(x, 0.05, zp, _TORCH_QDTYPE[dtype])
            ours_q = time_call(lambda: k.quantize_per_tensor(x, 0.05, zp, dtype, *lo_hi[dtype]))
            torch_q = time_call(lambda: torch.quantize_per_tensor(x, 0.05, zp, _TORCH_QDTYPE[dtype]))
            ours_dq = time_call(lambda: k.dequantize_per_tensor(q, 0.05, zp))
            torch_dq = time_call(lambda: tq.dequantize())
            to_float = time_call(lambda: q.float())
            rows.append([str(dtype).replace("torch.", ""), n,
                         f"{ours_q * 1e6:.1f}", f"{torch_q * 1e6:.1f}", f"{torch_q / ours_q:.2f}x",
                         f"{ours_dq * 1e6:.1f}", f"{torch_dq * 1e6:.1f}", f"{torch_dq / ours_dq:.2f}x",
                         f"{to_float * 1e6:.1f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="16,65536,131072,524288", help="16 values: the fixed cost per call")
    ap.add_argument("--min-seconds", type=float, default=0.3)
    args = ap.parse_args()
    TIMING["min_seconds"] = args.min_seconds
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    headers = ["dtype", "values", "ours quantize (us)", "torch quantize (us)", "vs torch",
               "ours dequantize (us)", "torch dequantize (us)", "vs torch", "torch uint8->float (us)"]
    for backend in quantplug.list_backends():
        if backend.kernels is None or not callable(getattr(backend.kernels, "dequantize_per_tensor", None)):
            continue
        print(f"### {backend.name} ({backend.kernel_isa()}), 1 thread, median of calls over {args.min_seconds} s\n")
        print(markdown_table(headers, rows_for(backend, sizes)) + "\n", flush=True)


if __name__ == "__main__":
    main()
