"""Property tests: every usable ISA path equals the scalar path bit for bit, up to K = 16384.

Why the non-VNNI paths cannot saturate (reduce_range): AVX2 / AVX-512 multiply uint8 by int8
with vpmaddubsw, which adds each PAIR of products into a signed 16-bit lane, saturating.
Activations are quantized to 0..127, so a pair lies in [2*127*(-128), 2*127*127] =
[-32512, 32258], inside int16 [-32768, 32767]: the pair sums are exact, and vpmaddwd then
widens them to int32. The int32 total is exact as well: |acc| <= 16384 * 127 * 128 < 2**31.
(Full-range uint8 inputs take the exact split path; VNNI's vpdpbusd sums straight into int32.)
The dynamic linear returns ``acc * (x_scale * w_scale) + bias`` in float32, so any accumulator
difference between paths would show; its activations are chosen so that they quantize to the
extremes 0 and 127.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _per_isa(kernels, isas, fn):
    out = {}
    for isa in isas:
        with kernels.use_isa(isa):
            out[isa] = fn()
    return out


@HYP
@given(m=st.sampled_from([1, 2, 7, 8, 9, 17]), k=st.sampled_from([1, 3, 4, 63, 64, 65, 1023, 4097, 16384]),
       n=st.integers(1, 70), seed=st.integers(0, 2**31 - 1), w_mode=st.sampled_from(["min", "max", "alt", "rand"]))
def test_extreme_values_every_isa_equals_scalar(kernels, ref, isas, m, k, n, seed, w_mode):
    g = torch.Generator().manual_seed(seed)
    if w_mode == "rand":
        w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    elif w_mode == "alt":  # largest positive and negative pair sums side by side
        w = torch.where(torch.arange(k) % 4 < 2, 127, -128).to(torch.int8).expand(n, k).contiguous()
    else:
        w = torch.full((n, k), -128 if w_mode == "min" else 127, dtype=torch.int8)
    scales = torch.rand(n, generator=g) * 0.01 + 1e-4
    packed = kernels.pack_linear_weight(w, scales, torch.zeros(n, dtype=torch.int32))
    # activations at the two ends of the range: they quantize to 0 and 127 exactly
    x = torch.where(torch.rand(m, k, generator=g) < 0.8, 3.0, -1.0)
    x[0, 0] = -1.0
    bias = torch.randn(n, generator=g)
    out = _per_isa(kernels, isas, lambda: kernels.linear_dynamic(x, packed, bias))
    for isa in isas:
        assert torch.equal(out[isa], out["scalar"]), isa
    expected = ref.linear_dynamic(x, ref.pack_linear_weight(w, scales, torch.zeros(n, dtype=torch.int32)), bias)
    assert torch.equal(out["scalar"], expected)
    # static path on the same extremes, 7-bit input, unclamped output range
    x_q = torch.where(x > 0, 127, 0).to(torch.uint8)
    acc_max = float(k * 127 * 128)
    st_out = _per_isa(kernels, isas, lambda: kernels.linear(x_q, 1.0, 0, packed, None, acc_max / 100.0, 128,
                                                            out_quant_max=255))
    for isa in isas:
        assert torch.equal(st_out[isa], st_out["scalar"]), isa


@pytest.mark.parametrize("m,k,n", [(1, 768, 70), (8, 100, 33), (37, 17, 129), (3, 4096, 16)])
def test_prepared_static_linear_equals_the_one_shot_entry_point(kernels, m, k, n):
    """kernels.linear runs fbgemm_linear_prepare + fbgemm_linear_u8s8_prepared (parameters cached on
    the packed weight); the one-shot C entry point must give the same bytes, on every ISA."""
    g = torch.Generator().manual_seed(m * k + n)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.01 + 1e-4
    zps = torch.randint(-5, 5, (n,), dtype=torch.int32, generator=g)
    packed = kernels.pack_linear_weight(w, scales, zps)
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    bias = torch.randn(n, generator=g) * 5
    for isa in kernels.usable_isas():
        with kernels.use_isa(isa):
            got = kernels.linear(x, 0.02, 7, packed, bias, 0.3, 60)
            again = kernels.linear(x, 0.02, 7, packed, bias, 0.3, 60)  # cached parameters
            one_shot = torch.empty(m, n, dtype=torch.uint8)
            p = kernels.ptr
            status = kernels.lib.fbgemm_linear_u8s8(
                p(x, "uint8_t *"), m, k, 0.02, 7, p(packed.packed, "int8_t *"), p(packed.row_sums, "int32_t *"),
                p(packed.scales, "float *"), p(packed.zero_points, "int32_t *"), n, p(bias, "float *"), 0.3, 60,
                0, 127, 0, p(one_shot, "uint8_t *"))
        assert status == 0
        assert torch.equal(got, one_shot) and torch.equal(again, one_shot), isa


def test_prepared_parameters_follow_in_place_changes(kernels, ref):
    """The cache key holds tensor version counters: an in-place bias / scale edit is seen."""
    g = torch.Generator().manual_seed(9)
    w = torch.randint(-128, 128, (20, 30), dtype=torch.int8, generator=g)
    scales = torch.rand(20, generator=g) * 0.01 + 1e-4
    z = torch.zeros(20, dtype=torch.int32)
    packed = kernels.pack_linear_weight(w, scales, z)
    x = torch.randint(0, 128, (4, 30), dtype=torch.uint8, generator=g)
    bias = torch.randn(20, generator=g)
    kernels.linear(x, 0.02, 7, packed, bias, 0.3, 60)
    bias.add_(3.0)
    packed.scales.mul_(2.0)
    expected = ref.linear(x, 0.02, 7, ref.pack_linear_weight(w, packed.scales, z), bias, 0.3, 60)
    assert torch.equal(kernels.linear(x, 0.02, 7, packed, bias, 0.3, 60), expected)
    bias[0] = float("nan")
    with pytest.raises(Exception, match="bias contains inf or NaN"):
        kernels.linear(x, 0.02, 7, packed, bias, 0.3, 60)


def test_used_packed_weight_still_pickles_and_copies(kernels):
    """The validation / prepared-parameter caches (C pointers) never leak into pickles or copies."""
    import copy
    import pickle

    w = torch.randint(-128, 128, (5, 8), dtype=torch.int8)
    packed = kernels.pack_linear_weight(w, torch.full((5,), 0.01), torch.zeros(5, dtype=torch.int32))
    x = torch.randint(0, 128, (2, 8), dtype=torch.uint8)
    out = kernels.linear(x, 0.1, 3, packed, torch.ones(5), 0.2, 5)
    kernels.linear_dynamic(x.float(), packed, torch.ones(5))
    for clone in (pickle.loads(pickle.dumps(packed)), copy.deepcopy(packed)):
        assert not any(key.startswith("_fbgemm") for key in vars(clone))
        assert torch.equal(kernels.linear(x, 0.1, 3, clone, torch.ones(5), 0.2, 5), out)


@pytest.mark.parametrize("ks,channels,mult", [(3, 33, 1), (11, 16, 1), (3, 8, 2)])
def test_depthwise_every_isa_matches_reference(kernels, ref, ks, channels, mult):
    """Depthwise (incl. 11x11 = 121 taps, more than one gather batch of 64, and a channel
    multiplier) on full-range inputs: every path equals the core's pure-PyTorch conv."""
    g = torch.Generator().manual_seed(ks * channels)
    cout = channels * mult
    w = torch.randint(-128, 128, (cout, 1, ks, ks), dtype=torch.int8, generator=g)
    s = torch.rand(cout, generator=g) * 0.01 + 1e-3
    z = torch.zeros(cout, dtype=torch.int32)
    x = torch.randint(0, 256, (2, channels, 15, 13), dtype=torch.uint8, generator=g)
    packed = kernels.pack_conv2d_weight(w, s, z, 1, ks // 2, 1, channels)
    expected = ref.conv2d(x, 0.05, 130, ref.pack_conv2d_weight(w, s, z, 1, ks // 2, 1, channels), None, 0.5, 64)
    for isa in kernels.usable_isas():
        with kernels.use_isa(isa):
            got = kernels.conv2d(x, 0.05, 130, packed, None, 0.5, 64)
        assert torch.equal(got, expected), isa


@HYP
@given(c=st.integers(1, 40), h=st.integers(1, 12), w=st.integers(1, 12), sh=st.integers(1, 2), sw=st.integers(1, 2),
       ph=st.integers(0, 2), pw=st.integers(0, 2), x_zp=st.integers(0, 255), bias=st.booleans(),
       relu=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_depthwise3x3_row_path_every_isa_matches_reference(kernels, ref, isas, c, h, w, sh, sw, ph, pw, x_zp, bias,
                                                           relu, seed):
    """The 3x3 depthwise row path (multiplier 1, symmetric weights): any size, stride, padding (also
    all-padding rows), full-range inputs and extreme weights, bit-exact on every ISA."""
    if h + 2 * ph < 3 or w + 2 * pw < 3:
        return
    g = torch.Generator().manual_seed(seed)
    wt = torch.randint(-128, 128, (c, 1, 3, 3), dtype=torch.int8, generator=g)
    wt[0] = -128  # the largest magnitudes in one channel
    s = torch.rand(c, generator=g) * 0.01 + 1e-3
    z = torch.zeros(c, dtype=torch.int32)
    x = torch.randint(0, 256, (1, c, h, w), dtype=torch.uint8, generator=g)
    b = torch.randn(c, generator=g) if bias else None
    packed = kernels.pack_conv2d_weight(wt, s, z, (sh, sw), (ph, pw), 1, c)
    rpacked = ref.pack_conv2d_weight(wt, s, z, (sh, sw), (ph, pw), 1, c)
    expected = ref.conv2d(x, 0.05, x_zp, rpacked, b, 0.7, 60, relu)
    for isa in isas:
        with kernels.use_isa(isa):
            got = kernels.conv2d(x, 0.05, x_zp, packed, b, 0.7, 60, relu)
        assert torch.equal(got, expected), isa


# The VNNI row path computes 8 (or 4, or the 1..3-row tail) output rows per pass with the staged
# taps in registers, in chunks of 64 output columns, and narrows 4 rows at once; a second variant stages with
# AVX512-VBMI's vpermt2b. Shapes: output heights 3..26 (row groups of 8 and 4 and the 1..3-row
# tails), widths 9..70 (two column chunks), channel tails (5, 20) and 9
# full blocks (144), padding 0/1/2 (rows read from the x_zp padding row), batch 2, and bands
# split across 2 threads. out_scale 1e-3 gives multipliers > 0.5 (the float-clamp variant),
# 0.7 the small-multiplier one (clamp on the packed bytes); narrow out ranges and relu test
# both clamps.
DW3_ROWS = [  # n, c, h, w, pad
    (1, 144, 9, 17, 1),
    (2, 20, 6, 33, 1),
    (1, 5, 7, 16, 0),
    (1, 16, 3, 15, 2),
    (1, 32, 12, 20, 1),
    (2, 48, 5, 9, 2),
    (1, 48, 26, 18, 1),  # bands of 8 rows: the 8-row kernel
    (2, 16, 20, 9, 0),  # bands of 16 rows: 8 + 8 + 2 per image
    (1, 20, 10, 70, 1),  # two column chunks (64 + 6)
]


@pytest.mark.parametrize("case", DW3_ROWS)
def test_depthwise3x3_rows_kernel_both_staging_variants_and_threads(kernels, ref, isas, case):
    n, c, h, w, pad = case
    g = torch.Generator().manual_seed(sum(case))
    wt = torch.randint(-128, 128, (c, 1, 3, 3), dtype=torch.int8, generator=g)
    wt[0] = -128
    s = torch.rand(c, generator=g) * 0.01 + 1e-3
    z = torch.zeros(c, dtype=torch.int32)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    x[0, :, 0, :] = 255  # full-range extremes in the first row
    b = torch.randn(c, generator=g) * 50
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, pad, 1, c)
    rpacked = ref.pack_conv2d_weight(wt, s, z, 1, pad, 1, c)
    had_vbmi = kernels.lib.fbgemm_dw3_vbmi(-1)
    threads = torch.get_num_threads()
    try:
        for out_scale, lo, hi, relu in [(0.7, None, None, False), (1e-3, None, None, False), (0.7, 20, 200, True),
                                        (1e-3, 30, 100, False), (0.7, 0, 255, False)]:
            kw = dict(out_quant_min=lo, out_quant_max=hi)
            with kernels.use_isa("scalar"):
                expected = kernels.conv2d(x, 0.05, 131, packed, b, out_scale, 97, relu, **kw)
            if lo is None:  # the default range: the scalar path equals the core's reference too
                assert torch.equal(expected, ref.conv2d(x, 0.05, 131, rpacked, b, out_scale, 97, relu))
            for vbmi in (0, 1):
                kernels.lib.fbgemm_dw3_vbmi(vbmi)
                for nt in (1, 2):
                    torch.set_num_threads(nt)
                    for isa in isas:
                        with kernels.use_isa(isa):
                            got = kernels.conv2d(x, 0.05, 131, packed, b, out_scale, 97, relu, **kw)
                        assert torch.equal(got, expected), (isa, vbmi, nt, out_scale, lo, hi)
    finally:
        kernels.lib.fbgemm_dw3_vbmi(1 if had_vbmi else 0)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dist", ["uniform", "gauss"])
def test_depthwise3x3_sqnr_vs_float(kernels, dist):
    """Accuracy against float32 (reduce_range: 7-bit activations over the input's full min/max,
    per-channel 8-bit weights, 8-bit output over the output's min/max). The integer layer adds little
    to the float conv of its own dequantized operands (>= 35 dB, the 8-bit output rounding), and
    end to end it keeps >= 35 dB on uniform inputs. (Gaussian inputs lose more to the 7-bit input grid
    itself, whatever the kernel: about 34.8 dB before any kernel arithmetic.)"""
    g = torch.Generator().manual_seed(3)
    c = 48
    if dist == "gauss":
        x = torch.randn(1, c, 28, 28, generator=g) * 2.0 + 0.5
    else:
        x = torch.rand(1, c, 28, 28, generator=g) * 6.0 - 2.0
    wf = torch.randn(c, 1, 3, 3, generator=g) * 0.3
    bf = torch.randn(c, generator=g) * 0.1
    conv = lambda xx, ww: torch.nn.functional.conv2d(xx, ww, bf, 1, 1, 1, c)  # noqa: E731
    y = conv(x, wf)
    x_scale = float(x.max() - x.min()) / 127.0
    x_zp = int(round(-float(x.min()) / x_scale))
    x_q = torch.clamp(torch.round(x / x_scale) + x_zp, 0, 127).to(torch.uint8)
    w_scale = wf.abs().amax(dim=(1, 2, 3)) / 127.0
    w_q = torch.round(wf / w_scale.view(-1, 1, 1, 1)).to(torch.int8)
    out_scale = float(y.max() - y.min()) / 255.0
    out_zp = int(round(-float(y.min()) / out_scale))
    packed = kernels.pack_conv2d_weight(w_q, w_scale, torch.zeros(c, dtype=torch.int32), 1, 1, 1, c)
    y_q = kernels.conv2d(x_q, x_scale, x_zp, packed, bf, out_scale, out_zp, out_quant_max=255)
    y_hat = (y_q.float() - out_zp) * out_scale
    y_deq = conv((x_q.float() - x_zp) * x_scale, w_q.float() * w_scale.view(-1, 1, 1, 1))

    def sqnr(a, b):
        return float(10.0 * torch.log10(a.pow(2).sum() / (a - b).pow(2).sum()))

    assert sqnr(y_deq, y_hat) >= 35.0
    if dist == "uniform":
        assert sqnr(y, y_hat) >= 35.0
