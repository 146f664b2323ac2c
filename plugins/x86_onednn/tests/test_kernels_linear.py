"""Linear kernels vs the core's pure-PyTorch reference, bit-exact on every ISA path."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug.affine import choose_qparams
from quantplug.errors import KernelInputError
from quantplug.kernels import flatten_packed, requant_params, unflatten_packed

from conftest import for_each_path, isa_paths, make_gen, on_path, rand_s8, rand_u8, weight_qparams

SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

dims_m = st.sampled_from([1, 2, 3, 5, 8, 9, 17, 33])
dims_k = st.one_of(st.sampled_from([1, 2, 3, 4, 5, 7, 16, 17, 63, 64, 65, 129, 256]), st.integers(1, 300))
dims_n = st.one_of(st.sampled_from([1, 3, 15, 16, 17, 31, 33, 64]), st.integers(1, 70))
scales = st.floats(1e-3, 1.0).map(float)


@settings(**SETTINGS)
@given(m=dims_m, k=dims_k, n=dims_n, seed=st.integers(0, 2**32), x_zp=st.integers(0, 255), out_zp=st.integers(0, 255),
       x_scale=scales, out_scale=st.floats(0.01, 20.0), relu=st.booleans(), with_bias=st.booleans())
def test_static_linear_bit_exact(xk, ref, m, k, n, seed, x_zp, out_zp, x_scale, out_scale, relu, with_bias):
    g = make_gen(seed)
    x = rand_u8(g, (m, k))
    w = rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    bias = torch.randn(n, generator=g) * 5 if with_bias else None
    expected = ref.linear(x, x_scale, x_zp, ref.pack_linear_weight(w, ws, wz), bias, out_scale, out_zp, relu=relu)
    packed = xk.pack_linear_weight(w, ws, wz)

    def check(path):
        out = xk.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu)
        assert out.dtype == torch.uint8 and out.shape == (m, n)
        assert torch.equal(out, expected), f"[{path}] {int((out != expected).sum())} outputs differ"

    for_each_path(xk, check)


@settings(**SETTINGS)
@given(m=dims_m, k=dims_k, n=dims_n, seed=st.integers(0, 2**32), x_zp=st.integers(0, 255))
def test_accumulators_exact(xk, m, k, n, seed, x_zp):
    g = make_gen(seed)
    x, w = rand_u8(g, (m, k)), rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    expected = ((x.long() - x_zp) @ w.long().t()).to(torch.int32)
    packed = xk.pack_linear_weight(w, ws, wz)
    assert torch.equal(xk.unpack_linear_weight(packed), w)
    assert torch.equal(packed.col_sums, w.int().sum(1).int())
    for_each_path(xk, lambda p: torch.testing.assert_close(xk.linear_acc(x, x_zp, packed), expected, rtol=0, atol=0))


@pytest.mark.parametrize("k", [4095, 16384])
@pytest.mark.parametrize("x_val,w_val", [(255, -128), (255, 127), (0, -128), (255, None)])
def test_full_range_extremes_large_k_no_saturation(xk, ref, k, x_val, w_val):
    """Full-range uint8 with large K: no int16 saturation anywhere (vpmaddubsw would saturate
    255*-128*2 = -65280 pair sums on AVX2; VNNI and the widening paths must not)."""
    g = make_gen(k + x_val)
    m, n = 3, 19
    x = torch.full((m, k), x_val, dtype=torch.uint8)
    x[1] = rand_u8(g, (k,))
    w = rand_s8(g, (n, k)) if w_val is None else torch.full((n, k), w_val, dtype=torch.int8)
    w[0] = torch.where(torch.arange(k) % 2 == 0, -128, 127).to(torch.int8)
    ws, wz = weight_qparams(g, n)
    packed = xk.pack_linear_weight(w, ws, wz)
    for x_zp in (0, 255):
        expected_acc = ((x.long() - x_zp) @ w.long().t())
        assert int(expected_acc.abs().max()) < 2**31
        out_scale = float(expected_acc.abs().max()) * 0.02 * float(ws.max()) / 127 + 1e-3
        expected = ref.linear(x, 0.02, x_zp, ref.pack_linear_weight(w, ws, wz), None, out_scale, 128)

        def check(path, x_zp=x_zp, expected_acc=expected_acc, expected=expected, out_scale=out_scale):
            assert torch.equal(xk.linear_acc(x, x_zp, packed).long(), expected_acc), f"[{path}] accumulators"
            assert torch.equal(xk.linear(x, 0.02, x_zp, packed, None, out_scale, 128), expected), f"[{path}] outputs"

        for_each_path(xk, check)


@pytest.mark.parametrize("k,n,x_val,w_val", [(4093, 117, None, None), (16384, 117, 255, -128),
                                             (300, 64, None, None), (77, 7 * 16, None, None)])
def test_large_m_weight_panels_bit_exact(xk, ref, k, n, x_val, w_val):
    """M > 8 runs the panel schedule (L2-sized weight panels, 8x48 VNNI tiles): several
    panels, a last panel and a last 3-tile group that are partial, a partial last row block,
    4 tiles split 2+2, 1 and 2 threads; exact accumulators and outputs on every path."""
    g = make_gen(k)
    m = 37
    x = rand_u8(g, (m, k)) if x_val is None else torch.full((m, k), x_val, dtype=torch.uint8)
    w = rand_s8(g, (n, k)) if w_val is None else torch.full((n, k), w_val, dtype=torch.int8)
    x[3] = rand_u8(g, (k,))
    w[5] = rand_s8(g, (k,))
    ws, wz = weight_qparams(g, n)
    packed = xk.pack_linear_weight(w, ws, wz)
    expected_acc = ((x.long() - 7) @ w.long().t())
    out_scale = float(expected_acc.abs().max()) * 0.02 * float(ws.max()) / 127 + 1e-3
    expected = ref.linear(x, 0.02, 7, ref.pack_linear_weight(w, ws, wz), None, out_scale, 128)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)

            def check(path):
                assert torch.equal(xk.linear_acc(x, 7, packed).long(), expected_acc), f"[{path}] accumulators"
                assert torch.equal(xk.linear(x, 0.02, 7, packed, None, out_scale, 128), expected), f"[{path}]"

            for_each_path(xk, check)
    finally:
        torch.set_num_threads(before)


def test_accumulator_wraps_like_torch_int32(xk, ref):
    """A huge int32 bias overflows the same way torch's int32 addition does (no UB, no saturation)."""
    g = make_gen(3)
    x, w = rand_u8(g, (2, 40)), rand_s8(g, (5, 40))
    ws, wz = weight_qparams(g, 5)
    bias_q = torch.full((5,), 2**31 - 10, dtype=torch.int32)
    mult = torch.full((5,), 1e-7)
    acc = ((x.long() - 3) @ w.long().t())
    wrapped = ((acc + bias_q.long() + 2**31) % 2**32 - 2**31).to(torch.int32)
    expected = (torch.round((wrapped.float() * mult).clamp(-128, 127)) + 128).to(torch.uint8)
    packed = xk.pack_linear_weight(w, ws, wz)
    for_each_path(xk, lambda p: torch.testing.assert_close(
        xk.linear_requant(x, 3, packed, bias_q, mult, 128), expected, rtol=0, atol=0))


def test_linear_requant_matches_shared_requantize(xk):
    """The precomputed-multiplier entry point equals the core's C requantize of exact accumulators."""
    g = make_gen(4)
    x, w = rand_u8(g, (7, 50)), rand_s8(g, (9, 50))
    ws, wz = weight_qparams(g, 9)
    bias_q = torch.randint(-5000, 5000, (9,), generator=g, dtype=torch.int32)
    for mult in (torch.rand(9, generator=g) * 1e-3, torch.tensor([3e-4])):
        acc = ((x.long() - 11) @ w.long().t() + bias_q.long()).to(torch.int32)
        expected = xk.requantize(acc, mult, 77, torch.uint8, 77, 255)
        packed = xk.pack_linear_weight(w, ws, wz)
        for_each_path(xk, lambda p: torch.testing.assert_close(
            xk.linear_requant(x, 11, packed, bias_q, mult, 77, 77, 255), expected, rtol=0, atol=0))


def test_requant_params_match_core(xk):
    g = make_gen(5)
    ws = torch.rand(33, generator=g) * 0.01 + 1e-4
    bias = torch.randn(33, generator=g) * 100
    for x_scale, out_scale in [(0.02, 0.3), (1e-3, 7.0), (0.7, 1e-3)]:
        m_core, b_core = requant_params(x_scale, ws, out_scale, bias)
        m, b = xk.requant_params(x_scale, ws, out_scale, bias)
        assert torch.equal(m, m_core) and torch.equal(b, b_core)


def test_leading_batch_dims_and_threads(xk, ref):
    g = make_gen(6)
    x = rand_u8(g, (2, 5, 7, 96))
    w = rand_s8(g, (130, 96))
    ws, wz = weight_qparams(g, 130)
    bias = torch.randn(130, generator=g)
    expected = ref.linear(x, 0.03, 5, ref.pack_linear_weight(w, ws, wz), bias, 0.5, 99, relu=True)
    packed = xk.pack_linear_weight(w, ws, wz)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = xk.linear(x, 0.03, 5, packed, bias, 0.5, 99, relu=True)
            assert out.shape == (2, 5, 7, 130) and torch.equal(out, expected)
    finally:
        torch.set_num_threads(before)


def test_packed_weight_is_plain_picklable_data(xk):
    g = make_gen(7)
    w = rand_s8(g, (21, 37))
    ws, wz = weight_qparams(g, 21)
    packed = xk.pack_linear_weight(w, ws, wz)
    again = pickle.loads(pickle.dumps(packed))
    assert torch.equal(xk.unpack_linear_weight(again), w)
    rebuilt = unflatten_packed(type(packed), flatten_packed(packed))
    assert (rebuilt.n, rebuilt.k) == (21, 37) and torch.equal(rebuilt.packed, packed.packed)
    assert packed.packed.numel() == 2 * 40 * 16  # 2 tiles of 16 channels, K padded to 40


# ------------------------------------------------------------------ dynamic --


@settings(**SETTINGS)
@given(m=dims_m, k=dims_k, n=dims_n, seed=st.integers(0, 2**32), per_row=st.booleans(), with_bias=st.booleans(),
       kind=st.sampled_from(["normal", "positive", "negative", "zeros", "constant"]))
def test_dynamic_linear_bit_exact(xk, ref, m, k, n, seed, per_row, with_bias, kind):
    g = make_gen(seed)
    x = torch.randn(m, k, generator=g) * 3
    if kind == "positive":
        x = x.abs() + 0.5
    elif kind == "negative":
        x = -x.abs() - 0.5
    elif kind == "zeros":
        x = torch.zeros(m, k)
    elif kind == "constant":
        x = torch.full((m, k), 1.75)
    w = rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    bias = torch.randn(n, generator=g) if with_bias else None
    expected = ref.linear_dynamic(x, ref.pack_linear_weight(w, ws, wz), bias, per_row=per_row)
    packed = xk.pack_linear_weight(w, ws, wz)

    def check(path):
        out = xk.linear_dynamic(x, packed, bias, per_row=per_row)
        assert out.dtype == torch.float32 and out.shape == (m, n)
        assert torch.equal(out, expected), f"[{path}] max diff {float((out - expected).abs().max())}"

    for_each_path(xk, check)


@settings(**SETTINGS)
@given(rows=st.integers(1, 9), cols=st.integers(1, 200), seed=st.integers(0, 2**32), scale=st.floats(1e-6, 1e4))
def test_choose_qparams_match_affine(xk, rows, cols, seed, scale):
    x = torch.randn(rows, cols, generator=make_gen(seed)) * scale
    for per_row in (False, True):
        mn, mx = (x.amin(1), x.amax(1)) if per_row else (x.amin(), x.amax())
        s_ref, z_ref = choose_qparams(mn, mx, quant_min=0, quant_max=255, symmetric=False, dtype=torch.uint8)

        def check(path, per_row=per_row, s_ref=s_ref, z_ref=z_ref):
            s, z = xk.choose_qparams(x, per_row=per_row)
            assert torch.equal(s, s_ref.reshape(-1)) and torch.equal(z, z_ref.reshape(-1).int()), path

        for_each_path(xk, check)


def test_dynamic_rejects_non_finite_and_huge_k(xk):
    w = torch.zeros(3, 8, dtype=torch.int8)
    packed = xk.pack_linear_weight(w, torch.ones(3), torch.zeros(3, dtype=torch.int32))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(2, 8)
        x[1, 3] = bad
        for p in isa_paths(xk):
            with on_path(xk, p), pytest.raises(KernelInputError, match="NaN or inf"):
                xk.linear_dynamic(x, packed, None)
    big = xk.pack_linear_weight(torch.zeros(1, 65794, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32))
    with pytest.raises(KernelInputError, match="K=65794"):
        xk.linear_dynamic(torch.zeros(1, 65794), big, None)


def test_empty_batch(xk):
    w = torch.ones(4, 6, dtype=torch.int8)
    packed = xk.pack_linear_weight(w, torch.ones(4), torch.zeros(4, dtype=torch.int32))
    assert xk.linear(torch.empty(0, 6, dtype=torch.uint8), 0.1, 0, packed, None, 0.1, 0).shape == (0, 4)
    assert xk.linear_dynamic(torch.empty(0, 6), packed, None).shape == (0, 4)


# --------------------------------------------------------------- bad input --


def _packed(xk, n=4, k=8):
    return xk.pack_linear_weight(torch.ones(n, k, dtype=torch.int8), torch.ones(n), torch.zeros(n, dtype=torch.int32))


@pytest.mark.parametrize("case,match", [
    ("float_x", "dtype torch.float32"), ("int8_x", "dtype torch.int8"), ("non_contiguous", "not contiguous"),
    ("wrong_k", "last dim must be K=8"), ("meta", "meta"), ("not_tensor", "torch.Tensor"),
    ("x_scale_zero", "x_scale"), ("x_scale_nan", "x_scale"), ("out_scale_inf", "out_scale"),
    ("x_zp_256", "x_zero_point=256"), ("out_zp_neg", "out_zero_point=-1"), ("zp_float", "x_zero_point"),
    ("bias_wrong_len", "bias"), ("bias_double", "bias"), ("bias_nan", "NaN"), ("packed_wrong_type", "PackedLinearWeight"),
    ("tiny_multiplier", "QP_ERR_INVALID_ARGUMENT"),
])
def test_bad_linear_inputs(xk, case, match):
    packed = _packed(xk)
    x = torch.zeros(3, 8, dtype=torch.uint8)
    args = dict(x_q=x, x_scale=0.1, x_zero_point=0, packed=packed, bias=None, out_scale=0.1, out_zero_point=0)
    change = {
        "float_x": dict(x_q=x.float()), "int8_x": dict(x_q=x.to(torch.int8)),
        "non_contiguous": dict(x_q=torch.zeros(8, 3, dtype=torch.uint8).t()), "wrong_k": dict(x_q=x[:, :5].contiguous()),
        "meta": dict(x_q=torch.empty(3, 8, dtype=torch.uint8, device="meta")), "not_tensor": dict(x_q=[[0] * 8]),
        "x_scale_zero": dict(x_scale=0.0), "x_scale_nan": dict(x_scale=float("nan")), "out_scale_inf": dict(out_scale=math.inf),
        "x_zp_256": dict(x_zero_point=256), "out_zp_neg": dict(out_zero_point=-1), "zp_float": dict(x_zero_point=1.5),
        "bias_wrong_len": dict(bias=torch.zeros(3)), "bias_double": dict(bias=torch.zeros(4, dtype=torch.float64)),
        "bias_nan": dict(bias=torch.full((4,), float("nan"))), "packed_wrong_type": dict(packed=object()),
        "tiny_multiplier": dict(x_scale=1e-30, out_scale=1e30),
    }[case]
    args.update(change)
    with pytest.raises(KernelInputError, match=match):
        xk.linear(**args)


@pytest.mark.parametrize("case,match", [
    ("float_w", "w_q has dtype"), ("w_1d", "2-D"), ("scales_len", "w_scales"), ("zp_float", "w_zero_points"),
    ("asymmetric", "symmetric"), ("scale_zero", "finite and > 0"), ("scale_nan", "finite and > 0"),
    ("w_noncontig", "not contiguous"),
])
def test_bad_pack_inputs(xk, case, match):
    w, s, z = torch.ones(4, 8, dtype=torch.int8), torch.ones(4), torch.zeros(4, dtype=torch.int32)
    args = {"float_w": (w.float(), s, z), "w_1d": (w.reshape(-1), s, z), "scales_len": (w, s[:3].contiguous(), z),
            "zp_float": (w, s, z.float()), "asymmetric": (w, s, torch.tensor([0, 1, 0, 0], dtype=torch.int32)),
            "scale_zero": (w, torch.tensor([1.0, 0.0, 1.0, 1.0]), z), "scale_nan": (w, torch.tensor([1.0, float("nan"), 1, 1]), z),
            "w_noncontig": (torch.ones(8, 4, dtype=torch.int8).t(), s, z)}[case]
    with pytest.raises(KernelInputError, match=match):
        xk.pack_linear_weight(*args)


def test_tampered_packed_weight_rejected(xk):
    packed = _packed(xk)
    packed.packed = packed.packed[:10].clone()
    with pytest.raises(KernelInputError, match="packed.packed"):
        xk.linear(torch.zeros(2, 8, dtype=torch.uint8), 0.1, 0, packed, None, 0.1, 0)


def test_c_entry_points_validate_without_python(xk):
    """The C kernels reject bad arguments themselves (status 1), never crash."""
    lib, ffi = xk.lib, xk.ffi
    NULL = ffi.NULL
    x = ffi.new("uint8_t[8]")
    out = ffi.new("uint8_t[8]")
    w = ffi.new("int8_t[64]")
    cs = ffi.new("int32_t[1]")
    sc = ffi.new("float[1]", [1.0])
    assert lib.x86_onednn_linear_u8(NULL, 1, 4, 0.1, 0, w, cs, sc, 1, NULL, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_u8(x, 1, 4, 0.1, 0, NULL, cs, sc, 1, NULL, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_u8(x, 1, 4, 0.1, 0, w, cs, sc, 1, NULL, 0.1, 0, 0, 255, NULL) == 1
    assert lib.x86_onednn_linear_u8(x, 1, 4, 0.1, 300, w, cs, sc, 1, NULL, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_u8(x, 1, 4, 0.1, 0, w, cs, sc, 1, NULL, 0.1, 0, 10, 5, out) == 1
    assert lib.x86_onednn_linear_u8(x, 1, 4, -1.0, 0, w, cs, sc, 1, NULL, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_u8(x, 2**62, 2**62, 0.1, 0, w, cs, sc, 1, NULL, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_u8_requant(x, 1, 4, 0, w, cs, 1, NULL, sc, 2, 0, 0, 255, out) == 1
    assert lib.x86_onednn_linear_dynamic_f32(NULL, 1, 4, w, cs, sc, 1, NULL, 0, ffi.new("float[1]"), NULL, NULL) == 1
    assert lib.x86_onednn_pack_linear_weight(NULL, 1, 4, w, cs) == 1
    assert lib.x86_onednn_choose_qparams_u8(ffi.new("float[1]"), 1, 1, 0, NULL, NULL) == 1
    assert lib.x86_onednn_add_u8(x, 0.1, 0, NULL, 0.1, 0, 8, 0.1, 0, 0, 255, out) == 1
    assert lib.x86_onednn_add_u8(x, 0.1, 0, x, 0.0, 0, 8, 0.1, 0, 0, 255, out) == 1
    geom = ffi.new("int64_t[6]", [1, 1, 0, 0, 1, 1])
    assert lib.x86_onednn_conv2d_u8(x, 1, 2, 2, 1, 0.1, 0, w, cs, sc, 1, 1, 1, 1, NULL, NULL, NULL, 1.0, 0,
                                    0.1, 0, 0, 255, out, 2, 2) == 1
    assert lib.x86_onednn_conv2d_u8(x, 1, 2, 2, 1, 0.1, 0, w, cs, sc, 1, 1, 1, 1, geom, NULL, NULL, 1.0, 0,
                                    0.1, 0, 0, 255, out, 3, 3) == 1  # wrong output size
    assert lib.x86_onednn_conv2d_u8(x, 1, 2, 2, 1, 0.1, 0, w, cs, sc, 1, 1, 1, 1, geom, NULL, NULL, 1.0, 0,
                                    0.1, 0, 0, 255, out, 2, 2) == 0


def test_cached_requant_follows_in_place_bias_and_qparam_changes(xk, ref):
    """The hot path caches multipliers / int32 bias on the packed weight; an in-place bias edit,
    new scales or a new bias object must never reuse stale values."""
    g = make_gen(3)
    w = rand_s8(g, (20, 33))
    ws, wz = weight_qparams(g, 20)
    x = rand_u8(g, (4, 33))
    bias = torch.randn(20, generator=g)
    packed = xk.pack_linear_weight(w, ws, wz)
    rp = ref.pack_linear_weight(w, ws, wz)
    for xs, os_ in ((0.02, 0.05), (0.02, 0.05), (0.03, 0.05), (0.03, 0.07)):
        assert torch.equal(xk.linear(x, xs, 7, packed, bias, os_, 9), ref.linear(x, xs, 7, rp, bias, os_, 9))
    bias.mul_(3.0)
    assert torch.equal(xk.linear(x, 0.03, 7, packed, bias, 0.07, 9), ref.linear(x, 0.03, 7, rp, bias, 0.07, 9))
    bias[0] = float("nan")
    with pytest.raises(KernelInputError, match="bias"):
        xk.linear(x, 0.03, 7, packed, bias, 0.07, 9)
    assert torch.equal(xk.linear(x, 0.03, 7, packed, None, 0.07, 9, relu=True),
                       ref.linear(x, 0.03, 7, rp, None, 0.07, 9, relu=True))


# ------------------------------------------------- GEMV kernel and plans --


@pytest.mark.parametrize("m", [1, 2, 3, 4, 9, 10])
@pytest.mark.parametrize("k,n", [(1, 1), (3, 17), (15, 33), (64, 31), (67, 95), (257, 7 * 16 + 1), (768, 80)])
def test_gemv_rows_bit_exact(xk, ref, m, k, n):
    """Decode-style row counts (1-4 rows, and 1-2 leftover rows after an 8-row block, which
    the AVX-512 VNNI GEMV kernel runs 2 tiles at a time with interleaved k-groups): odd and
    single tiles, K not a multiple of 4 or of the 4-group interleave; exact on every path."""
    g = make_gen(m * 1000 + k * 7 + n)
    x, w = rand_u8(g, (m, k)), rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    bias = torch.randn(n, generator=g) * 5
    packed = xk.pack_linear_weight(w, ws, wz)
    expected_acc = ((x.long() - 131) @ w.long().t()).to(torch.int32)
    out_scale = float(expected_acc.abs().max()) * 0.02 * float(ws.max()) / 127 + 1e-3
    expected = ref.linear(x, 0.02, 131, ref.pack_linear_weight(w, ws, wz), bias, out_scale, 120)

    def check(path):
        assert torch.equal(xk.linear_acc(x, 131, packed), expected_acc), f"[{path}] accumulators"
        assert torch.equal(xk.linear(x, 0.02, 131, packed, bias, out_scale, 120), expected), f"[{path}] outputs"

    for_each_path(xk, check)


def test_gemv_extremes_large_k(xk):
    """One and two rows at K = 16384 with extreme values: the GEMV chains never saturate."""
    k, n = 16384, 35
    x = torch.full((2, k), 255, dtype=torch.uint8)
    w = torch.full((n, k), -128, dtype=torch.int8)
    w[1] = 127
    ws, wz = weight_qparams(make_gen(1), n)
    packed = xk.pack_linear_weight(w, ws, wz)
    for m in (1, 2):
        expected = (x[:m].long() @ w.long().t()).to(torch.int32)
        for_each_path(xk, lambda p, m=m, expected=expected: torch.testing.assert_close(
            xk.linear_acc(x[:m], 0, packed), expected, rtol=0, atol=0))


def test_linear_plan_follows_every_input_it_caches(xk, ref):
    """The static hot path caches a C plan on the packed weight; every change of what the plan
    was computed from (qparams, relu, bias object or values, in-place scales / column sums, a
    replaced packed buffer) must give the result of a fresh computation."""
    g = make_gen(11)
    n, k = 37, 70
    w = rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    x = rand_u8(g, (3, k))
    bias = torch.randn(n, generator=g)
    packed = xk.pack_linear_weight(w, ws, wz)

    def expect(xz, oz, relu, b):
        return ref.linear(x, 0.02, xz, ref.pack_linear_weight(w, packed.scales, wz), b, 0.05, oz, relu=relu)

    for xz, oz, relu, b in ((7, 9, False, bias), (7, 9, False, bias), (8, 9, False, bias), (8, 10, False, bias),
                            (8, 10, True, bias), (8, 10, True, None), (8, 10, True, bias.clone())):
        assert torch.equal(xk.linear(x, 0.02, xz, packed, b, 0.05, oz, relu=relu), expect(xz, oz, relu, b))
    packed.scales.mul_(1.5)
    assert torch.equal(xk.linear(x, 0.02, 8, packed, bias, 0.05, 10), expect(8, 10, False, bias))
    # column sums edited in place (a hand-built weight): the plan's folded bias must follow
    packed.col_sums.add_(1)
    folded = ((x.long() - 8) @ w.long().t() - 8 * 1 + torch.round(bias / (0.02 * packed.scales)).long())
    mult = (0.02 * packed.scales) / 0.05
    want = (torch.round(folded.float() * mult) + 10).clamp(0, 255).to(torch.uint8)
    assert torch.equal(xk.linear(x, 0.02, 8, packed, bias, 0.05, 10), want)
    packed.col_sums.sub_(1)
    w2 = rand_s8(g, (n, k))
    new = xk.pack_linear_weight(w2, packed.scales, wz)
    packed.packed, packed.col_sums = new.packed, new.col_sums
    assert torch.equal(xk.linear(x, 0.02, 8, packed, bias, 0.05, 10),
                       ref.linear(x, 0.02, 8, ref.pack_linear_weight(w2, packed.scales, wz), bias, 0.05, 10))
    again = pickle.loads(pickle.dumps(packed))
    assert "_xo_plan" in packed.__dict__ and "_xo_plan" not in again.__dict__
    assert torch.equal(xk.linear(x, 0.02, 8, again, bias, 0.05, 10), xk.linear(x, 0.02, 8, packed, bias, 0.05, 10))


def test_linear_plan_c_entry_points_validate(xk):
    """The plan constructor refuses what x86_onednn_linear_u8 refuses; run rejects a NULL plan
    and NULL buffers with work to do; no crash on any of them."""
    lib, ffi = xk.lib, xk.ffi
    NULL = ffi.NULL
    w = ffi.new("int8_t[64]")
    cs = ffi.new("int32_t[1]")
    sc = ffi.new("float[1]", [1.0])
    bad_bias = ffi.new("float[1]", [float("nan")])
    assert lib.x86_onednn_linear_plan_new(NULL, cs, 1, 4, 0.1, 0, sc, NULL, 0.1, 0, 0, 255) == NULL
    assert lib.x86_onednn_linear_plan_new(w, NULL, 1, 4, 0.1, 0, sc, NULL, 0.1, 0, 0, 255) == NULL
    assert lib.x86_onednn_linear_plan_new(w, cs, 1, 4, 0.1, 256, sc, NULL, 0.1, 0, 0, 255) == NULL
    assert lib.x86_onednn_linear_plan_new(w, cs, 1, 4, 0.1, 0, sc, NULL, 0.1, 0, 10, 5) == NULL
    assert lib.x86_onednn_linear_plan_new(w, cs, 1, 4, 0.0, 0, sc, NULL, 0.1, 0, 0, 255) == NULL
    assert lib.x86_onednn_linear_plan_new(w, cs, 1, 4, 0.1, 0, sc, bad_bias, 0.1, 0, 0, 255) == NULL
    assert lib.x86_onednn_linear_plan_new(w, cs, 2**62, 2**62, 0.1, 0, sc, NULL, 0.1, 0, 0, 255) == NULL
    plan = ffi.gc(lib.x86_onednn_linear_plan_new(w, cs, 1, 4, 0.1, 0, sc, NULL, 0.1, 0, 0, 255),
                  lib.x86_onednn_linear_plan_free)
    assert plan != NULL
    x, out = ffi.new("uint8_t[8]"), ffi.new("uint8_t[8]")
    xa, oa = int(ffi.cast("uintptr_t", x)), int(ffi.cast("uintptr_t", out))
    assert lib.x86_onednn_linear_plan_run(NULL, xa, 1, oa) == 1
    assert lib.x86_onednn_linear_plan_run(plan, 0, 1, oa) == 1
    assert lib.x86_onednn_linear_plan_run(plan, xa, 1, 0) == 1
    assert lib.x86_onednn_linear_plan_run(plan, xa, 2**62, oa) == 1
    assert lib.x86_onednn_linear_plan_run(plan, 0, 0, 0) == 0
    assert lib.x86_onednn_linear_plan_run(plan, xa, 2, oa) == 0


@pytest.mark.parametrize("m,k,per_row", [(1, 768, False), (8, 2048, True), (9, 40, True), (3, 6001, False),
                                         (3, 6001, True)])
def test_dynamic_plan_scratch_sizes_bit_exact(xk, ref, m, k, per_row):
    """The planned dynamic call keeps small calls' scratch on the stack and allocates larger
    ones (more than 8 per-row qparams, or more than 16 KB of quantized rows): both exact."""
    g = make_gen(m * k)
    n = 37
    x = torch.randn(m, k, generator=g) * 2
    w = rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    bias = torch.randn(n, generator=g)
    expected = ref.linear_dynamic(x, ref.pack_linear_weight(w, ws, wz), bias, per_row=per_row)
    packed = xk.pack_linear_weight(w, ws, wz)
    for_each_path(xk, lambda p: torch.testing.assert_close(
        xk.linear_dynamic(x, packed, bias, per_row=per_row), expected, rtol=0, atol=0))


def test_dynamic_plan_follows_cached_inputs(xk, ref):
    """The dynamic hot path caches copies of col_sums / scales / bias in a C plan: in-place
    edits, a new bias object, no bias, a replaced weight and NaN input are all honoured."""
    g = make_gen(12)
    n, k = 21, 50
    w = rand_s8(g, (n, k))
    ws, wz = weight_qparams(g, n)
    x = torch.randn(2, k, generator=g)
    bias = torch.randn(n, generator=g)
    packed = xk.pack_linear_weight(w, ws, wz)

    def expect(b, wq=w):
        return ref.linear_dynamic(x, ref.pack_linear_weight(wq, packed.scales, wz), b)

    for b in (bias, bias, None, bias.clone()):
        assert torch.equal(xk.linear_dynamic(x, packed, b), expect(b))
    bias.add_(1.0)
    assert torch.equal(xk.linear_dynamic(x, packed, bias), expect(bias))
    packed.scales.mul_(2.0)
    assert torch.equal(xk.linear_dynamic(x, packed, bias), expect(bias))
    w2 = rand_s8(g, (n, k))
    new = xk.pack_linear_weight(w2, packed.scales, wz)
    packed.packed, packed.col_sums = new.packed, new.col_sums
    assert torch.equal(xk.linear_dynamic(x, packed, bias), expect(bias, w2))
    bad = x.clone()
    bad[1, 7] = float("inf")
    with pytest.raises(KernelInputError, match="NaN or inf"):
        xk.linear_dynamic(bad, packed, bias)
    assert "_xo_dplan" not in pickle.loads(pickle.dumps(packed)).__dict__


def test_dynamic_plan_c_entry_points_validate(xk):
    lib, ffi = xk.lib, xk.ffi
    NULL = ffi.NULL
    w = ffi.new("int8_t[64]")
    cs = ffi.new("int32_t[1]")
    sc = ffi.new("float[1]", [1.0])
    assert lib.x86_onednn_dynamic_plan_new(NULL, cs, sc, 1, 4, NULL) == NULL
    assert lib.x86_onednn_dynamic_plan_new(w, cs, NULL, 1, 4, NULL) == NULL
    assert lib.x86_onednn_dynamic_plan_new(w, cs, ffi.new("float[1]", [0.0]), 1, 4, NULL) == NULL
    assert lib.x86_onednn_dynamic_plan_new(w, cs, sc, 1, 4, ffi.new("float[1]", [float("nan")])) == NULL
    assert lib.x86_onednn_dynamic_plan_new(w, cs, sc, 1, 65794, NULL) == NULL
    plan = ffi.gc(lib.x86_onednn_dynamic_plan_new(w, cs, sc, 1, 4, NULL), lib.x86_onednn_dynamic_plan_free)
    assert plan != NULL
    x, out = ffi.new("float[8]"), ffi.new("float[8]")
    xa, oa = int(ffi.cast("uintptr_t", x)), int(ffi.cast("uintptr_t", out))
    assert lib.x86_onednn_dynamic_plan_run(NULL, xa, 1, 0, oa) == 1
    assert lib.x86_onednn_dynamic_plan_run(plan, 0, 1, 0, oa) == 1
    assert lib.x86_onednn_dynamic_plan_run(plan, xa, 1, 0, 0) == 1
    assert lib.x86_onednn_dynamic_plan_run(plan, xa, 2**62, 1, oa) == 1
    assert lib.x86_onednn_dynamic_plan_run(plan, 0, 0, 1, 0) == 0
    assert lib.x86_onednn_dynamic_plan_run(plan, xa, 2, 1, oa) == 0
    x[5] = float("nan")
    assert lib.x86_onednn_dynamic_plan_run(plan, xa, 2, 1, oa) == 1
