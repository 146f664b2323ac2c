"""conv2d (NHWC igemm) and add (vadd) kernels against quantplug's pure-PyTorch reference, bit for bit."""

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from quantplug.errors import KernelInputError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_problems(draw):
    depthwise = draw(st.booleans())
    # 14+ depthwise channels with multiplier 1 reach the dwconv SIMD path (full and partial 16-channel blocks)
    groups = draw(st.integers(1, 4)) if not depthwise else draw(st.integers(2, 6) | st.integers(14, 40))
    cin_g = 1 if depthwise else draw(st.integers(1, 12))
    cout_g = draw(st.integers(1, 3 if depthwise else 20))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    geometry = dict(stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                    padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
                    dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))), groups=groups)
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    assume(h + 2 * geometry["padding"][0] >= geometry["dilation"][0] * (kh - 1) + 1)
    assume(w + 2 * geometry["padding"][1] >= geometry["dilation"][1] * (kw - 1) + 1)
    return (draw(st.integers(1, 2)), cin_g * groups, h, w), (cout_g * groups, cin_g, kh, kw), geometry


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # ref conv is slow
@given(problem=conv_problems(), seed=st.integers(0, 2**31 - 1), x_zp=st.integers(-128, 127),
       out_zp=st.integers(-128, 127), relu=st.booleans(), has_bias=st.booleans(), channels_last=st.booleans())
def test_conv2d_bit_exact_vs_reference(kernels, ref, isa, problem, seed, x_zp, out_zp, relu, has_bias, channels_last):
    x_shape, w_shape, geometry = problem
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, x_shape, generator=g, dtype=torch.int8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randint(-127, 128, w_shape, generator=g, dtype=torch.int8)
    scales = torch.rand(w_shape[0], generator=g) * 0.02 + 1e-3
    zps = torch.zeros(w_shape[0], dtype=torch.int32)
    bias = torch.randn(w_shape[0], generator=g) if has_bias else None
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    out_scale = float(0.05 * scales.max() * 127 * fan_in ** 0.5 / 3)
    got = kernels.conv2d(x, 0.05, x_zp, kernels.pack_conv2d_weight(w, scales, zps, **geometry), bias, out_scale,
                         out_zp, relu=relu)
    want = ref.conv2d(x.contiguous(), 0.05, x_zp, ref.pack_conv2d_weight(w, scales, zps, **geometry), bias,
                      out_scale, out_zp, relu=relu)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want), f"{isa}: {(got.int() - want.int()).abs().max()} LSB off"


# The gemm conv path's tiling (8-row x 32-channel tiles on VNNI, weight panels, kernel-row runs):
# a 7x7 / 2 stem over 3 channels (one run of kw * cin bytes per kernel row, borders on every
# side), odd channel counts (partial 16-channel blocks), k and cout large enough for two weight
# panels, 1x1 stride 2, dilation with groups (no runs), the in-place 1x1 path, batch > 1.
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation, groups", [
    ((1, 3, 29, 31), (64, 3, 7, 7), 2, 3, 1, 1),
    ((2, 3, 17, 16), (37, 3, 7, 7), 2, 3, 1, 1),
    ((1, 5, 12, 13), (33, 5, 3, 3), 1, 1, 1, 1),
    ((2, 300, 5, 4), (150, 300, 3, 3), 1, 1, 1, 1),
    ((1, 64, 9, 9), (48, 64, 1, 1), 2, 0, 1, 1),
    ((1, 24, 10, 11), (40, 12, 3, 3), 1, 2, 2, 2),
    ((3, 7, 6, 6), (19, 7, 3, 3), 2, 1, 1, 1),
    ((1, 16, 12, 12), (96, 16, 1, 1), 1, 0, 1, 1),
])
@pytest.mark.parametrize("threads", [1, 3])
def test_conv2d_tiling_bit_exact_vs_reference(kernels, ref, isa, x_shape, w_shape, stride, padding, dilation,
                                              groups, threads):
    g = torch.Generator().manual_seed(sum(x_shape) * 31 + sum(w_shape))
    x = torch.randint(-128, 128, x_shape, generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, w_shape, generator=g, dtype=torch.int8)
    cout = w_shape[0]
    scales, zps = torch.rand(cout, generator=g) * 0.02 + 1e-3, torch.zeros(cout, dtype=torch.int32)
    bias = torch.randn(cout, generator=g) * 5
    geometry = dict(stride=(stride, stride), padding=(padding, padding), dilation=(dilation, dilation), groups=groups)
    out_scale = float(0.05 * scales.max() * 127 * (w_shape[1] * w_shape[2] * w_shape[3]) ** 0.5 / 3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        got = kernels.conv2d(x, 0.05, 7, kernels.pack_conv2d_weight(w, scales, zps, **geometry), bias, out_scale, -3)
    finally:
        torch.set_num_threads(before)
    want = ref.conv2d(x, 0.05, 7, ref.pack_conv2d_weight(w, scales, zps, **geometry), bias, out_scale, -3)
    assert torch.equal(got, want), f"{isa}: {(got.int() - want.int()).abs().max()} LSB off"


# 144 channels: two full 64-channel groups and a 16-channel tail of the AVX-512 VNNI row kernel
@pytest.mark.parametrize("kernel, stride, padding, channels", [(3, 1, 1, 48), (5, 2, 2, 37), (3, 1, 0, 16),
                                                               (3, 1, 1, 144)])
def test_depthwise_conv2d_bit_exact_vs_reference(kernels, ref, isa, kernel, stride, padding, channels):
    """Depthwise, multiplier 1 (the dwconv path): every path equals the reference, borders included."""
    g = torch.Generator().manual_seed(kernel * 100 + channels)
    x = torch.randint(-128, 128, (2, channels, 11, 9), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (channels, 1, kernel, kernel), generator=g, dtype=torch.int8)
    scales, zps = torch.rand(channels, generator=g) * 0.02 + 1e-3, torch.zeros(channels, dtype=torch.int32)
    bias = torch.randn(channels, generator=g) * 5
    geometry = dict(stride=(stride, stride), padding=(padding, padding), dilation=(1, 1), groups=channels)
    got = kernels.conv2d(x, 0.05, -9, kernels.pack_conv2d_weight(w, scales, zps, **geometry), bias, 0.2, 4)
    want = ref.conv2d(x, 0.05, -9, ref.pack_conv2d_weight(w, scales, zps, **geometry), bias, 0.2, 4)
    assert torch.equal(got, want), f"{isa}: {(got.int() - want.int()).abs().max()} LSB off"


def test_conv2d_matches_torch_conv_of_dequantized(kernels):
    """Sanity against plain torch: a 3x3 conv with padding, fp64 on dequantized values, within 1 LSB."""
    g = torch.Generator().manual_seed(4)
    x = torch.randint(-128, 128, (2, 8, 10, 10), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (16, 8, 3, 3), generator=g, dtype=torch.int8)
    s = torch.rand(16, generator=g) * 0.01 + 1e-3
    got = kernels.conv2d(x, 0.1, 5, kernels.pack_conv2d_weight(w, s, torch.zeros(16, dtype=torch.int32), padding=1),
                         None, 1.0, -3)
    y = torch.nn.functional.conv2d((x.double() - 5) * 0.1, w.double() * s.double().reshape(-1, 1, 1, 1), padding=1)
    want = torch.round(y / 1.0).clamp(-128 + 3, 127 + 3) - 3
    assert (got.double() - want).abs().max() <= 1


@SETTINGS
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1),
       a_zp=st.integers(-128, 127), b_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127), relu=st.booleans(),
       a_scale=st.floats(1e-3, 1.0), b_scale=st.floats(1e-3, 1.0), out_factor=st.floats(0.3, 3.0))
def test_add_bit_exact_vs_reference(kernels, ref, isa, shape, seed, a_zp, b_zp, out_zp, relu, a_scale, b_scale,
                                    out_factor):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)
    out_scale = (a_scale + b_scale) * out_factor
    got = kernels.add(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp, relu=relu)
    want = ref.add(a, a_scale, a_zp, b, b_scale, b_zp, out_scale, out_zp, relu=relu)
    assert torch.equal(got, want)


def test_add_large_and_channels_last(kernels, ref):
    g = torch.Generator().manual_seed(9)
    a = torch.randint(-128, 128, (2, 24, 33, 35), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (2, 24, 33, 35), generator=g, dtype=torch.int8)
    want = ref.add(a, 0.02, 3, b, 0.05, -7, 0.06, 1)
    for isa in kernels.usable_isas():
        with kernels.use_isa(isa):
            assert torch.equal(kernels.add(a, 0.02, 3, b, 0.05, -7, 0.06, 1), want), isa
            cl = kernels.add(a.contiguous(memory_format=torch.channels_last), 0.02, 3,
                             b.contiguous(memory_format=torch.channels_last), 0.05, -7, 0.06, 1)
            assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, want), isa


def test_conv_then_add_then_conv_stays_channels_last(kernels):
    g = torch.Generator().manual_seed(1)
    w = torch.randint(-127, 128, (8, 8, 3, 3), generator=g, dtype=torch.int8)
    packed = kernels.pack_conv2d_weight(w, torch.full((8,), 0.01), torch.zeros(8, dtype=torch.int32), padding=1)
    x = torch.randint(-128, 128, (1, 8, 6, 6), generator=g, dtype=torch.int8)
    y = kernels.conv2d(x, 0.1, 0, packed, None, 0.5, 0)
    z = kernels.add(y, 0.5, 0, y, 0.5, 0, 1.0, 0)
    assert z.is_contiguous(memory_format=torch.channels_last)
    assert kernels.conv2d(z, 1.0, 0, packed, None, 0.5, 0).shape == (1, 8, 6, 6)


@pytest.mark.parametrize("call, message", [
    (lambda k, p, x: k.conv2d(x[:, :4].contiguous(), 0.1, 0, p, None, 0.2, 0), "expected Cin=8 channels"),
    (lambda k, p, x: k.conv2d(x.float(), 0.1, 0, p, None, 0.2, 0), "dtype torch.float32"),
    (lambda k, p, x: k.conv2d(torch.zeros(2, 8, 1, 1, dtype=torch.int8), 0.1, 0, p, None, 0.2, 0),
     "smaller than the dilated kernel"),
    (lambda k, p, x: k.conv2d(x.transpose(2, 3), 0.1, 0, p, None, 0.2, 0), "x_q is not contiguous"),
    (lambda k, p, x: k.conv2d(x, 0.1, 300, p, None, 0.2, 0), "x_zero_point=300"),
    (lambda k, p, x: k.conv2d(x, 0.1, 0, object(), None, 0.2, 0), "packed must be a PackedConv2dWeight"),
    (lambda k, p, x: k.conv2d(x, 0.1, 0, p, torch.zeros(3), 0.2, 0), "bias has shape"),
    (lambda k, p, x: k.pack_conv2d_weight(torch.zeros(6, 2, 3, 3, dtype=torch.int8), torch.ones(6),
                                          torch.zeros(6, dtype=torch.int32), groups=4), "groups=4"),
    (lambda k, p, x: k.pack_conv2d_weight(torch.zeros(4, 2, 3, 3, dtype=torch.int8), torch.ones(4),
                                          torch.zeros(4, dtype=torch.int32), stride=0), "stride=0"),
    (lambda k, p, x: k.pack_conv2d_weight(torch.full((4, 2, 3, 3), -128, dtype=torch.int8), torch.ones(4),
                                          torch.zeros(4, dtype=torch.int32)), "narrow range"),
    (lambda k, p, x: k.add(x, 0.1, 0, x[:1], 0.1, 0, 0.2, 0), "no broadcasting"),
    (lambda k, p, x: k.add(x, 0.1, 0, x.float(), 0.1, 0, 0.2, 0), "b_q has dtype torch.float32"),
    (lambda k, p, x: k.add(x, -0.1, 0, x, 0.1, 0, 0.2, 0), "a_scale=-0.1"),
], ids=["cin", "dtype", "too-small", "strided", "zero-point", "packed-type", "bias", "groups", "stride", "narrow",
        "broadcast", "add-dtype", "add-scale"])
def test_conv_add_bad_inputs(kernels, call, message):
    w = torch.randint(-127, 128, (4, 8, 3, 3), dtype=torch.int8)
    p = kernels.pack_conv2d_weight(w, torch.full((4,), 0.01), torch.zeros(4, dtype=torch.int32))
    x = torch.zeros(2, 8, 5, 5, dtype=torch.int8)
    with pytest.raises(KernelInputError, match=message):
        call(kernels, p, x)
