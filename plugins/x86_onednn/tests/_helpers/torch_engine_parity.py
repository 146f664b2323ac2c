"""Compare quantplug_x86_onednn's kernels with torch's own quantized engine (run as a script).

Usage: python torch_engine_parity.py ENGINE  ->  prints one JSON object of results.
Runs in its own process: torch's onednn engine has crashed in a process that had
used the x86 engine before, and a crash must fail one test, not the test run.
Each torch op gets a freshly prepacked weight: torch x86/onednn conv prepacks
cache their oneDNN primitive (with its post-ops) at first use, so conv2d then
conv2d_relu on one prepack silently drops the relu.
"""

from __future__ import annotations

import json
import sys
import warnings

import torch

warnings.filterwarnings("ignore")


def main(engine: str) -> dict:
    from quantplug_x86_onednn.kernels import load_kernels

    torch.backends.quantized.engine = engine
    k = load_kernels()
    g = torch.Generator().manual_seed(0)
    res: dict = {"engine": engine, "isa": k.selected_isa(), "cases": []}

    def record(kind, shape, mine, theirs, **extra):
        d = (mine.int() - theirs.int()).abs()
        res["cases"].append(dict(kind=kind, shape=list(shape), max_lsb=int(d.max()) if d.numel() else 0,
                                 n_diff=int((d > 0).sum()), n=int(d.numel()), **extra))

    def qt(x, s, z):
        return torch._make_per_tensor_quantized_tensor(x.contiguous(), s, z)

    def qw(w, ws):
        return torch._make_per_channel_quantized_tensor(w, ws.double(), torch.zeros(w.shape[0], dtype=torch.long), 0)

    # ---- static linear (+relu), with and without bias
    for (m, kk, n) in [(1, 1, 1), (3, 17, 5), (17, 64, 33), (4, 129, 16), (64, 1024, 64), (8, 4096, 32)]:
        x = torch.randint(0, 256, (m, kk), dtype=torch.uint8, generator=g)
        w = torch.randint(-128, 128, (n, kk), dtype=torch.int8, generator=g)
        ws = torch.rand(n, generator=g) * 0.01 + 0.001
        b = torch.randn(n, generator=g)
        xs, xz, oz = 0.02, 130, 120
        os_ = 0.3 * 0.02 * float(ws.mean()) * 128 * kk ** 0.5 * 2
        p = k.pack_linear_weight(w, ws, torch.zeros(n, dtype=torch.int32))
        for bias in (None, b):
            for relu in (False, True):
                op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
                theirs = op(qt(x, xs, xz), torch.ops.quantized.linear_prepack(qw(w, ws), bias), os_, oz).int_repr()
                mine = k.linear(x, xs, xz, p, bias, os_, oz, relu=relu)
                record("linear", (m, kk, n), mine, theirs, bias=bias is not None, relu=relu)
    # ---- full-range extremes, large K
    for x_val, w_val in [(255, -128), (255, 127), (0, -128)]:
        m, kk, n = 2, 4096, 16
        x = torch.full((m, kk), x_val, dtype=torch.uint8)
        w = torch.full((n, kk), w_val, dtype=torch.int8)
        ws = torch.full((n,), 0.004)
        os_ = 0.02 * 0.004 * 255 * 128 * kk / 100
        theirs = torch.ops.quantized.linear(qt(x, 0.02, 0), torch.ops.quantized.linear_prepack(qw(w, ws), None), os_, 128).int_repr()
        mine = k.linear(x, 0.02, 0, k.pack_linear_weight(w, ws, torch.zeros(n, dtype=torch.int32)), None, os_, 128)
        record("linear_extreme", (m, kk, n), mine, theirs, x=x_val, w=w_val)
    # ---- conv2d (+relu); onednn also conv2d_add (+relu)
    for (nb, c, h, w_, oc, ks, st, pd, gr) in [(1, 3, 8, 8, 4, 3, 1, 1, 1), (2, 16, 9, 9, 32, 3, 2, 1, 1),
                                               (1, 8, 6, 6, 8, 3, 1, 1, 8), (1, 32, 7, 7, 16, 1, 1, 0, 1)]:
        x = torch.randint(0, 256, (nb, c, h, w_), dtype=torch.uint8, generator=g)
        w = torch.randint(-128, 128, (oc, c // gr, ks, ks), dtype=torch.int8, generator=g)
        ws = torch.rand(oc, generator=g) * 0.01 + 0.001
        b = torch.randn(oc, generator=g)
        xs, xz, os_, oz = 0.02, 100, 0.4, 90
        p = k.pack_conv2d_weight(w, ws, torch.zeros(oc, dtype=torch.int32), st, pd, 1, gr)

        def prepack(bias):
            return torch.ops.quantized.conv2d_prepack(qw(w, ws), bias, [st, st], [pd, pd], [1, 1], gr)

        for bias in (None, b):
            for relu in (False, True):
                op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
                theirs = op(qt(x, xs, xz), prepack(bias), os_, oz).int_repr()
                record("conv2d", (nb, c, h, w_, oc, ks, st, pd, gr), k.conv2d(x, xs, xz, p, bias, os_, oz, relu=relu),
                       theirs, bias=bias is not None, relu=relu)
            if engine == "onednn":
                out_shape = k.conv2d(x, xs, xz, p, bias, os_, oz).shape
                other = torch.randint(0, 256, out_shape, dtype=torch.uint8, generator=g)
                for relu in (False, True):
                    op = torch.ops.quantized.conv2d_add_relu if relu else torch.ops.quantized.conv2d_add
                    theirs = op(qt(x, xs, xz), qt(other, 0.3, 77), prepack(bias), os_, oz).int_repr()
                    mine = k.conv2d(x, xs, xz, p, bias, os_, oz, relu=relu, other=other, other_scale=0.3,
                                    other_zero_point=77)
                    record("conv2d_add", (nb, c, h, w_, oc, ks, st, pd, gr), mine, theirs, bias=bias is not None,
                           relu=relu)
    # ---- quantized add (+relu)
    a = torch.randint(0, 256, (2, 8, 9, 11), dtype=torch.uint8, generator=g)
    bb = torch.randint(0, 256, (2, 8, 9, 11), dtype=torch.uint8, generator=g)
    for relu in (False, True):
        op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
        theirs = op(qt(a, 0.05, 3), qt(bb, 0.03, 200), 0.07, 50).int_repr()
        record("add", a.shape, k.add(a, 0.05, 3, bb, 0.03, 200, 0.07, 50, relu=relu), theirs, relu=relu)
    # ---- dynamic linear: fp32 outputs
    for (m, kk, n) in [(1, 16, 8), (7, 64, 33), (32, 512, 64)]:
        x = torch.randn(m, kk, generator=g) * 2
        w = torch.randint(-128, 128, (n, kk), dtype=torch.int8, generator=g)
        ws = torch.rand(n, generator=g) * 0.01 + 0.001
        b = torch.randn(n, generator=g)
        theirs = torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(qw(w, ws), b), False)
        mine = k.linear_dynamic(x, k.pack_linear_weight(w, ws, torch.zeros(n, dtype=torch.int32)), b)
        err = (mine - theirs).abs()
        res["cases"].append(dict(kind="linear_dynamic", shape=[m, kk, n], max_abs=float(err.max()),
                                 max_rel=float((err / (theirs.abs() + 1e-3)).max()),
                                 out_scale=float(theirs.abs().max())))
    return res


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
