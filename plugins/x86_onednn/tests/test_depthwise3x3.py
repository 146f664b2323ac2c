"""The fused AVX-512 VNNI depthwise 3x3 row schedule (csrc/depthwise3x3_vnni.c), bit-exact with
the core's reference lowering and the scalar path on the shape classes it special-cases: full
64-channel groups, 16-channel tail chunks (lanes as output rows) and partial chunks (nc < 16),
padding / border rows and columns, row stride and dilation (the general tail staging), odd
widths, batches and thread task boundaries, the relu clamp and saturating requantization. Each
case also runs the general VNNI depthwise schedule (the probe that turns the fused one off)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_gen, on_path, rand_s8, rand_u8, weight_qparams

CASES = [
    # n, c, (h, w), pad, stride, dilation, relu
    (1, 144, (13, 11), 1, 1, 1, False),  # MobileNet: 2 groups + 1 tail chunk, odd width
    (1, 128, (6, 5), 1, 1, 1, True),     # groups only, relu (byte clamp at qmin)
    (2, 16, (9, 7), 1, 1, 1, False),     # one tail chunk, 2 images, a partial last band
    (1, 3, (5, 4), 1, 1, 1, True),       # nc = 3 < 16: masked loads and stores
    (1, 70, (7, 9), 0, 1, 1, False),     # group + partial tail chunk (6 channels), no padding
    (1, 200, (4, 6), 2, 1, 1, False),    # 3 groups + 1 partial chunk, padding 2 (whole pad columns)
    (2, 96, (10, 6), 1, (2, 1), 1, False),  # row stride 2: the per-band tail staging
    (1, 80, (9, 8), 2, 1, (2, 1), True),  # row dilation 2
    (1, 64, (3, 1), 1, 1, 1, False),     # width 1: every tap column but one is padding
    (1, 33, (1, 2), 1, 1, 1, False),     # one output row: border rows on both sides
    (1, 144, (9, 9), 1, 2, 1, False),    # column stride 2: the general schedule on every path
    (1, 20, (70, 3), 1, 1, 1, False),    # 70 rows: row blocks of at most 64 on one thread
]


def _paths(xk) -> list[str]:
    paths = list(xk.usable_isas())
    if "avx512vnni" in paths:
        paths.append("avx512vnni_dw_general")
    return paths


def _run(xk, path, fn):
    if path == "avx512vnni_dw_general":
        with xk.use_isa("avx512vnni"):
            prev = xk.lib.x86_onednn_set_dw3x3_probe(1)
            try:
                return fn()
            finally:
                xk.lib.x86_onednn_set_dw3x3_probe(prev)
    with on_path(xk, path):
        return fn()


@pytest.mark.parametrize("n,c,hw,pad,stride,dil,relu", CASES)
def test_depthwise3x3_bit_exact_every_path(xk, ref, n, c, hw, pad, stride, dil, relu):
    g = make_gen(c * 131 + hw[0] * 7 + hw[1])
    x = rand_u8(g, (n, c, *hw)).contiguous(memory_format=torch.channels_last)
    w = rand_s8(g, (c, 1, 3, 3))
    w[0] = -128  # extreme weights and inputs: exact int32 sums, nothing saturates
    x[:, 0] = 255
    ws, wz = weight_qparams(g, c)
    bias = torch.randn(c, generator=g) * 4
    # a moderate scale, one so small that most outputs clamp at both ends, and one so small
    # that products pass 2^31 (the fused kernel keeps its float clamp then)
    for out_scale, x_zp, out_zp in ((0.15, 131, 97), (0.002, 0, 255), (0.4, 255, 0), (1e-9, 17, 200)):
        ref_packed = ref.pack_conv2d_weight(w, ws, wz, stride, pad, dil, c)
        expected = ref.conv2d(x, 0.03, x_zp, ref_packed, bias, out_scale, out_zp, relu=relu)
        packed = xk.pack_conv2d_weight(w, ws, wz, stride, pad, dil, c)
        before = torch.get_num_threads()
        try:
            for threads in (1, 2):  # 2: row blocks of 4 rows, a partial last one
                torch.set_num_threads(threads)
                for path in _paths(xk):
                    out = _run(xk, path,
                               lambda: xk.conv2d(x, 0.03, x_zp, packed, bias, out_scale, out_zp, relu))
                    assert torch.equal(out, expected), (
                        f"[{path}, {threads} threads, out_scale {out_scale}] "
                        f"{int((out != expected).sum())} outputs differ")
        finally:
            torch.set_num_threads(before)


def test_depthwise3x3_add_fusion_keeps_working(xk, ref):
    """conv + add runs the general schedule (the fused one only requantizes): still exact with
    the scalar path, and the fused schedule's probe does not change it."""
    g = make_gen(5)
    c, hw = 144, (7, 9)
    x = rand_u8(g, (1, c, *hw)).contiguous(memory_format=torch.channels_last)
    other = rand_u8(g, (1, c, *hw)).contiguous(memory_format=torch.channels_last)
    w = rand_s8(g, (c, 1, 3, 3))
    ws, wz = weight_qparams(g, c)
    bias = torch.randn(c, generator=g)
    packed = xk.pack_conv2d_weight(w, ws, wz, 1, 1, 1, c)

    def call():
        return xk.conv2d(x, 0.03, 100, packed, bias, 0.2, 110, True, other=other, other_scale=0.04,
                         other_zero_point=90)

    with xk.use_isa("scalar"):
        expected = call()
    for path in _paths(xk):
        out = _run(xk, path, call)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"


def test_dw3x3_probe_returns_previous_value(xk):
    prev = xk.lib.x86_onednn_set_dw3x3_probe(1)
    try:
        assert xk.lib.x86_onednn_set_dw3x3_probe(1) == 1
    finally:
        xk.lib.x86_onednn_set_dw3x3_probe(prev)
    assert xk.lib.x86_onednn_set_dw3x3_probe(prev) == prev
