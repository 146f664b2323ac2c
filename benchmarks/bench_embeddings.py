"""Quantized EmbeddingBag: the eager modules on fbgemm's kernels vs torch fp32 vs torch's quantized ops.

A recommender-style table (rows x dim, sum pooling over bags of random indices), one thread.
"ours" is the module ``quantize_(..., Int8DynamicActivationInt8WeightConfig(embeddings=True,
embedding_bits=8 or 4), backend="fbgemm")`` swaps in (module call, Python wrapper, C kernel);
"torch module" is ``torch.ao.nn.quantized.EmbeddingBag`` (``float_qparams_weight_only_qconfig``
or its ``_4bit`` twin), "torch op" the fused op it calls
(``torch.ops.quantized.embedding_bag_byte_rowwise_offsets`` / ``..._4bit_...``) timed alone, without
the module's Python; "ours call" is the kernel library's protocol method
(``kernels.embedding_bag_int8`` / ``_int4``) the module calls, timed alone. Each is timed in turn, several rounds, median per column (the machine is
shared). Error is the relative error of the pooled output against fp32. Run:

    python benchmarks/bench_embeddings.py [--rows 100000 --dim 128 --bags 512 --per-bag 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings

import torch
from torch import nn

import torch.ao.nn.quantized as nnq
from torch.ao.quantization import float_qparams_weight_only_qconfig, float_qparams_weight_only_qconfig_4bit

import quantplug
from common import TIMING, markdown_table, time_call

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--bags", type=int, default=512)
    ap.add_argument("--per-bag", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    TIMING["min_seconds"] = args.min_seconds
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fp32 = nn.EmbeddingBag(args.rows, args.dim, mode="sum").eval()
    indices = torch.randint(0, args.rows, (args.bags * args.per_bag,))
    offsets = torch.arange(0, indices.numel(), args.per_bag)
    ref = fp32(indices, offsets).detach()
    weight = fp32.weight.detach()
    torch_ops = {8: torch.ops.quantized.embedding_bag_byte_rowwise_offsets,
                 4: torch.ops.quantized.embedding_bag_4bit_rowwise_offsets}
    torch_prepack = {8: torch.ops.quantized.embedding_bag_byte_prepack,
                     4: torch.ops.quantized.embedding_bag_4bit_prepack}
    torch_qconfigs = {8: float_qparams_weight_only_qconfig, 4: float_qparams_weight_only_qconfig_4bit}

    def rel(y: torch.Tensor) -> float:
        return float((y - ref).norm() / ref.norm())

    rows = []
    for bits in (8, 4):
        mod = nn.Sequential(copy.deepcopy(fp32))
        quantplug.quantize_(mod, quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=True, embedding_bits=bits),
                            backend="fbgemm")
        ours = mod[0]
        float_copy = copy.deepcopy(fp32)
        float_copy.qconfig = torch_qconfigs[bits]
        torch_module = nnq.EmbeddingBag.from_float(float_copy)
        table, op = torch_prepack[bits](weight), torch_ops[bits]
        k = ours.kernels()
        bag = k.embedding_bag_int8 if bits == 8 else k.embedding_bag_int4
        tables = (ours.weight_q, ours.weight_scales, ours.weight_zero_points)
        calls = {
            "ours": lambda: ours(indices, offsets),
            "ours call": lambda: bag(indices, offsets, *tables, mode="sum"),
            "fp32": lambda: fp32(indices, offsets),
            "torch module": lambda: torch_module(indices, offsets),
            "torch op": lambda: op(table, indices, offsets, False, 0, False, None, None, False),
        }
        times: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(args.rounds):
            for k, fn in calls.items():
                times[k].append(time_call(fn))
        t = {k: statistics.median(v) for k, v in times.items()}
        mb = (ours.weight_q.numel() + 8 * args.rows) / 1e6  # codes + float32 scale + int32 zero point
        rows.append([f"int{bits}", f"{t['ours'] * 1e6:.0f}", f"{t['ours call'] * 1e6:.0f}", f"{t['fp32'] * 1e6:.0f}",
                     f"{t['torch module'] * 1e6:.0f}", f"{t['torch op'] * 1e6:.0f}",
                     f"{t['fp32'] / t['ours']:.2f}x", f"{t['torch module'] / t['ours']:.2f}x",
                     f"{t['torch op'] / t['ours']:.2f}x", f"{rel(ours(indices, offsets)):.4f}",
                     f"{rel(torch_module(indices, offsets)):.4f}", f"{mb:.1f} (fp32 {weight.numel() * 4 / 1e6:.1f})"])
    print(f"EmbeddingBag sum, table {args.rows}x{args.dim}, {args.bags} bags x {args.per_bag} indices, "
          f"{args.threads} thread(s), fbgemm kernels ({ours.kernel_path.rsplit('(', 1)[-1].rstrip(')')}), "
          f"median of {args.rounds} rounds\n")
    print(markdown_table(["rows", "ours (us)", "ours call (us)", "torch fp32 (us)", "torch module (us)", "torch op (us)", "vs fp32",
                          "vs torch module", "vs torch op", "rel. error ours", "rel. error torch",
                          "table MB"], rows))


if __name__ == "__main__":
    main()
