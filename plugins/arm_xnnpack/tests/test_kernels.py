"""The compiled kernels against quantplug's pure-PyTorch reference, bit for bit, on every usable ISA path."""

import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug.errors import KernelInputError
from quantplug.lowering import flatten_packed, unflatten_packed

from quantplug_arm_xnnpack.kernels import PackedInt4LinearWeight, PackedLinearWeight

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DIMS = st.sampled_from([1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 33, 64, 65, 129]) | st.integers(1, 80)
KS = st.sampled_from([1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 63, 64, 65, 127, 129, 255, 256, 515]) | st.integers(1, 300)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _weights(n, k, g, extreme=False):
    if extreme:
        w = torch.where(torch.rand(n, k, generator=g) < 0.5, 127, -127).to(torch.int8)
    else:
        w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
    scales = (torch.rand(n, generator=g) * 0.02 + 1e-3).to(torch.float32)
    return w, scales, torch.zeros(n, dtype=torch.int32)


def _acts(shape, g, extreme=False):
    if extreme:
        return torch.where(torch.rand(shape, generator=g) < 0.5, 127, -128).to(torch.int8)
    return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8)


# ----------------------------------------------------------------- static --

@SETTINGS
@given(m=DIMS, k=KS, n=DIMS, seed=st.integers(0, 2**31 - 1), per_channel=st.booleans(), relu=st.booleans(),
       has_bias=st.booleans(), x_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127),
       extreme=st.sampled_from([False, False, False, True]), out_scale_factor=st.floats(0.02, 50.0))
def test_linear_bit_exact_vs_reference(kernels, ref, isa, m, k, n, seed, per_channel, relu, has_bias, x_zp, out_zp,
                                       extreme, out_scale_factor):
    g = _gen(seed)
    w, scales, zps = _weights(n, k, g, extreme)
    if not per_channel:
        scales = scales[:1].expand(n).contiguous()
    x = _acts((m, k), g, extreme)
    bias = torch.randn(n, generator=g) * 3 if has_bias else None
    x_scale = 0.05
    out_scale = float(x_scale * scales.max() * 127 * (k ** 0.5) / 4 * out_scale_factor)
    packed = kernels.pack_linear_weight(w, scales, zps)
    got = kernels.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu)
    want = ref.linear(x, x_scale, x_zp, ref.pack_linear_weight(w, scales, zps), bias, out_scale, out_zp, relu=relu)
    assert got.dtype == torch.int8 and got.shape == (m, n)
    assert torch.equal(got, want), f"{isa}: {(got.int() - want.int()).abs().max()} LSB off"


def test_linear_odd_shapes_all_paths_agree(kernels, ref):
    """The brief's shapes (1, 3, 17, 64, 129) in every combination, every path equal to the reference."""
    g = _gen(7)
    for m in (1, 3, 17, 64, 129):
        for k in (1, 3, 17, 64, 129):
            for n in (1, 3, 17, 64, 129):
                w, s, z = _weights(n, k, g)
                x = _acts((m, k), g)
                bias = torch.randn(n, generator=g)
                want = ref.linear(x, 0.1, -7, ref.pack_linear_weight(w, s, z), bias, 0.5, 9)
                packed = kernels.pack_linear_weight(w, s, z)
                for isa in kernels.usable_isas():
                    with kernels.use_isa(isa):
                        assert torch.equal(kernels.linear(x, 0.1, -7, packed, bias, 0.5, 9), want), (isa, m, k, n)


@pytest.mark.parametrize("k", [4096, 16384])
def test_linear_large_k_extremes_no_overflow(kernels, ref, isa, k):
    """|x - zp| = 255 and |w| = 127 for every k: the largest accumulators, exact in int32."""
    n, m = 19, 3
    x = torch.full((m, k), -128, dtype=torch.int8)
    w = torch.where(torch.arange(n).reshape(-1, 1) % 2 == 0, 127, -127).expand(n, k).to(torch.int8).contiguous()
    s, z = torch.full((n,), 1e-3), torch.zeros(n, dtype=torch.int32)
    out_scale = 1e-3 * 0.01 * 255 * 127 * k / 100  # acc * m = +-100
    got = kernels.linear(x, 0.01, 127, kernels.pack_linear_weight(w, s, z), None, out_scale, 0)
    want = ref.linear(x, 0.01, 127, ref.pack_linear_weight(w, s, z), None, out_scale, 0)
    assert torch.equal(got, want)
    assert set(got.unique().tolist()) == {-100, 100}


def test_linear_fused_relu_clamps_at_zero_point(kernels):
    g = _gen(3)
    w, s, z = _weights(20, 33, g)
    x = _acts((9, 33), g)
    packed = kernels.pack_linear_weight(w, s, z)
    plain = kernels.linear(x, 0.1, 0, packed, None, 0.05, -20)
    fused = kernels.linear(x, 0.1, 0, packed, None, 0.05, -20, relu=True)
    assert int(fused.min()) >= -20
    assert torch.equal(fused, plain.clamp(min=-20))


def test_linear_batch_dims_and_empty(kernels, ref):
    g = _gen(11)
    w, s, z = _weights(6, 10, g)
    packed = kernels.pack_linear_weight(w, s, z)
    x = _acts((2, 3, 10), g)
    got = kernels.linear(x, 0.1, 1, packed, None, 0.2, 2)
    assert got.shape == (2, 3, 6)
    assert torch.equal(got.reshape(6, 6), kernels.linear(x.reshape(6, 10), 0.1, 1, packed, None, 0.2, 2))
    assert kernels.linear(torch.empty(0, 10, dtype=torch.int8), 0.1, 1, packed, None, 0.2, 2).shape == (0, 6)


def test_threads_do_not_change_results(kernels):
    g = _gen(5)
    w, s, z = _weights(200, 300, g)
    x = _acts((130, 300), g)
    packed = kernels.pack_linear_weight(w, s, z)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.linear(x, 0.1, 3, packed, None, 0.5, -1)
        dyn_one = kernels.linear_dynamic(x.float(), packed, None, per_row=True)
        torch.set_num_threads(4)
        assert kernels.sync_threads() == 4
        assert torch.equal(kernels.linear(x, 0.1, 3, packed, None, 0.5, -1), one)
        assert torch.equal(kernels.linear_dynamic(x.float(), packed, None, per_row=True), dyn_one)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- dynamic --

@SETTINGS
@given(m=DIMS, k=KS, n=DIMS, seed=st.integers(0, 2**31 - 1), per_row=st.booleans(), has_bias=st.booleans(),
       magnitude=st.floats(1e-3, 1e3), shift=st.floats(-2.0, 2.0))
def test_linear_dynamic_bit_exact_vs_reference(kernels, ref, isa, m, k, n, seed, per_row, has_bias, magnitude, shift):
    g = _gen(seed)
    w, s, z = _weights(n, k, g)
    x = (torch.randn(m, k, generator=g) + shift) * magnitude
    if m > 1:
        x[0] = 0.0  # an all-zero row: the scale falls back to float32 eps
    bias = torch.randn(n, generator=g) if has_bias else None
    got = kernels.linear_dynamic(x, kernels.pack_linear_weight(w, s, z), bias, per_row=per_row)
    want = ref.linear_dynamic(x, ref.pack_linear_weight(w, s, z), bias, per_row=per_row)
    assert got.dtype == torch.float32 and got.shape == (m, n)
    assert torch.equal(got, want), f"{isa}: max diff {(got - want).abs().max()}"


@pytest.mark.parametrize("per_row", [False, True])
def test_dynamic_qparams_match_core_choose_qparams(kernels, per_row):
    from quantplug.affine import choose_qparams

    g = _gen(21)
    x = torch.randn(7, 45, generator=g) * torch.logspace(-3, 3, 7).reshape(-1, 1) + 0.5
    xq, scales, zps = kernels.quantize_dynamic(x, per_row=per_row)
    lo, hi = (x.amin(1), x.amax(1)) if per_row else (x.amin(), x.amax())
    s, zp = choose_qparams(lo, hi, quant_min=-128, quant_max=127, symmetric=False, dtype=torch.int8)
    assert torch.equal(scales, s.to(torch.float32).expand(7)) and torch.equal(zps, zp.to(torch.int32).expand(7))
    want = (torch.round(x * torch.reciprocal(scales).reshape(-1, 1)) + zps.reshape(-1, 1)).clamp(-128, 127)
    assert torch.equal(xq, want.to(torch.int8))


def test_linear_dynamic_rejects_non_finite(kernels):
    w, s, z = _weights(4, 8, _gen(1))
    packed = kernels.pack_linear_weight(w, s, z)
    for bad in (float("nan"), float("inf")):
        x = torch.ones(2, 8)
        x[1, 3] = bad
        with pytest.raises(KernelInputError, match="inf or NaN"):
            kernels.linear_dynamic(x, packed, None)


# ------------------------------------------------------------------- int4 --

#: row counts of the int4 tests: one row (the wide one-row tile), a partial row tile, one full 8-row
#: AVX-512 tile, 8 + 1 rows, five tiles; odd N leaves a partial 16-channel block
INT4_MS = st.sampled_from([1, 3, 8, 9, 33]) | st.integers(1, 12)
INT4_NS = st.sampled_from([1, 15, 17, 33, 47]) | st.integers(1, 40)


@settings(max_examples=25, deadline=None)
@given(m=INT4_MS, n=INT4_NS, groups=st.integers(1, 4), group_size=st.sampled_from([32, 64, 128]),
       seed=st.integers(0, 2**31 - 1), has_bias=st.booleans())
def test_int4_weight_only_vs_dequantized_fp32(kernels, m, n, groups, group_size, seed, has_bias):
    from quantplug.quant_ops import ops as qops

    g = _gen(seed)
    k = groups * group_size
    w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    scales = torch.rand(n, groups, generator=g) * 0.1 + 1e-3
    x = torch.randn(m, k, generator=g)
    bias = torch.randn(n, generator=g) if has_bias else None
    packed = kernels.pack_linear_weight_int4(w, scales, group_size)
    got = kernels.linear_int4_weight_only(x, packed, bias)
    w_dq = qops.dequantize_per_group(w, scales, torch.zeros_like(scales, dtype=torch.int32), group_size, -8, 7)
    want = torch.nn.functional.linear(x.double(), w_dq.double(), bias.double() if bias is not None else None)
    # fp32 sums in a different order than the float64 reference: bound the rounding error by the terms' size
    bound = (x.abs().double() @ w_dq.abs().double().t()) * 1e-5 + 1e-6
    assert ((got.double() - want).abs() <= bound).all()


def _same_floats(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, except that any NaN equals any NaN (the payload is not part of the contract)."""
    nan = a.isnan()
    return bool(torch.equal(nan, b.isnan()) and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=INT4_MS, n=INT4_NS, groups=st.integers(1, 4), group_size=st.sampled_from([32, 64, 128]),
       seed=st.integers(0, 2**31 - 1), has_bias=st.booleans(),
       values=st.sampled_from(["normal", "normal", "huge", "tiny", "zero_scales"]))
def test_int4_weight_only_bit_exact_vs_scalar(kernels, isa, m, n, groups, group_size, seed, has_bias, values):
    """Every SIMD path computes qb4w.c's canonical order (k-order FMAs per group, then one FMA
    with the group scale): bit for bit the scalar result, for every row tiling.

    "huge" activations overflow the fp32 sums to +-inf (and inf - inf to NaN) in the same lanes on
    every path; "tiny" ones go subnormal; zero scales are legal (an all-zero group).
    """
    g = _gen(seed)
    k = groups * group_size
    w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    scales = torch.rand(n, groups, generator=g) * 0.1 + 1e-3
    if values == "zero_scales":
        scales[torch.rand(n, groups, generator=g) < 0.5] = 0.0
    x = torch.randn(m, k, generator=g)
    if values == "huge":
        x = x.sign() * 3.0e38
    elif values == "tiny":
        x = x * 1e-38
    bias = torch.randn(n, generator=g) if has_bias else None
    packed = kernels.pack_linear_weight_int4(w, scales, group_size)
    got = kernels.linear_int4_weight_only(x, packed, bias)
    with kernels.use_isa("scalar"):
        want = kernels.linear_int4_weight_only(x, packed, bias)
    assert _same_floats(got, want), f"{isa}: max diff {(got - want).abs().max()}"


@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 3, 8, 9, 33])
def test_int4_row_tilings_bit_exact_vs_scalar(kernels, isa, m, group_size):
    """Every row tiling of every path, bit for bit the scalar result: one row (the wide one-row
    tile), a partial tile, one full AVX-512 tile, 8 + 1 rows, and 33 rows (the AVX-512 panel path
    that unpacks each group once for all rows). N = 37 and 67 are odd: 3 and 5 blocks leave a lone
    last block after the 2-block (and one-row 4-block) tiles."""
    g = _gen(m * 1000 + group_size)
    for n, groups in ((37, 3), (67, 2)):
        k = groups * group_size
        w = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
        scales = torch.rand(n, groups, generator=g) * 0.1 + 1e-3
        x, bias = torch.randn(m, k, generator=g), torch.randn(n, generator=g)
        packed = kernels.pack_linear_weight_int4(w, scales, group_size)
        got = kernels.linear_int4_weight_only(x, packed, bias)
        with kernels.use_isa("scalar"):
            want = kernels.linear_int4_weight_only(x, packed, bias)
        assert got.shape == (m, n) and _same_floats(got, want), f"{isa}: max diff {(got - want).abs().max()}"
        w_dq = (w.double().view(n, groups, group_size) * scales.double()[..., None]).view(n, k)
        exact = x.double() @ w_dq.t() + bias.double()
        assert ((got.double() - exact).abs() <= (x.abs().double() @ w_dq.abs().t()) * 1e-5 + 1e-6).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=DIMS, k=KS, n=DIMS, seed=st.integers(0, 2**31 - 1), has_bias=st.booleans(), per_channel=st.booleans(),
       values=st.sampled_from(["normal", "normal", "huge", "integers"]))
def test_int8_weight_only_bit_exact_vs_scalar_and_close_to_fp64(kernels, isa, m, k, n, seed, has_bias, per_channel,
                                                                 values):
    """f32-qc8w: every path equals the scalar one bit for bit (four FMA chains over k mod 4, then summed).

    The scalar result is within fp32 rounding of a float64 matmul of the dequantized weights,
    and exact when every product and sum is an exact float ("integers").
    """
    g = _gen(seed)
    w, scales, zps = _weights(n, k, g, extreme=values == "huge")
    if not per_channel:
        scales = scales[:1].expand(n).contiguous()
    x = torch.randn(m, k, generator=g) * 3
    if values == "huge":
        x = x.sign() * 3.0e38
    elif values == "integers":
        x, scales = x.round().clamp(-4, 4), torch.full((n,), 0.25)
    bias = torch.randn(n, generator=g).round() if has_bias else None
    packed = kernels.pack_linear_weight(w, scales, zps)
    got = kernels.linear_weight_only(x, packed, bias)
    with kernels.use_isa("scalar"):
        want = kernels.linear_weight_only(x, packed, bias)
    assert got.shape == (m, n) and _same_floats(got, want), f"{isa}: max diff {(got - want).abs().max()}"
    if values != "huge":
        w_dq = w.double() * scales.double()[:, None]
        exact = torch.nn.functional.linear(x.double(), w_dq, bias.double() if bias is not None else None)
        bound = (x.abs().double() @ w_dq.abs().t()) * 1e-6 + 1e-6 if values == "normal" else 0.0
        assert ((got.double() - exact).abs() <= bound).all()


@pytest.mark.parametrize("m", [1, 3, 8, 9, 33])
def test_int8_weight_only_row_tilings_bit_exact_vs_scalar(kernels, isa, m):
    """f32-qc8w row tilings on every path, bit for bit the scalar result: one row (the 4-block
    one-row tile), a partial tile, one full AVX-512 8-row tile, 8 + 1 rows (balanced 5 + 4) and 33
    rows. N = 37 and 71 are odd (3 and 5 blocks: a partial last block and a short last one-row
    tile); K = 67 and 130 are not multiples of 4 (the zero-filled activation tail) or 16."""
    g = _gen(7000 + m)
    for n, k in ((37, 67), (71, 130)):
        w, scales, zps = _weights(n, k, g)
        x, bias = torch.randn(m, k, generator=g) * 3, torch.randn(n, generator=g)
        packed = kernels.pack_linear_weight(w, scales, zps)
        got = kernels.linear_weight_only(x, packed, bias)
        with kernels.use_isa("scalar"):
            want = kernels.linear_weight_only(x, packed, bias)
        assert got.shape == (m, n) and _same_floats(got, want), f"{isa}: max diff {(got - want).abs().max()}"


def test_int8_weight_only_canonical_phase_order(kernels, isa):
    """The documented f32-qc8w order: four fma chains over k = q mod 4, then (a0 + a1) + (a2 + a3),
    then * scale, then + bias. Activations 2^24 and 1 make the order visible: in k order the ones
    are absorbed one at a time (2^24 + 1 rounds back to 2^24), in phases they sum apart first."""
    k, n = 8, 1
    x = torch.tensor([[2.0 ** 24, 1, 1, 1, 1, 1, 1, 1]])
    w = torch.ones(n, k, dtype=torch.int8)
    packed = kernels.pack_linear_weight(w, torch.ones(n), torch.zeros(n, dtype=torch.int32))
    got = kernels.linear_weight_only(x, packed, None)
    # phases: a0 = 2^24 + 1 -> 2^24 (ties to even), a1 = a2 = a3 = 2; (2^24 + 2) + 4 = 2^24 + 6, exact
    assert got.item() == 2.0 ** 24 + 6, f"{isa}: {got.item()}"


def test_int8_weight_only_batch_dims_and_bad_inputs(kernels):
    w, s, z = _weights(5, 12, _gen(4))
    packed = kernels.pack_linear_weight(w, s, z)
    x = torch.randn(2, 3, 12)
    assert torch.equal(kernels.linear_weight_only(x, packed, None), kernels.linear_weight_only(x.reshape(6, 12), packed,
                                                                                              None).reshape(2, 3, 5))
    with pytest.raises(KernelInputError, match="x"):
        kernels.linear_weight_only(x.to(torch.float64), packed, None)
    with pytest.raises(KernelInputError, match="K=12"):
        kernels.linear_weight_only(torch.randn(3, 11), packed, None)
    with pytest.raises(KernelInputError, match="bias"):
        kernels.linear_weight_only(torch.randn(3, 12), packed, torch.zeros(4))
    with pytest.raises(KernelInputError, match="packed"):
        kernels.linear_weight_only(torch.randn(3, 12), "packed", None)


def test_int4_packing_layout(kernels):
    w = torch.zeros(17, 64, dtype=torch.int8)
    w[0, :8] = torch.tensor([-8, 7, 0, -1, 1, 2, 3, 4], dtype=torch.int8)
    w[16, 9] = -3
    scales = torch.arange(1, 35, dtype=torch.float32).reshape(17, 2)
    p = kernels.pack_linear_weight_int4(w, scales, 32)
    # blocks of 16 channels, 64-byte rows of 8 k: channel j's 32-bit word, k = 8 * row + q in bits 4q..4q+3
    assert p.packed.dtype == torch.uint8 and p.packed.shape == (2, 8, 64)
    assert p.packed[0, 0, :4].tolist() == [0x78, 0xF0, 0x21, 0x43]
    assert p.packed[1, 1, :4].tolist() == [0xD0, 0, 0, 0] and int(p.packed.sum()) == 0x78 + 0xF0 + 0x21 + 0x43 + 0xD0
    # scales [block][group][16]
    assert p.scales.shape == (2, 2, 16) and torch.equal(p.scales.transpose(1, 2).reshape(32, 2)[:17], scales)
    assert not p.scales[1, :, 1:].any()
    x = torch.zeros(1, 64)
    x[0, 1] = 1.0
    x[0, 9] = 2.0
    assert kernels.linear_int4_weight_only(x, p, None)[0, [0, 16]].tolist() == [7.0 * 1.0, -3.0 * 2.0 * 33.0]


# ------------------------------------------------------ packed weights ----

def test_packed_weight_is_plain_tensors_and_pickles(kernels):
    w, s, z = _weights(21, 13, _gen(2))
    packed = kernels.pack_linear_weight(w, s, z)
    assert isinstance(packed, PackedLinearWeight) and (packed.n, packed.k) == (21, 13)
    assert packed.packed.numel() == 32 * 16 and packed.row_sums.tolist()[:21] == w.int().sum(1).tolist()
    x = _acts((4, 13), _gen(3))
    want = kernels.linear(x, 0.1, 0, packed, None, 0.3, 0)
    for copy in (pickle.loads(pickle.dumps(packed)), unflatten_packed(PackedLinearWeight, flatten_packed(packed))):
        assert torch.equal(kernels.linear(x, 0.1, 0, copy, None, 0.3, 0), want)
    p4 = kernels.pack_linear_weight_int4(torch.zeros(3, 64, dtype=torch.int8), torch.ones(3, 2), 32)
    assert isinstance(unflatten_packed(PackedInt4LinearWeight, flatten_packed(p4)), PackedInt4LinearWeight)


# ------------------------------------------------------------- bad inputs --

def _good(kernels):
    w, s, z = _weights(5, 8, _gen(4))
    return kernels.pack_linear_weight(w, s, z), torch.zeros(3, 8, dtype=torch.int8), w, s, z


BAD_LINEAR = [
    ("x_q dtype", lambda p, x: dict(x_q=x.to(torch.uint8)), "x_q has dtype torch.uint8"),
    ("x_q non-contiguous", lambda p, x: dict(x_q=torch.zeros(8, 3, dtype=torch.int8).t()), "x_q is not contiguous"),
    ("x_q wrong K", lambda p, x: dict(x_q=torch.zeros(3, 7, dtype=torch.int8)), "last dim must be K=8"),
    ("x_q meta", lambda p, x: dict(x_q=torch.zeros(3, 8, dtype=torch.int8, device="meta")), "is on meta"),
    ("x_q not a tensor", lambda p, x: dict(x_q=[[0] * 8]), "x_q must be a torch.Tensor"),
    ("x_scale zero", lambda p, x: dict(x_scale=0.0), "x_scale=0.0 must be finite and > 0"),
    ("x_scale nan", lambda p, x: dict(x_scale=float("nan")), "x_scale=nan"),
    ("out_scale negative", lambda p, x: dict(out_scale=-1.0), "out_scale=-1.0"),
    ("x_zero_point range", lambda p, x: dict(x_zero_point=128), "x_zero_point=128 is outside the int8 range"),
    ("out_zero_point range", lambda p, x: dict(out_zero_point=-129), "out_zero_point=-129"),
    ("zero point float", lambda p, x: dict(x_zero_point=0.5), "x_zero_point must be an integer"),
    ("bias dtype", lambda p, x: dict(bias=torch.zeros(5, dtype=torch.float64)), "bias has dtype torch.float64"),
    ("bias shape", lambda p, x: dict(bias=torch.zeros(4)), "bias has shape"),
    ("bias list", lambda p, x: dict(bias=[0.0] * 5), "bias must be a torch.Tensor"),
    ("packed fields", lambda p, x: dict(packed=PackedLinearWeight([0], p.scales, p.zero_points, p.row_sums, p.n, p.k)),
     "packed.packed must be a torch.Tensor"),
    ("packed type", lambda p, x: dict(packed=object()), "packed must be a PackedLinearWeight"),
    ("packed buffer", lambda p, x: dict(packed=PackedLinearWeight(p.packed[:-1], p.scales, p.zero_points, p.row_sums,
                                                                  p.n, p.k)), "packed.packed has shape"),
    ("requant scale", lambda p, x: dict(out_scale=1e-9), "requantization scale .* XNNPACK supports < 256"),
]


@pytest.mark.parametrize("case", BAD_LINEAR, ids=[c[0] for c in BAD_LINEAR])
def test_linear_bad_inputs(kernels, case):
    _, change, message = case
    packed, x, *_ = _good(kernels)
    args = dict(x_q=x, x_scale=0.1, x_zero_point=0, packed=packed, bias=None, out_scale=0.2, out_zero_point=0)
    args.update(change(packed, x))
    with pytest.raises(KernelInputError, match=message) as info:
        kernels.linear(**args)
    assert "xnnpack.linear" in str(info.value)


BAD_PACK = [
    ("dtype", lambda w, s, z: (w.float(), s, z), "w_q has dtype torch.float32"),
    ("rank", lambda w, s, z: (w.reshape(-1), s, z), "w_q must be 2-D"),
    ("narrow range", lambda w, s, z: (torch.full_like(w, -128), s, z), "narrow range"),
    ("asymmetric", lambda w, s, z: (w, s, z + 1), "w_zero_points must be all 0"),
    ("scales shape", lambda w, s, z: (w, s[:3], z), "w_scales has shape"),
    ("scales zero", lambda w, s, z: (w, torch.zeros_like(s), z), "finite and > 0"),
    ("zero points dtype", lambda w, s, z: (w, s, z.long()), "w_zero_points has dtype torch.int64"),
    ("empty", lambda w, s, z: (w[:, :0].contiguous(), s, z), "N and K must be >= 1"),
    ("non-contiguous", lambda w, s, z: (torch.zeros(8, 5, dtype=torch.int8).t(), s, z), "w_q is not contiguous"),
]


@pytest.mark.parametrize("case", BAD_PACK, ids=[c[0] for c in BAD_PACK])
def test_pack_bad_inputs(kernels, case):
    _, change, message = case
    _, _, w, s, z = _good(kernels)
    with pytest.raises(KernelInputError, match=message):
        kernels.pack_linear_weight(*change(w, s, z))


def test_pack_rejects_k_above_limit(kernels):
    k = kernels.max_k + 1
    with pytest.raises(KernelInputError, match=f"K={k} exceeds"):
        kernels.pack_linear_weight(torch.zeros(1, k, dtype=torch.int8), torch.ones(1), torch.zeros(1, dtype=torch.int32))


def test_dynamic_and_int4_bad_inputs(kernels):
    packed, *_ = _good(kernels)
    with pytest.raises(KernelInputError, match="xnnpack.linear_dynamic: x has dtype torch.int8"):
        kernels.linear_dynamic(torch.zeros(2, 8, dtype=torch.int8), packed, None)
    with pytest.raises(KernelInputError, match="last dim must be K=8"):
        kernels.linear_dynamic(torch.zeros(2, 9), packed, None)
    with pytest.raises(KernelInputError, match="group_size=48"):
        kernels.pack_linear_weight_int4(torch.zeros(2, 96, dtype=torch.int8), torch.ones(2, 2), 48)
    with pytest.raises(KernelInputError, match=r"outside the int4 range \[-8, 7\]"):
        kernels.pack_linear_weight_int4(torch.full((2, 32), 8, dtype=torch.int8), torch.ones(2, 1), 32)
    with pytest.raises(KernelInputError, match="multiple of group_size=64"):
        kernels.pack_linear_weight_int4(torch.zeros(2, 96, dtype=torch.int8), torch.ones(2, 1), 64)
    p4 = kernels.pack_linear_weight_int4(torch.zeros(2, 64, dtype=torch.int8), torch.ones(2, 2), 32)
    with pytest.raises(KernelInputError, match="packed must be a PackedInt4LinearWeight"):
        kernels.linear_int4_weight_only(torch.zeros(1, 64), packed, None)
    with pytest.raises(KernelInputError, match="x has dtype torch.float16"):
        kernels.linear_int4_weight_only(torch.zeros(1, 64, dtype=torch.float16), p4, None)


def test_static_qparam_cache_follows_in_place_changes(kernels, ref):
    """Multipliers and int32 bias are cached per (tensors, versions): in-place edits are seen."""
    g = _gen(8)
    w, s, z = _weights(24, 40, g)
    x = _acts((5, 40), g)
    packed, rpacked = kernels.pack_linear_weight(w, s, z), ref.pack_linear_weight(w, s, z)
    bias = torch.zeros(24)
    first = kernels.linear(x, 0.1, 2, packed, bias, 0.4, 0)
    bias += 3.0
    packed.scales.mul_(1.5)
    rpacked.scales.mul_(1.5)
    second = kernels.linear(x, 0.1, 2, packed, bias, 0.4, 0)
    assert not torch.equal(first, second)
    assert torch.equal(second, ref.linear(x, 0.1, 2, rpacked, bias, 0.4, 0))
    assert torch.equal(kernels.linear(x, 0.1, 2, packed, bias.clone(), 0.4, 0), second)
