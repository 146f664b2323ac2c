"""The int8 linear kernels: bit-exact against the core's pure-PyTorch reference on every ISA."""

import math
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug.affine import choose_qparams
from quantplug.kernels import flatten_packed, requant_params, unflatten_packed

SHAPES = [(1, 1, 1), (3, 17, 129), (17, 64, 3), (64, 129, 17), (129, 3, 64), (1, 129, 1), (5, 1000, 33)]
HYP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _weights(n, k, g, *, per_channel=True, wzp=False):
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.02 + 1e-4
    if not per_channel:
        scales = scales[:1].expand(n).contiguous()
    zps = torch.randint(-128, 128, (n,), dtype=torch.int32, generator=g) if wzp else torch.zeros(n, dtype=torch.int32)
    return w, scales, zps


def _check_all_isas(kernels, isas, fn, expected):
    for isa in isas:
        with kernels.use_isa(isa):
            got = fn()
        assert got.dtype == expected.dtype and got.shape == expected.shape, isa
        if not torch.equal(got, expected):
            diff = (got.to(torch.float64) - expected.to(torch.float64)).abs()
            raise AssertionError(f"{isa}: {int((diff > 0).sum())} elements differ, max {diff.max().item()}")


def test_every_x86_path_is_compiled_and_runs_here(kernels, isas):
    assert kernels.available_isas() == ["avx512vnni", "avx512", "avx2", "scalar"]
    assert "scalar" in isas
    if "avx512vnni" in kernels.cpu_features():  # this project's CI machine (Zen 4)
        assert isas == ["avx512vnni", "avx512", "avx2", "scalar"]
        assert kernels.selected_isa() == "avx512vnni"
        assert kernels.gemm_ukernel() == "fbgemm_qu8_gemm_ukernel_8x48c4__avx512vnni"
    with kernels.use_isa("scalar"):
        assert kernels.gemm_ukernel().endswith("__scalar")


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_static_linear_bit_exact(kernels, ref, isas, m, k, n, relu):
    g = torch.Generator().manual_seed(m * 10007 + k * 101 + n)
    w, s, z = _weights(n, k, g, per_channel=bool(n % 2))
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    bias = torch.randn(n, generator=g) * 4 if k % 2 else None
    args = (0.03, 61, None, bias, 0.2, 64)
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref.pack_linear_weight(w, s, z)
    expected = ref.linear(x, args[0], args[1], rpacked, bias, args[4], args[5], relu=relu)
    _check_all_isas(kernels, isas, lambda: kernels.linear(x, args[0], args[1], packed, bias, args[4], args[5], relu=relu),
                    expected)


@HYP
@given(m=st.integers(1, 70), k=st.integers(1, 300), n=st.integers(1, 70), seed=st.integers(0, 2**31 - 1),
       x_scale=st.floats(1e-4, 1.0), x_zp=st.integers(0, 127), out_scale=st.floats(1e-3, 20.0),
       out_zp=st.integers(0, 127), relu=st.booleans(), wzp=st.booleans(), has_bias=st.booleans())
def test_static_linear_sweep(kernels, ref, isas, m, k, n, seed, x_scale, x_zp, out_scale, out_zp, relu, wzp, has_bias):
    g = torch.Generator().manual_seed(seed)
    w, s, z = _weights(n, k, g, wzp=wzp)
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    bias = torch.randn(n, generator=g) * 10 if has_bias else None
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear(x, x_scale, x_zp, ref.pack_linear_weight(w, s, z), bias, out_scale, out_zp, relu=relu)
    _check_all_isas(kernels, isas, lambda: kernels.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu),
                    expected)


@pytest.mark.parametrize("k", [4, 63, 1024, 16384])
@pytest.mark.parametrize("x_val,w_val", [(127, -128), (127, 127), (0, -128), (127, None)])
def test_reduce_range_int16_pairs_never_saturate(kernels, ref, isas, k, x_val, w_val):
    """The extreme 7-bit case: every vpmaddubsw pair is 127*(-128)*2 = -32512 (>= -32768).

    All paths must agree with the exact int64 reference, up to K = 16384, with no int32
    overflow either (|acc| <= 16384 * 127 * 128 < 2**31).
    """
    m, n = 5, 33
    g = torch.Generator().manual_seed(k)
    x = torch.full((m, k), x_val, dtype=torch.uint8)
    if w_val is None:  # alternate signs: the largest positive and negative pair sums side by side
        w = torch.where(torch.arange(k) % 4 < 2, 127, -128).to(torch.int8).expand(n, k).contiguous()
    else:
        w = torch.full((n, k), w_val, dtype=torch.int8)
    s = torch.full((n,), 1.0)
    z = torch.zeros(n, dtype=torch.int32)
    acc_true = (x.to(torch.int64) @ w.to(torch.int64).t())
    assert acc_true.abs().max() < 2**31
    # out_scale chosen so the accumulator maps into the output range without clamping
    out_scale = max(float(acc_true.abs().max()) / 120.0, 1.0)
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear(x, 1.0, 0, ref.pack_linear_weight(w, s, z), None, out_scale, 127)
    ref_unclamped = torch.clamp(torch.round(acc_true.float() * (1.0 / torch.tensor(out_scale))) + 127, 0, 255)
    for isa in isas:
        with kernels.use_isa(isa):
            got = kernels.linear(x, 1.0, 0, packed, None, out_scale, 127, out_quant_max=255, raw_maddubs=True)
        # even FBGEMM's raw (saturating) arithmetic is exact for 7-bit activations
        assert torch.equal(got.to(torch.int64), ref_unclamped.to(torch.int64)), isa
    _check_all_isas(kernels, isas, lambda: kernels.linear(x, 1.0, 0, packed, None, out_scale, 127), expected)


def _maddubs_emulation(x, w):
    """What vpmaddubsw + vpmaddwd compute: int16-SATURATED sums of adjacent product pairs."""
    k = x.shape[1]
    kp = -(-k // 4) * 4
    xp = torch.nn.functional.pad(x.to(torch.int64), (0, kp - k))
    wp = torch.nn.functional.pad(w.to(torch.int64), (0, kp - k))
    prod = xp[:, None, :] * wp[None, :, :]  # [m, n, kp]
    pairs = prod.reshape(*prod.shape[:2], kp // 2, 2).sum(-1).clamp(-32768, 32767)
    return pairs.sum(-1)


def test_8bit_activations_saturate_raw_maddubs_but_split_path_is_exact(kernels, ref, isas):
    """Why fbgemm uses reduce_range: with activations above 127 the int16 pair sums saturate.

    raw_maddubs reproduces FBGEMM's arithmetic: on the AVX2 / AVX-512 paths the result equals
    the saturating emulation and differs from the exact one; VNNI (vpdpbusd) and scalar stay
    exact. Without raw_maddubs every path is exact (the split form).
    """
    m, k, n = 3, 67, 19
    g = torch.Generator().manual_seed(7)
    x = torch.randint(128, 256, (m, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    s, z = torch.ones(n), torch.zeros(n, dtype=torch.int32)
    packed = kernels.pack_linear_weight(w, s, z)
    exact = x.to(torch.int64) @ w.to(torch.int64).t()
    saturated = _maddubs_emulation(x, w)
    assert not torch.equal(exact, saturated)  # the inputs do trigger saturation
    out_scale = float(exact.abs().max()) / 100.0

    def requant(acc):
        return torch.clamp(torch.round(acc.float() * (1.0 / torch.tensor(out_scale))) + 128, 0, 255).to(torch.uint8)

    for isa in isas:
        with kernels.use_isa(isa):
            raw = kernels.linear(x, 1.0, 0, packed, None, out_scale, 128, out_quant_max=255, raw_maddubs=True)
            split = kernels.linear(x, 1.0, 0, packed, None, out_scale, 128, out_quant_max=255)
        assert torch.equal(split, requant(exact)), isa
        if isa in ("avx2", "avx512"):
            assert torch.equal(raw, requant(saturated)), isa
            assert not torch.equal(raw, split), isa
        else:
            assert torch.equal(raw, split), isa


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_full_range_uint8_inputs_are_exact(kernels, ref, isas, m, k, n):
    """A full-range uint8 tensor handed to the kernel directly is still exact on every path."""
    g = torch.Generator().manual_seed(k + n)
    w, s, z = _weights(n, k, g)
    x = torch.randint(0, 256, (m, k), dtype=torch.uint8, generator=g)
    x[0, 0] = 255
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear(x, 0.01, 128, ref.pack_linear_weight(w, s, z), None, 0.05, 100)
    _check_all_isas(kernels, isas, lambda: kernels.linear(x, 0.01, 128, packed, None, 0.05, 100), expected)


def test_extreme_qparams(kernels, ref, isas):
    g = torch.Generator().manual_seed(3)
    w, s, z = _weights(17, 129, g, wzp=True)
    x = torch.randint(0, 128, (9, 129), dtype=torch.uint8, generator=g)
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref.pack_linear_weight(w, s, z)
    unit_bias = torch.randn(17, generator=g) * 1e5  # in accumulator units: far from int32 overflow
    for x_scale, x_zp, out_scale, out_zp in [(1e-6, 0, 1e-6, 0), (10.0, 127, 1e-4, 127), (1e-3, 255, 1e4, 255),
                                             (1.0, 0, 2.0**-20, 0), (0.5, 64, 1e9, 0)]:
        bias = unit_bias * x_scale * s
        expected = ref.linear(x, x_scale, x_zp, rpacked, bias, out_scale, out_zp)
        _check_all_isas(kernels, isas, lambda: kernels.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp),
                        expected)


def test_batch_dims_are_flattened(kernels, ref):
    g = torch.Generator().manual_seed(11)
    w, s, z = _weights(7, 24, g)
    x = torch.randint(0, 128, (2, 3, 24), dtype=torch.uint8, generator=g)
    packed = kernels.pack_linear_weight(w, s, z)
    out = kernels.linear(x, 0.1, 3, packed, None, 0.3, 5)
    assert out.shape == (2, 3, 7)
    assert torch.equal(out.reshape(6, 7), kernels.linear(x.reshape(6, 24), 0.1, 3, packed, None, 0.3, 5))
    assert kernels.linear(x[:0], 0.1, 3, packed, None, 0.3, 5).shape == (0, 3, 7)


@pytest.mark.parametrize("m", list(range(1, 18)))
def test_every_row_count_of_the_wide_kernel(kernels, ref, isas, m):
    """M = 1..17 reaches each row-count body of the 8-row VNNI kernel (and the 4-row ones)."""
    g = torch.Generator().manual_seed(m)
    w, s, z = _weights(40, 70, g)
    x = torch.randint(0, 128, (m, 70), dtype=torch.uint8, generator=g)
    bias = torch.randn(40, generator=g)
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear(x, 0.05, 9, ref.pack_linear_weight(w, s, z), bias, 0.3, 70)
    _check_all_isas(kernels, isas, lambda: kernels.linear(x, 0.05, 9, packed, bias, 0.3, 70), expected)


@pytest.mark.parametrize("n", [16, 32, 48, 64, 80, 112, 160])
@pytest.mark.parametrize("m", [3, 9, 13, 130])
def test_wide_kernel_block_counts(kernels, ref, ref_rows, isas, each_thread_count, m, n):
    """N = 16 .. 160 (1..10 packed blocks) reaches each block split of the 8x48 VNNI kernel's
    driver (3-block calls, 4 left as 2 + 2, a lone or paired last block on the 8x32 body) and
    M tails of 1 / 5 rows (the 3-block one-row call runs the GEMV body twice); one thread
    takes the 6-block column tiles at M = 130, two threads the 4-block ones."""
    g = torch.Generator().manual_seed(m * 1000 + n)
    w, s, z = _weights(n, 70, g)
    x = torch.randint(0, 128, (m, 70), dtype=torch.uint8, generator=g)
    xf = torch.randn(m, 70, generator=g)
    bias = torch.randn(n, generator=g)
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref.pack_linear_weight(w, s, z)
    expected = ref.linear(x, 0.05, 9, rpacked, bias, 0.3, 70)
    expected_d = ref.linear_dynamic(xf, rpacked, bias)
    expected_r = ref_rows.linear_dynamic(xf, ref_rows.pack_linear_weight(w, s, z), bias, per_row=True)

    def check():
        _check_all_isas(kernels, isas, lambda: kernels.linear(x, 0.05, 9, packed, bias, 0.3, 70), expected)
        _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(xf, packed, bias), expected_d)
        _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(xf, packed, bias, per_row=True), expected_r)

    each_thread_count(check)


def test_row_panels_of_a_large_activation(kernels, ref, isas, each_thread_count):
    """M x K over the 4 MB row panel (K = 16384: 4 row tiles of 64 per panel, M = 260 makes a
    second panel of one 4-row tile) with two column tiles: every tile is computed once."""
    g = torch.Generator().manual_seed(260)
    m, k, n = 260, 16384, 80
    w, s, z = _weights(n, k, g)
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    bias = torch.randn(n, generator=g)
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear(x, 0.002, 9, ref.pack_linear_weight(w, s, z), bias, 0.3, 70)
    each_thread_count(lambda: _check_all_isas(kernels, isas, lambda: kernels.linear(x, 0.002, 9, packed, bias, 0.3, 70),
                                              expected))

def test_threads_do_not_change_results(kernels):
    g = torch.Generator().manual_seed(5)
    w, s, z = _weights(200, 256, g)
    x = torch.randint(0, 128, (150, 256), dtype=torch.uint8, generator=g)
    xf = torch.randn(150, 256, generator=g)
    packed = kernels.pack_linear_weight(w, s, z)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_d = kernels.linear(x, 0.1, 3, packed, None, 0.3, 5), kernels.linear_dynamic(xf, packed, None)
        torch.set_num_threads(2)
        two, two_d = kernels.linear(x, 0.1, 3, packed, None, 0.3, 5), kernels.linear_dynamic(xf, packed, None)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two) and torch.equal(one_d, two_d)


# ------------------------------------------------------------------ dynamic --


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_dynamic_linear_bit_exact(kernels, ref, isas, m, k, n):
    g = torch.Generator().manual_seed(m + 3 * k + 7 * n)
    w, s, z = _weights(n, k, g)
    x = torch.randn(m, k, generator=g) * 3 + 0.5
    bias = torch.randn(n, generator=g) if n % 2 else None
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref.linear_dynamic(x, ref.pack_linear_weight(w, s, z), bias)
    _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(x, packed, bias), expected)


@HYP
@given(m=st.integers(1, 70), k=st.integers(1, 200), n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       shift=st.floats(-100, 100), spread=st.floats(1e-6, 1e3), wzp=st.booleans(), has_bias=st.booleans(),
       per_row=st.booleans())
def test_dynamic_linear_sweep(kernels, ref, ref_rows, isas, m, k, n, seed, shift, spread, wzp, has_bias, per_row):
    """Per tensor (0..127) and per row (0..255, see ref_rows) against the reference, on every ISA."""
    g = torch.Generator().manual_seed(seed)
    w, s, z = _weights(n, k, g, wzp=wzp)
    x = torch.randn(m, k, generator=g) * spread + shift
    bias = torch.randn(n, generator=g) if has_bias else None
    packed = kernels.pack_linear_weight(w, s, z)
    r = ref_rows if per_row else ref
    expected = r.linear_dynamic(x, r.pack_linear_weight(w, s, z), bias, per_row=per_row)
    _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(x, packed, bias, per_row=per_row), expected)


def test_dynamic_constant_and_zero_inputs(kernels, ref, isas):
    w, s, z = _weights(5, 9, torch.Generator().manual_seed(0))
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref.pack_linear_weight(w, s, z)
    for x in (torch.zeros(3, 9), torch.full((3, 9), -2.5), torch.full((1, 9), 1e-30)):
        _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(x, packed, None), ref.linear_dynamic(x, rpacked, None))


# ---------------------------------------------------------- dynamic per row --
# Per-row activations use the full uint8 range (kernels.dynamic_per_row_act_range, 0..255):
# the reference with that range is the spec, on every ISA (the AVX2 / AVX-512 paths take
# their exact split form above 127, VNNI is exact anyway).


@pytest.fixture(scope="module")
def ref_rows(kernels):
    from quantplug.reference_kernels import ReferenceKernels

    return ReferenceKernels(torch.uint8, kernels.dynamic_per_row_act_range)


def test_per_row_range_is_full_uint8(kernels):
    assert kernels.dynamic_per_row_act_range == (0, 255)


@pytest.mark.parametrize("m,k,n", SHAPES + [(130, 384, 40), (9, 1536, 17)])
def test_dynamic_per_row_bit_exact(kernels, ref_rows, isas, m, k, n):
    g = torch.Generator().manual_seed(m + 5 * k + 11 * n)
    w, s, z = _weights(n, k, g)
    # rows on very different scales and offsets: one shared grid would lose the small ones
    x = torch.randn(m, k, generator=g) * torch.logspace(-3, 2, m).reshape(-1, 1) + torch.randn(m, 1, generator=g)
    bias = torch.randn(n, generator=g) if n % 2 else None
    packed = kernels.pack_linear_weight(w, s, z)
    expected = ref_rows.linear_dynamic(x, ref_rows.pack_linear_weight(w, s, z), bias, per_row=True)
    _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(x, packed, bias, per_row=True), expected)


def test_dynamic_per_row_constant_rows_and_batch_dims(kernels, ref_rows, isas):
    w, s, z = _weights(5, 9, torch.Generator().manual_seed(0), wzp=True)
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref_rows.pack_linear_weight(w, s, z)
    x = torch.stack([torch.zeros(9), torch.full((9,), -2.5), torch.full((9,), 1e-30), torch.linspace(-1, 3, 9)])
    for xx in (x, x.reshape(2, 2, 9)):
        _check_all_isas(kernels, isas, lambda: kernels.linear_dynamic(xx, packed, None, per_row=True),
                        ref_rows.linear_dynamic(xx, rpacked, None, per_row=True))


def test_dynamic_per_row_threads_do_not_change_results(kernels):
    g = torch.Generator().manual_seed(3)
    w, s, z = _weights(70, 300, g)
    packed = kernels.pack_linear_weight(w, s, z)
    x = torch.randn(257, 300, generator=g)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.linear_dynamic(x, packed, None, per_row=True)
        torch.set_num_threads(2)
        two = kernels.linear_dynamic(x, packed, None, per_row=True)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_per_row_beats_per_tensor_on_rows_of_different_scale(kernels):
    """What per-row buys: each row's error scales with its own range, not the largest row's."""
    g = torch.Generator().manual_seed(1)
    w, s, z = _weights(32, 256, g)
    packed = kernels.pack_linear_weight(w, s, z)
    x = torch.randn(4, 256, generator=g) * torch.tensor([[1e-3], [1.0], [10.0], [100.0]])
    exact = x.double() @ (w.double() * s.double().reshape(-1, 1)).t()
    err_row = (kernels.linear_dynamic(x, packed, None, per_row=True).double() - exact).abs().amax(1)
    err_tensor = (kernels.linear_dynamic(x, packed, None).double() - exact).abs().amax(1)
    assert bool((err_row[:3] < err_tensor[:3] / 4).all())


# ---------------------------------------------------- parameters & packing --


@HYP
@given(x_scale=st.floats(1e-8, 1e3), out_scale=st.floats(1e-8, 1e3), seed=st.integers(0, 2**31 - 1))
def test_requant_params_equal_the_core(kernels, x_scale, out_scale, seed):
    g = torch.Generator().manual_seed(seed)
    w_scales = torch.rand(37, generator=g) * 0.1 + 1e-6
    bias = torch.randn(37, generator=g) * 100
    # keep the int32 bias in range: see test_int32_bias_saturates for what happens beyond it
    bias = bias.clamp(-1.0, 1.0) * (2**30 * x_scale * w_scales)
    mult, bias_q = kernels.requant_params(x_scale, w_scales, out_scale, bias)
    core_mult, core_bias = requant_params(x_scale, w_scales, out_scale, bias)
    assert torch.equal(mult, core_mult) and torch.equal(bias_q, core_bias)


def test_int32_bias_saturates(kernels):
    """A bias beyond the int32 accumulator range saturates with its sign.

    (quantplug.kernels.requant_params clamps to 2**31 - 1 in float32, which rounds to 2**31,
    and .to(torch.int32) then yields INT32_MIN for a huge POSITIVE bias; reported to the core.
    Outside that absurd regime the two agree bit for bit, see the test above.)
    """
    _, bias_q = kernels.requant_params(1e-6, torch.tensor([0.01, 0.01]), 1.0, torch.tensor([1e3, -1e3]))
    assert bias_q.tolist() == [2**31 - 1, -(2**31)]


@HYP
@given(lo=st.floats(-1e6, 1e6), width=st.floats(0, 1e6))
def test_dynamic_qparams_equal_the_core(kernels, lo, width):
    hi = lo + width
    scale, zp = kernels.choose_qparams(lo, hi)
    core_scale, core_zp = choose_qparams(torch.tensor(lo), torch.tensor(hi), quant_min=0, quant_max=127,
                                         symmetric=False, dtype=torch.uint8)
    assert scale == core_scale.item() and zp == core_zp.item()


def test_pack_unpack_roundtrip_and_pickle(kernels):
    g = torch.Generator().manual_seed(2)
    for n, k in [(1, 1), (17, 3), (33, 130)]:
        w, s, z = _weights(n, k, g, wzp=True)
        packed = kernels.pack_linear_weight(w, s, z)
        assert packed.n == n and packed.k == k
        assert torch.equal(packed.row_sums, w.to(torch.int32).sum(1, dtype=torch.int32))
        w2, s2, z2 = kernels.unpack_linear_weight(packed)
        assert torch.equal(w2, w) and torch.equal(s2, s) and torch.equal(z2, z)
        again = pickle.loads(pickle.dumps(packed))
        assert torch.equal(again.packed, packed.packed) and again.n == n
        rebuilt = unflatten_packed(type(packed), flatten_packed(packed))
        assert torch.equal(rebuilt.packed, packed.packed) and rebuilt.n == n and rebuilt.k == k
    assert kernels.packed_linear_type is type(packed)


def test_packing_does_not_depend_on_the_isa(kernels, isas):
    w, s, z = _weights(20, 21, torch.Generator().manual_seed(4))
    packs = []
    for isa in isas:
        with kernels.use_isa(isa):
            packs.append(kernels.pack_linear_weight(w, s, z).packed)
    assert all(torch.equal(p, packs[0]) for p in packs)
    assert math.prod(packs[0].shape) == 32 * 24
