"""conv2d, the fused conv2d + add (+ relu) and add kernels, bit-exact on every ISA path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug.errors import KernelInputError

from conftest import for_each_path, make_gen, rand_s8, rand_u8, weight_qparams

SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_geometry(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    depthwise = draw(st.booleans()) and groups == 1
    cpg = draw(st.integers(1, 6))
    c = cpg * groups
    oc = groups * draw(st.integers(1, 7))
    if depthwise:  # groups == channels
        c = draw(st.integers(1, 12))
        groups, oc = c, c * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9))
    n = draw(st.integers(1, 2))
    return n, c, h, w, oc, (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups


def _conv_float32_add_reference(xk, x, x_scale, x_zp, w, ws, bias, geometry, other, o_scale, o_zp, out_scale, out_zp, relu):
    """The documented fused numerics in plain torch (float32 ops in the kernel's order)."""
    stride, padding, dilation, groups = geometry
    acc = torch.nn.functional.conv2d(x.double() - x_zp, w.double(), None, stride, padding, dilation, groups).to(torch.int64)
    mult, bias_q = xk.requant_params(x_scale, ws, out_scale, bias)
    acc = (acc + bias_q.reshape(1, -1, 1, 1)).to(torch.int32)
    f1 = acc.float() * mult.reshape(1, -1, 1, 1)
    f2 = (other.int() - o_zp).float() * (torch.tensor(o_scale, dtype=torch.float32) / torch.tensor(out_scale, dtype=torch.float32))
    lo = out_zp if relu else 0
    v = (f1 + f2).clamp(lo - out_zp, 255 - out_zp)
    return (torch.round(v) + out_zp).to(torch.uint8)


@settings(**SETTINGS)
@given(geom=conv_geometry(), seed=st.integers(0, 2**32), x_zp=st.integers(0, 255), out_zp=st.integers(0, 255),
       relu=st.booleans(), with_bias=st.booleans(), channels_last=st.booleans())
def test_conv2d_bit_exact(xk, ref, geom, seed, x_zp, out_zp, relu, with_bias, channels_last):
    n, c, h, w_, oc, ks, stride, pad, dil, groups = geom
    g = make_gen(seed)
    x = rand_u8(g, (n, c, h, w_))
    w = rand_s8(g, (oc, c // groups, *ks))
    ws, wz = weight_qparams(g, oc)
    bias = torch.randn(oc, generator=g) if with_bias else None
    out_scale = 0.05 * (c // groups * ks[0] * ks[1]) ** 0.5
    expected = ref.conv2d(x, 0.03, x_zp, ref.pack_conv2d_weight(w, ws, wz, stride, pad, dil, groups), bias,
                          out_scale, out_zp, relu=relu)
    packed = xk.pack_conv2d_weight(w, ws, wz, stride, pad, dil, groups)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def check(path):
        out = xk.conv2d(xin, 0.03, x_zp, packed, bias, out_scale, out_zp, relu=relu)
        assert out.shape == expected.shape and out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"

    for_each_path(xk, check, conv=True)


@pytest.mark.parametrize("c,oc,hw,ks,stride,groups", [(256, 160, 5, 3, 1, 1), (8, 24, 6, 3, 2, 1),
                                                      (3, 40, 11, 7, 2, 1), (144, 144, 9, 3, 2, 144),
                                                      (40, 40, 8, 5, 1, 40)])
def test_conv2d_large_shapes_bit_exact(xk, ref, c, oc, hw, ks, stride, groups):
    """Shapes the small hypothesis geometries miss: several weight panels with the im2col rows
    built once (K=2304), a 7x7/2 first layer (im2col runs of kw*c bytes), and the VNNI
    depthwise schedule on many channel chunks (stride 2; 5x5 = two 4-tap groups per row)."""
    g = make_gen(c * 1000 + oc)
    x = rand_u8(g, (2, c, hw, hw)).contiguous(memory_format=torch.channels_last)
    w = rand_s8(g, (oc, c // groups, ks, ks))
    ws, wz = weight_qparams(g, oc)
    bias = torch.randn(oc, generator=g)
    pad = ks // 2
    out_scale = 0.05 * (c // groups * ks * ks) ** 0.5
    expected = ref.conv2d(x, 0.03, 77, ref.pack_conv2d_weight(w, ws, wz, stride, pad, 1, groups), bias,
                          out_scale, 120, relu=True)
    packed = xk.pack_conv2d_weight(w, ws, wz, stride, pad, 1, groups)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)

            def check(path):
                out = xk.conv2d(x, 0.03, 77, packed, bias, out_scale, 120, relu=True)
                assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"

            for_each_path(xk, check, conv=True)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n,c,hw,oc,ks,stride,pad,dil", [
    (1, 3, (23, 30), 64, 7, 2, 3, 1),   # stem: 21-byte kernel rows padded to 24, borders on all sides
    (2, 5, (9, 7), 80, 3, 1, 1, 1),     # 5 tiles (4 + 1), rows not a multiple of 6, 2 images
    (1, 12, (6, 6), 33, 3, 2, 0, 1),    # unpadded: the last kernel row ends at the input's end
    (1, 3, (5, 7), 16, 3, 1, 0, 1),     # 9-byte rows padded to 12: the last ones are built, not read
    (1, 4, (10, 9), 48, (3, 2), 1, (2, 0), (2, 1)),  # dilated rows (indirect), 3 tiles
    (1, 8, (9, 9), 16, 3, 1, 1, (1, 2)),  # dilated columns: im2col on every path
    (2, 64, (5, 5), 64, 1, 2, 0, 1),    # 1x1 stride 2 (a downsample): one segment per row
])
def test_conv2d_indirect_edges_bit_exact(xk, ref, n, c, hw, oc, ks, stride, pad, dil):
    """Shapes aimed at the indirect (igemm) conv schedule: segments read from the input vs
    built at the borders (pad value), padded kernel rows, partial 6-row blocks and 4-tile
    calls; the same on im2col paths and the scalar reference."""
    g = make_gen(c * 100 + oc)
    x = rand_u8(g, (n, c, *hw)).contiguous(memory_format=torch.channels_last)
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    w = rand_s8(g, (oc, c, kh, kw))
    ws, wz = weight_qparams(g, oc)
    bias = torch.randn(oc, generator=g)
    out_scale = 0.05 * (c * kh * kw) ** 0.5
    expected = ref.conv2d(x, 0.03, 201, ref.pack_conv2d_weight(w, ws, wz, stride, pad, dil, 1), bias,
                          out_scale, 17, relu=False)
    packed = xk.pack_conv2d_weight(w, ws, wz, stride, pad, dil, 1)

    def check(path):
        out = xk.conv2d(x, 0.03, 201, packed, bias, out_scale, 17)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"

    for_each_path(xk, check, conv=True)


def test_conv2d_revalidates_replaced_packed_tensors(xk):
    """The packed-weight check is remembered per tensor identity and version: a tensor swapped
    or resized afterwards is checked again (clear error, no out-of-bounds read)."""
    w = torch.ones(4, 3, 3, 3, dtype=torch.int8)
    packed = xk.pack_conv2d_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32), 1, 1, 1, 1)
    x = torch.zeros(1, 3, 6, 6, dtype=torch.uint8)
    xk.conv2d(x, 0.1, 0, packed, None, 0.1, 0)
    packed.packed = packed.packed[:-16].clone()
    with pytest.raises(KernelInputError, match="packed.packed"):
        xk.conv2d(x, 0.1, 0, packed, None, 0.1, 0)
    packed = xk.pack_conv2d_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32), 1, 1, 1, 1)
    xk.conv2d(x, 0.1, 0, packed, None, 0.1, 0)
    packed.scales.resize_(3)
    with pytest.raises(KernelInputError, match="packed.scales"):
        xk.conv2d(x, 0.1, 0, packed, None, 0.1, 0)
    bias = torch.zeros(4)
    xk.conv2d(x, 0.1, 0, xk.pack_conv2d_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32)), bias, 0.1, 0)
    bias[1] = float("nan")  # an in-place change bumps the version: the NaN check runs again
    with pytest.raises(KernelInputError, match="bias"):
        xk.conv2d(x, 0.1, 0, xk.pack_conv2d_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32)), bias, 0.1, 0)


@settings(**SETTINGS)
@given(geom=conv_geometry(), seed=st.integers(0, 2**32), zps=st.tuples(*[st.integers(0, 255)] * 3),
       o_scale=st.floats(0.01, 1.0), relu=st.booleans())
def test_conv2d_add_fusion_bit_exact(xk, geom, seed, zps, o_scale, relu):
    n, c, h, w_, oc, ks, stride, pad, dil, groups = geom
    x_zp, o_zp, out_zp = zps
    g = make_gen(seed)
    x = rand_u8(g, (n, c, h, w_))
    w = rand_s8(g, (oc, c // groups, *ks))
    ws, _ = weight_qparams(g, oc)
    bias = torch.randn(oc, generator=g)
    packed = xk.pack_conv2d_weight(w, ws, torch.zeros(oc, dtype=torch.int32), stride, pad, dil, groups)
    out_shape = xk.conv2d(x, 0.03, x_zp, packed, bias, 1.0, 0).shape
    other = rand_u8(g, out_shape)
    out_scale = 0.05 * (c // groups * ks[0] * ks[1]) ** 0.5
    expected = _conv_float32_add_reference(xk, x, 0.03, x_zp, w, ws, bias, (stride, pad, dil, groups), other, o_scale,
                                           o_zp, out_scale, out_zp, relu)

    def check(path):
        out = xk.conv2d(x, 0.03, x_zp, packed, bias, out_scale, out_zp, relu=relu, other=other,
                        other_scale=o_scale, other_zero_point=o_zp)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"

    for_each_path(xk, check, conv=True)


def test_conv2d_add_is_one_rounding_of_conv_plus_other(xk, ref):
    """Consistency: conv+add fused differs from conv -> q -> add (two roundings) by at most 1 LSB."""
    g = make_gen(9)
    x, w = rand_u8(g, (2, 8, 9, 9)), rand_s8(g, (8, 8, 3, 3))
    ws, wz = weight_qparams(g, 8)
    packed = xk.pack_conv2d_weight(w, ws, wz, 1, 1, 1, 1)
    y = xk.conv2d(x, 0.02, 120, packed, None, 0.3, 128)
    other = rand_u8(g, y.shape)
    fused = xk.conv2d(x, 0.02, 120, packed, None, 0.3, 128, other=other, other_scale=0.3, other_zero_point=128)
    two_step = xk.add(y, 0.3, 128, other, 0.3, 128, 0.3, 128)
    assert int((fused.int() - two_step.int()).abs().max()) <= 1


@settings(**SETTINGS)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**32),
       zps=st.tuples(*[st.integers(0, 255)] * 3), sc=st.tuples(*[st.floats(1e-3, 2.0)] * 3), relu=st.booleans())
def test_add_bit_exact(xk, ref, shape, seed, zps, sc, relu):
    g = make_gen(seed)
    a, b = rand_u8(g, shape), rand_u8(g, shape)
    expected = ref.add(a, sc[0], zps[0], b, sc[1], zps[1], sc[2], zps[2], relu=relu)

    def check(path):
        out = xk.add(a, sc[0], zps[0], b, sc[1], zps[1], sc[2], zps[2], relu=relu)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} differ"

    for_each_path(xk, check)


def test_add_large_and_mixed_layouts(xk, ref):
    g = make_gen(10)
    a, b = rand_u8(g, (2, 16, 33, 35)), rand_u8(g, (2, 16, 33, 35))
    expected = ref.add(a, 0.05, 3, b, 0.03, 200, 0.07, 50, relu=True)
    for la in (torch.contiguous_format, torch.channels_last):
        for lb in (torch.contiguous_format, torch.channels_last):
            out = xk.add(a.contiguous(memory_format=la), 0.05, 3, b.contiguous(memory_format=lb), 0.03, 200, 0.07, 50,
                         relu=True)
            assert torch.equal(out, expected)


@pytest.mark.parametrize("case,match", [
    ("three_d", "4-D"), ("float_x", "dtype"), ("wrong_channels", "channels"), ("too_small", "smaller than"),
    ("other_shape", "other has shape"), ("other_dtype", "other has dtype"), ("cuda_like_meta", "meta"),
    ("bad_scale", "x_scale"), ("bias_len", "bias"),
])
def test_bad_conv_inputs(xk, case, match):
    w = torch.ones(4, 3, 3, 3, dtype=torch.int8)
    packed = xk.pack_conv2d_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32), 1, 0, 1, 1)
    x = torch.zeros(1, 3, 6, 6, dtype=torch.uint8)
    kwargs = dict(x_q=x, x_scale=0.1, x_zero_point=0, packed=packed, bias=None, out_scale=0.1, out_zero_point=0)
    change = {"three_d": dict(x_q=x[0]), "float_x": dict(x_q=x.float()),
              "wrong_channels": dict(x_q=torch.zeros(1, 5, 6, 6, dtype=torch.uint8)),
              "too_small": dict(x_q=torch.zeros(1, 3, 2, 2, dtype=torch.uint8)),
              "other_shape": dict(other=torch.zeros(1, 4, 5, 5, dtype=torch.uint8)),
              "other_dtype": dict(other=torch.zeros(1, 4, 4, 4, dtype=torch.int8)),
              "cuda_like_meta": dict(x_q=torch.empty(1, 3, 6, 6, dtype=torch.uint8, device="meta")),
              "bad_scale": dict(x_scale=-1.0), "bias_len": dict(bias=torch.zeros(5))}[case]
    kwargs.update(change)
    with pytest.raises(KernelInputError, match=match):
        xk.conv2d(**kwargs)


@pytest.mark.parametrize("case,match", [
    ("groups", "groups"), ("stride0", "stride"), ("neg_pad", "padding"), ("three_d", "4-D"), ("asym", "symmetric"),
])
def test_bad_conv_pack_inputs(xk, case, match):
    w, s, z = torch.ones(4, 2, 3, 3, dtype=torch.int8), torch.ones(4), torch.zeros(4, dtype=torch.int32)
    args = {"groups": ((w, s, z, 1, 0, 1, 3)), "stride0": (w, s, z, 0, 0, 1, 1), "neg_pad": (w, s, z, 1, -1, 1, 1),
            "three_d": (w[0], s, z, 1, 0, 1, 1), "asym": (w, s, torch.ones(4, dtype=torch.int32), 1, 0, 1, 1)}[case]
    with pytest.raises(KernelInputError, match=match):
        xk.pack_conv2d_weight(*args)


def test_bad_add_inputs(xk):
    a = torch.zeros(2, 3, dtype=torch.uint8)
    with pytest.raises(KernelInputError, match="same shape"):
        xk.add(a, 0.1, 0, torch.zeros(3, dtype=torch.uint8), 0.1, 0, 0.1, 0)
    with pytest.raises(KernelInputError, match="dtype"):
        xk.add(a, 0.1, 0, a.float(), 0.1, 0, 0.1, 0)
    with pytest.raises(KernelInputError, match="out_scale"):
        xk.add(a, 0.1, 0, a, 0.1, 0, 0.0, 0)
    with pytest.raises(KernelInputError, match="b_zero_point"):
        xk.add(a, 0.1, 0, a, 0.1, 256, 0.1, 0)


def test_depthwise_full_range_input_keeps_sqnr(xk):
    """Full-range uint8 input (0..255) with extreme weights: int32 accumulation never saturates
    (torch's 16-bit x86 depthwise path drops to ~18 dB here); >= 35 dB against float on every path."""
    g = make_gen(7)
    c = 144
    w = torch.randn(c, 1, 3, 3, generator=g)
    s = (w.abs().amax((1, 2, 3)) / 127).float()
    w_q = torch.round(w / s[:, None, None, None]).clamp(-127, 127).to(torch.int8)
    w_q[:8] = -128  # extreme weights on some channels
    x_q = rand_u8(g, (1, c, 20, 20)).contiguous(memory_format=torch.channels_last)
    x_q[:, :8] = 255
    zp = 128
    x = (x_q.float() - zp) * 0.02
    ref = torch.nn.functional.conv2d(x.double(), (w_q.double() * s.double()[:, None, None, None]), None, 1, 1, 1, c)
    out_scale = float(ref.abs().max() / 127)
    packed = xk.pack_conv2d_weight(w_q, s, torch.zeros(c, dtype=torch.int32), 1, 1, 1, c)

    def check(path):
        out = xk.conv2d(x_q, 0.02, zp, packed, None, out_scale, zp)
        deq = (out.double() - zp) * out_scale
        sqnr = 20 * torch.log10(ref.norm() / (ref - deq).norm())
        assert sqnr >= 35, f"[{path}] SQNR {float(sqnr):.1f} dB"

    for_each_path(xk, check)
