"""Side-by-side timing of the fbgemm plugin's conv2d against torch's quantized engines (not a test).

    python plugins/fbgemm/tools/bench_conv.py [--threads 1]
Channels-last uint8 input at batch 1; prints ours, torch's best engine and the ratio.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from quantplug_fbgemm.kernels import load_kernels

from bench_linear import _time_all, _with_engine  # same directory

# (name, cin, cout, hw, kernel, stride, padding, groups)
LAYERS = [
    ("conv1 7x7/2", 3, 64, 224, 7, 2, 3, 1),
    ("64->64 3x3", 64, 64, 56, 3, 1, 1, 1),
    ("128->128 3x3", 128, 128, 28, 3, 1, 1, 1),
    ("256->256 3x3", 256, 256, 14, 3, 1, 1, 1),
    ("512->512 3x3", 512, 512, 7, 3, 1, 1, 1),
    ("dw 144 3x3", 144, 144, 56, 3, 1, 1, 144),
    ("pw 144->24 1x1", 144, 24, 56, 1, 1, 0, 1),
    ("grouped 128 g=4 3x3", 128, 128, 28, 3, 1, 1, 4),
]


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engines", default="fbgemm,x86,onednn")
    ap.add_argument("--only", default="", help="run only the layers whose name contains this")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engines = [e for e in args.engines.split(",") if e in torch.backends.quantized.supported_engines]
    kern = load_kernels()
    g = torch.Generator().manual_seed(0)
    print(f"threads={args.threads} isa={kern.selected_isa()}")
    print("| layer | ours us | torch best us (engine) | ratio |")
    print("|---|---|---|---|")
    for name, cin, cout, hw, ks, st, pd, gr in LAYERS:
        if args.only not in name:
            continue
        x_u8 = torch.randint(0, 128, (1, cin, hw, hw), dtype=torch.uint8, generator=g).contiguous(
            memory_format=torch.channels_last)
        w = torch.randint(-127, 128, (cout, cin // gr, ks, ks), dtype=torch.int8, generator=g)
        ws = torch.rand(cout, generator=g) * 0.01 + 1e-3
        bias = torch.randn(cout, generator=g)
        packed = kern.pack_conv2d_weight(w, ws, torch.zeros(cout, dtype=torch.int32), st, pd, 1, gr)
        fns = {"ours": lambda: kern.conv2d(x_u8, 0.05, 64, packed, bias, 0.5, 64)}
        x_q = torch._make_per_tensor_quantized_tensor(x_u8, 0.05, 64)
        w_q = torch._make_per_channel_quantized_tensor(w, ws.double(), torch.zeros(cout, dtype=torch.long), 0)
        for e in engines:
            torch.backends.quantized.engine = e
            pk = torch.ops.quantized.conv2d_prepack(w_q, bias, [st, st], [pd, pd], [1, 1], gr)
            fns[e] = _with_engine(e, lambda pk=pk: torch.ops.quantized.conv2d(x_q, pk, 0.5, 64))
        r = _time_all(fns)
        best = min(engines, key=r.get)
        print(f"| {name} | {r['ours'] * 1e6:.0f} | {r[best] * 1e6:.0f} ({best}) | {r[best] / r['ours']:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
