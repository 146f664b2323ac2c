"""conv2d (GEMM via im2col, 1x1 direct, grouped, depthwise), add, mul and pools: bit-exact on every ISA."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug import KernelInputError

HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

CONVS = [  # N, C, H, W, Cout, kh, kw, stride, padding, dilation, groups
    (1, 3, 8, 8, 8, 3, 3, 1, 1, 1, 1),
    (2, 16, 7, 9, 32, 1, 1, 1, 0, 1, 1),  # 1x1: rows read in place
    (1, 4, 9, 9, 4, 1, 1, 2, 0, 1, 1),  # 1x1 strided: im2col
    (1, 8, 10, 10, 8, 3, 3, 2, 1, 1, 8),  # depthwise
    (1, 8, 10, 10, 16, 3, 3, 1, 1, 2, 8),  # depthwise, multiplier 2, dilated
    (3, 64, 14, 14, 64, 3, 3, 1, 1, 1, 64),  # depthwise, several 16-channel blocks
    (2, 12, 6, 7, 18, 3, 2, 1, (1, 0), 1, 3),  # grouped
    (1, 5, 5, 5, 7, 5, 5, 1, 2, 1, 1),  # padding larger than half the input
    (1, 17, 3, 3, 129, 3, 3, 1, 0, 1, 1),  # K = 153, N = 129: partial blocks
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),
    # kw * C % 4 == 0: the VNNI path reads interior patches in place (indirect rows), border
    # ones gathered; M = 49 / 198 / 9 end in 1 / 6 / 1 rows past the 8-row kernel
    (1, 64, 7, 7, 48, 3, 3, 1, 1, 1, 1),
    (2, 4, 9, 11, 20, 3, 3, 1, 1, 1, 1),
    (1, 8, 6, 6, 40, 3, 3, 2, 1, 1, 1),
    (1, 12, 5, 5, 33, 2, 2, 1, 0, 1, 1),
    # kw * C = 21 / 15: runs padded to 24 / 16 with zero weights (the RGB stem); unpadded last
    # patch: its padded last run would end past the input, so it is gathered instead
    (1, 3, 20, 20, 16, 7, 7, 2, 3, 1, 1),
    (1, 5, 9, 9, 24, 3, 3, 1, 1, 1, 1),
    (1, 5, 6, 6, 8, 3, 3, 1, 0, 1, 1),
    # indirect rows with dilation in height only (runs 2 input rows apart), and a batch-2 stem
    # whose M = 264 spans several row tiles and both images
    (2, 8, 9, 8, 20, 3, 3, 1, 2, (2, 1), 1),
    (2, 3, 23, 21, 16, 7, 7, 2, 3, 1, 1),
    # the RGB stem with ResNet's 64 channels (M = 225: several row tiles, a partial last one)
    # and a strided 3x3 with 6 blocks of 16 channels
    (1, 3, 30, 30, 64, 7, 7, 2, 3, 1, 1),
    (2, 16, 6, 5, 96, 3, 3, 2, 1, 1, 1),
]


def _all_isas(kernels, isas, fn, expected):
    for isa in isas:
        with kernels.use_isa(isa):
            got = fn()
        assert got.shape == expected.shape and got.dtype == expected.dtype, isa
        assert torch.equal(got, expected), f"{isa}: {(got.int() - expected.int()).abs().max().item()} max diff"


def _conv_case(g, n, c, h, w, co, kh, kw, groups, full_range=False, wzp=False):
    x = torch.randint(0, 256 if full_range else 128, (n, c, h, w), dtype=torch.uint8, generator=g)
    wt = torch.randint(-128, 128, (co, c // groups, kh, kw), dtype=torch.int8, generator=g)
    s = torch.rand(co, generator=g) * 0.01 + 1e-3
    z = torch.randint(-128, 128, (co,), dtype=torch.int32, generator=g) if wzp else torch.zeros(co, dtype=torch.int32)
    return x, wt, s, z


@pytest.mark.parametrize("case", CONVS)
def test_conv2d_bit_exact(kernels, ref, isas, case):
    n, c, h, w, co, kh, kw, stride, padding, dilation, groups = case
    g = torch.Generator().manual_seed(sum(case[:7]))
    x, wt, s, z = _conv_case(g, n, c, h, w, co, kh, kw, groups)
    bias = torch.randn(co, generator=g)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, padding, dilation, groups)
    rpacked = ref.pack_conv2d_weight(wt, s, z, stride, padding, dilation, groups)
    for relu in (False, True):
        expected = ref.conv2d(x, 0.04, 61, rpacked, bias, 0.3, 64, relu=relu)
        _all_isas(kernels, isas, lambda: kernels.conv2d(x, 0.04, 61, packed, bias, 0.3, 64, relu=relu), expected)
    out = kernels.conv2d(x, 0.04, 61, packed, bias, 0.3, 64)
    assert out.is_contiguous(memory_format=torch.channels_last)  # NHWC, as FBGEMM computes
    # a channels_last input is used in place and gives the same result
    assert torch.equal(kernels.conv2d(x.contiguous(memory_format=torch.channels_last), 0.04, 61, packed, bias, 0.3, 64), out)


@HYP
@given(n=st.integers(1, 2), cg=st.integers(1, 6), groups=st.integers(1, 3), cog=st.integers(1, 20),
       h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 3), kw=st.integers(1, 3),
       stride=st.integers(1, 3), pad=st.integers(0, 2), dil=st.integers(1, 2), seed=st.integers(0, 2**31 - 1),
       x_zp=st.integers(0, 255), full_range=st.booleans(), wzp=st.booleans(), has_bias=st.booleans())
def test_conv2d_sweep(kernels, ref, isas, n, cg, groups, cog, h, w, kh, kw, stride, pad, dil, seed, x_zp,
                      full_range, wzp, has_bias):
    if h + 2 * pad < dil * (kh - 1) + 1 or w + 2 * pad < dil * (kw - 1) + 1:
        return  # no output pixel
    g = torch.Generator().manual_seed(seed)
    c, co = cg * groups, cog * groups
    x, wt, s, z = _conv_case(g, n, c, h, w, co, kh, kw, groups, full_range=full_range, wzp=wzp)
    bias = torch.randn(co, generator=g) if has_bias else None
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, dil, groups)
    expected = ref.conv2d(x, 0.02, x_zp, ref.pack_conv2d_weight(wt, s, z, stride, pad, dil, groups), bias, 0.25, 50)
    _all_isas(kernels, isas, lambda: kernels.conv2d(x, 0.02, x_zp, packed, bias, 0.25, 50), expected)


@pytest.mark.parametrize("c,co,hw,wzp", [(64, 96, 7, False), (32, 160, 14, False), (64, 96, 7, True)])
def test_conv2d_few_row_tiles_threads_and_every_isa_match_reference(kernels, ref, isas, each_thread_count, c, co, hw,
                                                                     wzp):
    """Layers with few output pixels (M = 49, 196: ResNet's 7x7 / 14x14 stages) split the output
    channels across threads; the result must not depend on the thread count or the ISA."""
    g = torch.Generator().manual_seed(c + co + hw)
    x, wt, s, z = _conv_case(g, 1, c, hw, hw, co, 3, 3, 1, wzp=wzp)
    bias = torch.randn(co, generator=g)
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1)
    expected = ref.conv2d(x, 0.03, 70, ref.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1), bias, 0.4, 60)
    each_thread_count(lambda: _all_isas(kernels, isas, lambda: kernels.conv2d(x, 0.03, 70, packed, bias, 0.4, 60),
                                        expected))


@pytest.mark.parametrize("w", list(range(1, 14)))
def test_conv2d_indirect_every_row_count(kernels, ref, isas, w):
    """M = 1..13 output pixels (one row of a padded 3x3) reach each row count of the 8-row
    indirect VNNI kernel, border patches only; 80 channels = a 3-block call and a 2-block one."""
    g = torch.Generator().manual_seed(w)
    x, wt, s, z = _conv_case(g, 1, 8, 1, w, 80, 3, 3, 1)
    bias = torch.randn(80, generator=g)
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1)
    expected = ref.conv2d(x, 0.03, 70, ref.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1), bias, 0.4, 60)
    _all_isas(kernels, isas, lambda: kernels.conv2d(x, 0.03, 70, packed, bias, 0.4, 60), expected)


@pytest.mark.parametrize("co", [16, 32, 48, 64, 112, 160])
@pytest.mark.parametrize("w", [9, 13])
def test_conv2d_indirect_block_counts(kernels, ref, isas, co, w):
    """1..10 packed blocks through the indirect kernel's driver (3-block calls, 4 left as
    2 + 2, a lone or paired last block) with 1- and 5-row tails."""
    g = torch.Generator().manual_seed(co + w)
    x, wt, s, z = _conv_case(g, 1, 8, 1, w, co, 3, 3, 1)
    bias = torch.randn(co, generator=g)
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1)
    expected = ref.conv2d(x, 0.03, 70, ref.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1), bias, 0.4, 60)
    _all_isas(kernels, isas, lambda: kernels.conv2d(x, 0.03, 70, packed, bias, 0.4, 60), expected)

def test_conv2d_parity_with_torch_fbgemm(kernels):
    """Within 1 LSB of torch's fbgemm conv (the bias is added in float there, see test_torch_parity)."""
    g = torch.Generator().manual_seed(0)
    x, wt, s, z = _conv_case(g, 2, 8, 9, 9, 16, 3, 3, 1)
    bias = torch.randn(16, generator=g)
    ours = kernels.conv2d(x, 0.03, 50, kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1), bias, 0.2, 60,
                          out_quant_max=255)
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tw = torch._make_per_channel_quantized_tensor(wt, s.double(), torch.zeros(16, dtype=torch.long), 0)
            prepacked = torch.ops.quantized.conv2d_prepack(tw, bias, [1, 1], [1, 1], [1, 1], 1)
            tx = torch._make_per_tensor_quantized_tensor(x, 0.03, 50)
            theirs = torch.ops.quantized.conv2d(tx, prepacked, 0.2, 60).int_repr()
    finally:
        torch.backends.quantized.engine = before
    assert (ours.int() - theirs.int()).abs().max() <= 1


# ------------------------------------------------------------ add / mul --


def _mul_reference(a, sa, za, b, sb, zb, so, zo, lo=0, hi=127):
    mult = (torch.tensor(sa, dtype=torch.float32) * torch.tensor(sb, dtype=torch.float32)) / torch.tensor(so)
    acc = (a.to(torch.int32) - za) * (b.to(torch.int32) - zb)
    v = (acc.to(torch.float32) * mult).clamp(lo - zo, hi - zo)
    return (torch.round(v) + zo).to(torch.uint8)


@HYP
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**31 - 1),
       sa=st.floats(1e-3, 1.0), sb=st.floats(1e-3, 1.0), so=st.floats(1e-3, 2.0), za=st.integers(0, 255),
       zb=st.integers(0, 255), zo=st.integers(0, 127), relu=st.booleans())
def test_add_and_mul_bit_exact(kernels, ref, isas, shape, seed, sa, sb, so, za, zb, zo, relu):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    _all_isas(kernels, isas, lambda: kernels.add(a, sa, za, b, sb, zb, so, zo, relu=relu),
              ref.add(a, sa, za, b, sb, zb, so, zo, relu=relu))
    _all_isas(kernels, isas, lambda: kernels.mul(a, sa, za, b, sb, zb, so, zo, relu=relu),
              _mul_reference(a, sa, za, b, sb, zb, so, zo, lo=zo if relu else 0))


def test_add_large_and_channels_last(kernels, ref, isas):
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 128, (4, 32, 40, 40), dtype=torch.uint8, generator=g)  # several parallel chunks
    b = torch.randint(0, 128, (4, 32, 40, 40), dtype=torch.uint8, generator=g)
    expected = ref.add(a, 0.05, 10, b, 0.03, 70, 0.06, 40)
    _all_isas(kernels, isas, lambda: kernels.add(a, 0.05, 10, b, 0.03, 70, 0.06, 40), expected)
    al, bl = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
    out = kernels.add(al, 0.05, 10, bl, 0.03, 70, 0.06, 40)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, expected)
    assert torch.equal(kernels.add(al, 0.05, 10, b, 0.03, 70, 0.06, 40), expected)  # mixed layouts


# ---------------------------------------------------------------- pools --


def _avg_reference(x, zp, k, s, p, ceil_mode, cip, div_override):
    xc = x.to(torch.float64) - zp
    sums = F.avg_pool2d(xc, k, s, p, ceil_mode, True, divisor_override=1)
    ones = torch.ones_like(xc[:1, :1])
    valid = F.avg_pool2d(ones, k, s, p, ceil_mode, True, divisor_override=1)
    if div_override:
        div = torch.full_like(valid, div_override)
    else:
        div = torch.round(valid / F.avg_pool2d(ones, k, s, p, ceil_mode, cip))
    v = (sums.to(torch.float32) / div.to(torch.float32)).clamp(-zp, 255 - zp)
    return (torch.round(v) + zp).to(torch.uint8)


@HYP
@given(n=st.integers(1, 2), c=st.integers(1, 40), h=st.integers(1, 12), w=st.integers(1, 12),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2),
       ceil_mode=st.booleans(), cip=st.booleans(), div=st.sampled_from([None, 3]), zp=st.integers(0, 127),
       seed=st.integers(0, 2**31 - 1))
def test_pools_bit_exact(kernels, isas, n, c, h, w, k, s, p, d, ceil_mode, cip, div, zp, seed):
    if 2 * p > k or h + 2 * p < d * (k - 1) + 1 or w + 2 * p < d * (k - 1) + 1 or h + 2 * p < k or w + 2 * p < k:
        return
    x = torch.randint(0, 128, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    expected_max = F.max_pool2d(x.to(torch.float32), k, s, p, d, ceil_mode)
    if not bool(torch.isinf(expected_max).any()):  # a dilated window can miss the input entirely
        # max pooling is the core's shared kernel (qp_max_pool2d_nhwc_u8), inherited by FbgemmKernels
        _all_isas(kernels, isas, lambda: kernels.max_pool2d(x, k, s, p, d, ceil_mode), expected_max.to(torch.uint8))
    expected_avg = _avg_reference(x, zp, k, s, p, ceil_mode, cip, div)
    _all_isas(kernels, isas, lambda: kernels.avg_pool2d(x, k, s, p, ceil_mode, cip, div, zero_point=zp), expected_avg)


@pytest.mark.parametrize("shape,out", [((2, 8, 7, 7), 1), ((1, 3, 10, 7), (3, 4)), ((1, 300, 5, 6), (5, 2)),
                                       ((1, 2, 3, 3), (5, 5))])
def test_adaptive_avg_pool_bit_exact(kernels, isas, shape, out):
    x = torch.randint(0, 128, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    zp = 37
    oh, ow = (out, out) if isinstance(out, int) else out
    expected = torch.empty(shape[0], shape[1], oh, ow, dtype=torch.uint8)
    h, w = shape[2:]
    for i in range(oh):
        for j in range(ow):
            y0, y1 = i * h // oh, -(-(i + 1) * h // oh)
            x0, x1 = j * w // ow, -(-(j + 1) * w // ow)
            win = x[:, :, y0:y1, x0:x1].to(torch.int64) - zp
            v = win.sum((2, 3)).to(torch.float32) / float(win.shape[2] * win.shape[3])
            expected[:, :, i, j] = (torch.round(v) + zp).clamp(0, 255).to(torch.uint8)
    _all_isas(kernels, isas, lambda: kernels.adaptive_avg_pool2d(x, out, zero_point=zp), expected)
    # and it matches the float model within one step (ties may round differently in float)
    ref = torch.round(F.adaptive_avg_pool2d(x.float() - zp, (oh, ow))) + zp
    assert (kernels.adaptive_avg_pool2d(x, out, zero_point=zp).float() - ref).abs().max() <= 1


def test_pools_parity_with_torch_quantized(kernels):
    x = torch.randint(0, 128, (2, 16, 9, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qx = torch._make_per_tensor_quantized_tensor(x, 0.1, 20)
        tmax = torch.nn.functional.max_pool2d(qx, 3, 2, 1).int_repr()
        tavg = torch.ao.nn.quantized.functional.avg_pool2d(qx, 3, 2, 1).int_repr()
        tada = torch.ao.nn.quantized.functional.adaptive_avg_pool2d(qx, (2, 2)).int_repr()
    assert torch.equal(kernels.max_pool2d(x, 3, 2, 1), tmax)
    assert (kernels.avg_pool2d(x, 3, 2, 1, zero_point=20).int() - tavg.int()).abs().max() <= 1
    assert (kernels.adaptive_avg_pool2d(x, (2, 2), zero_point=20).int() - tada.int()).abs().max() <= 1


# ----------------------------------------------------------- bad inputs --


def test_conv_and_eltwise_reject_bad_inputs(kernels):
    wt = torch.zeros(4, 2, 3, 3, dtype=torch.int8)
    s, z = torch.ones(4), torch.zeros(4, dtype=torch.int32)
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 1)
    x = torch.zeros(1, 2, 5, 5, dtype=torch.uint8)
    cases = [
        (lambda: kernels.conv2d(x.to(torch.int8), 0.1, 0, packed, None, 0.1, 0), "x_q has dtype torch.int8"),
        (lambda: kernels.conv2d(x[0], 0.1, 0, packed, None, 0.1, 0), "x_q must be 4-D"),
        (lambda: kernels.conv2d(torch.zeros(1, 3, 5, 5, dtype=torch.uint8), 0.1, 0, packed, None, 0.1, 0),
         "x_q has 3 channels, the weight expects 2"),
        (lambda: kernels.conv2d(torch.zeros(1, 2, 1, 1, dtype=torch.uint8),
                                0.1, 0, kernels.pack_conv2d_weight(wt, s, z, 1, 0, 1, 1), None, 0.1, 0),
         "smaller than the"),
        (lambda: kernels.conv2d(x, 0.0, 0, packed, None, 0.1, 0), "x_scale must be a finite float > 0"),
        (lambda: kernels.conv2d(x, 0.1, 0, packed, torch.zeros(3), 0.1, 0), r"bias has shape \(3,\)"),
        (lambda: kernels.conv2d(x, 0.1, 0, "w", None, 0.1, 0), "PackedConv2dWeight"),
        (lambda: kernels.conv2d(x.to("meta"), 0.1, 0, packed, None, 0.1, 0), "x_q is on meta"),
        (lambda: kernels.pack_conv2d_weight(wt, s, z, 0, 1, 1, 1), "stride must be >= 1"),
        (lambda: kernels.pack_conv2d_weight(wt, s, z, 1, -1, 1, 1), "padding must be >= 0"),
        (lambda: kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 3), "groups=3 must be a positive int dividing"),
        (lambda: kernels.pack_conv2d_weight(wt[:, :, :, :, None], s, z), "w_q must be 4-D"),
        (lambda: kernels.add(x, 0.1, 0, x[:, :1], 0.1, 0, 0.1, 0), "must have the same shape"),
        (lambda: kernels.add(x, 0.1, 0, x.to(torch.int8), 0.1, 0, 0.1, 0), "b_q has dtype torch.int8"),
        (lambda: kernels.mul(x, 0.1, 300, x, 0.1, 0, 0.1, 0), r"a_zero_point=300 is outside"),
        (lambda: kernels.mul(x, 0.1, 0, x, float("nan"), 0, 0.1, 0), "b_scale must be a finite float"),
        (lambda: kernels.max_pool2d(x, 2, 1, 2), r"max_pool2d .*padding 2x2.*QP_ERR_INVALID_ARGUMENT"),
        (lambda: kernels.max_pool2d(x, 7), "does not fit input"),
        (lambda: kernels.avg_pool2d(x, 2, zero_point=-1), "zero_point=-1 is outside"),
        (lambda: kernels.avg_pool2d(x, 2, divisor_override=0, zero_point=0), "divisor_override must be a positive int"),
        (lambda: kernels.adaptive_avg_pool2d(x, 0, zero_point=0), "output_size must be >= 1"),
    ]
    for fn, match in cases:
        with pytest.raises(KernelInputError, match=match):
            fn()
