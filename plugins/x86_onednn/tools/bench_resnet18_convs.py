"""ResNet-18 conv layers, the whole model and a depthwise layer: x86_onednn vs torch's engines.

Not a test: run by hand (1 thread; wrap it in ``flock /tmp/quantplug-bench.lock``), e.g.
    python plugins/x86_onednn/tools/bench_resnet18_convs.py            # layers, then the model
    python plugins/x86_onednn/tools/bench_resnet18_convs.py --what layers --ab
    python plugins/x86_onednn/tools/bench_resnet18_convs.py --what dw   # MobileNet 3x3 dw, 144 ch
Timing on a shared machine: ours and torch run in alternating rounds in this one process and
each side keeps its fastest call (the minimum is what load cannot inflate; a median of
back-to-back runs swings 2x when other jobs start). ``--ab`` adds the same layer with the
indirect (igemm) schedule switched off, i.e. im2col rows on the same ISA.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings

import torch

import quantplug
from quantplug_x86_onednn.kernels import load_kernels

# name, cin, cout, kernel, stride, input size, count in ResNet-18
LAYERS = (
    ("stem 7x7/2 3->64", 3, 64, 7, 2, 224, 1),
    ("3x3 64->64 @56", 64, 64, 3, 1, 56, 4),
    ("3x3/2 64->128", 64, 128, 3, 2, 56, 1),
    ("1x1/2 64->128", 64, 128, 1, 2, 56, 1),
    ("3x3 128->128 @28", 128, 128, 3, 1, 28, 3),
    ("3x3/2 128->256", 128, 256, 3, 2, 28, 1),
    ("1x1/2 128->256", 128, 256, 1, 2, 28, 1),
    ("3x3 256->256 @14", 256, 256, 3, 1, 14, 3),
    ("3x3/2 256->512", 256, 512, 3, 2, 14, 1),
    ("1x1/2 256->512", 256, 512, 1, 2, 14, 1),
    ("3x3 512->512 @7", 512, 512, 3, 1, 7, 3),
)


def fastest(fn, calls: int = 5) -> float:
    """Seconds of the fastest of ``calls`` calls."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    return best


def race(fns: dict, rounds: int) -> dict:
    """Fastest call of each function over ``rounds`` alternating rounds."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, (engine, fn) in fns.items():
            if engine:
                torch.backends.quantized.engine = engine
            best[k] = min(best[k], fastest(fn))
    return best


def layers(rounds: int, ab: bool) -> None:
    k = load_kernels()
    tot = {"ours": 0.0, "torch": 0.0}
    for name, cin, cout, ks, s, hw, count in LAYERS:
        pad = ks // 2
        w = torch.randn(cout, cin, ks, ks)
        sc = (w.abs().amax((1, 2, 3)) / 127).float()
        w_q = torch.round(w / sc[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        packed = k.pack_conv2d_weight(w_q, sc, torch.zeros(cout, dtype=torch.int32), s, pad, 1, 1)
        x_q = torch.randint(0, 128, (1, cin, hw, hw), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
        bias = torch.randn(cout)
        fns = {"ours": (None, lambda: k.conv2d(x_q, 0.02, 64, packed, bias, 0.05, 64, True))}
        if ab:
            def im2col():
                prev = k.lib.x86_onednn_set_conv_im2col_probe(1)
                try:
                    k.conv2d(x_q, 0.02, 64, packed, bias, 0.05, 64, True)
                finally:
                    k.lib.x86_onednn_set_conv_im2col_probe(prev)
            fns["im2col"] = (None, im2col)
        wt = torch.quantize_per_channel(w_q.float() * sc[:, None, None, None], sc.double(),
                                        torch.zeros(cout, dtype=torch.long), 0, torch.qint8)
        for engine in ("x86", "onednn"):
            torch.backends.quantized.engine = engine
            xt = torch._make_per_tensor_quantized_tensor(x_q, 0.02, 64)
            pk = torch.ops.quantized.conv2d_prepack(wt, bias, [s, s], [pad, pad], [1, 1], 1)
            fns[engine] = (engine, lambda xt=xt, pk=pk: torch.ops.quantized.conv2d_relu(xt, pk, 0.05, 64))
        t = race(fns, rounds)
        eng = min(("x86", "onednn"), key=t.get)
        tot["ours"] += t["ours"] * count
        tot["torch"] += t[eng] * count
        extra = f"  im2col {t['im2col'] * 1e6:7.1f} us" if ab else ""
        print(f"{name:18s} x{count}: ours {t['ours'] * 1e6:7.1f} us  torch {t[eng] * 1e6:7.1f} us ({eng:6s}) "
              f"{t[eng] / t['ours']:.2f}x{extra}", flush=True)
    print(f"sum over ResNet-18's convs: ours {tot['ours'] * 1e3:.2f} ms, torch best {tot['torch'] * 1e3:.2f} ms, "
          f"{tot['torch'] / tot['ours']:.2f}x")


def depthwise(rounds: int) -> None:
    """The MobileNet-v2 depthwise 3x3 layer (144 channels, 56x56, full-range uint8 input)."""
    k, c = load_kernels(), 144
    w = torch.randn(c, 1, 3, 3)
    sc = (w.abs().amax((1, 2, 3)) / 127).float()
    w_q = torch.round(w / sc[:, None, None, None]).clamp(-127, 127).to(torch.int8)
    packed = k.pack_conv2d_weight(w_q, sc, torch.zeros(c, dtype=torch.int32), 1, 1, 1, c)
    x_q = torch.randint(0, 256, (1, c, 56, 56), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(c)
    fns = {"ours": (None, lambda: k.conv2d(x_q, 0.02, 128, packed, bias, 0.05, 128))}
    wt = torch.quantize_per_channel(w_q.float() * sc[:, None, None, None], sc.double(),
                                    torch.zeros(c, dtype=torch.long), 0, torch.qint8)
    for engine in ("x86", "onednn", "fbgemm"):
        torch.backends.quantized.engine = engine
        xt = torch._make_per_tensor_quantized_tensor(x_q, 0.02, 128)
        pk = torch.ops.quantized.conv2d_prepack(wt, bias, [1, 1], [1, 1], [1, 1], c)
        fns[engine] = (engine, lambda xt=xt, pk=pk: torch.ops.quantized.conv2d(xt, pk, 0.05, 128))
    t = race(fns, rounds)
    eng = min(("x86", "onednn", "fbgemm"), key=t.get)
    print(f"depthwise 3x3 144ch 56x56: ours {t['ours'] * 1e6:.1f} us, torch {t[eng] * 1e6:.1f} us ({eng}): "
          f"{t[eng] / t['ours']:.2f}x")


def model(rounds: int, calib: int) -> None:
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    from models import resnet18  # the benchmark's ResNet-18

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    net = resnet18()
    torch.manual_seed(1)
    cal = [torch.randn(1, 3, 224, 224) for _ in range(calib)]
    x = torch.randn(1, 3, 224, 224)
    prepared = quantplug.prepare_pt2e(net, quantplug.get_backend("x86_onednn").get_quantizer(), (x,))
    torch.backends.quantized.engine = "x86"
    fx = prepare_fx(copy.deepcopy(net), get_default_qconfig_mapping("x86"), (x,))
    with torch.no_grad():
        for c in cal:
            prepared(c)
            fx(c)
        ref = net(x)
    ours, theirs = quantplug.convert_pt2e(prepared), convert_fx(fx)
    t = race({"ours": (None, lambda: ours(x)), "torch": ("x86", lambda: theirs(x))}, rounds)

    def sqnr(y):
        return float(20 * torch.log10(ref.norm() / (ref - y).norm()))

    with torch.no_grad():
        s_ours, s_fx = sqnr(ours(x)), sqnr(theirs(x))
    print(f"ResNet-18 b1 224x224 eager: ours {t['ours'] * 1e3:.2f} ms ({s_ours:.1f} dB), torch FX x86 "
          f"{t['torch'] * 1e3:.2f} ms ({s_fx:.1f} dB): {t['torch'] / t['ours']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--what", default="layers,model,dw")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--ab", action="store_true", help="also time the im2col schedule of each layer")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if "layers" in args.what:
        layers(args.rounds, args.ab)
    if "model" in args.what:
        model(args.rounds, args.calib)
    if "dw" in args.what:
        depthwise(args.rounds)


if __name__ == "__main__":
    main()
