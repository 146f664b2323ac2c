"""qnnpack C kernels vs quantplug's pure-PyTorch reference, bit for bit, on every usable ISA path."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantplug
from quantplug.affine import choose_qparams, quantize_affine, requantize_reference
from quantplug.errors import KernelInputError
from quantplug.kernels import requant_params
from quantplug.reference_kernels import ReferenceKernels

from quantplug_qnnpack.kernels import ACT_SCALE_MIN, PackedLinearWeight

KERNELS = quantplug.get_backend("qnnpack").kernels
ISAS = KERNELS.usable_isas()
DIMS = [1, 3, 17, 64, 129]
HYP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------ references --


def ref_linear(x_q, x_scale, x_zp, w_q, w_scales, w_zps, bias, out_scale, out_zp, relu=False):
    """Plain torch integer matmul + quantplug.affine.requantize_reference (int8 or uint8 weights)."""
    k = w_q.shape[1]
    x = x_q.reshape(-1, k).to(torch.int64) - x_zp
    w = w_q.to(torch.int64) - w_zps.to(torch.int64).reshape(-1, 1)
    acc = x @ w.t()
    mult, bias_q = requant_params(x_scale, w_scales, out_scale, bias)
    if bias_q is not None:
        acc = acc + bias_q.to(torch.int64)
    acc = acc.to(torch.int32)  # wraps like the kernels (never needed for realistic values)
    out = requantize_reference(acc, mult, out_zp, out_zp if relu else 0, 255, dtype=torch.uint8)
    return out.reshape(*x_q.shape[:-1], w_q.shape[0])


def ref_linear_dynamic(x, w_q, w_scales, w_zps, bias):
    """choose_qparams + quantize_affine + integer matmul + float32 multiply, then add."""
    k = w_q.shape[1]
    flat = x.reshape(-1, k)
    scale, zp = choose_qparams(flat.amin(), flat.amax(), quant_min=0, quant_max=255, symmetric=False,
                               dtype=torch.uint8)
    xq = quantize_affine(flat, scale, zp, quant_min=0, quant_max=255, dtype=torch.uint8)
    acc = (xq.to(torch.int64) - int(zp)) @ (w_q.to(torch.int64) - w_zps.to(torch.int64).reshape(-1, 1)).t()
    out = acc.to(torch.float32) * (scale.reshape(1, 1) * w_scales.reshape(1, -1))
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], w_q.shape[0]), float(scale), int(zp)


def make_weight(n, k, gen, *, per_channel=True, symmetric=False, dtype=torch.int8, mode="random"):
    lo, hi = (-128, 127) if dtype == torch.int8 else (0, 255)
    if mode == "min":
        w = torch.full((n, k), lo, dtype=dtype)
    elif mode == "max":
        w = torch.full((n, k), hi, dtype=dtype)
    elif mode == "alternate":
        w = torch.where(torch.arange(n * k).reshape(n, k) % 2 == 0, lo, hi).to(dtype)
    else:
        w = torch.randint(lo, hi + 1, (n, k), generator=gen, dtype=torch.int32).to(dtype)
    if per_channel:
        scales = torch.rand(n, generator=gen) * 0.05 + 1e-3
        zps = (torch.zeros(n, dtype=torch.int32) if symmetric else
               torch.randint(lo, hi + 1, (n,), generator=gen, dtype=torch.int32))
    else:
        scales = torch.full((n,), 0.01)
        zps = torch.full((n,), 0 if symmetric or dtype == torch.int8 else 128, dtype=torch.int32)
    return w, scales, zps


# -------------------------------------------------------------- packing --


@pytest.mark.parametrize("n,k", [(1, 1), (3, 5), (16, 4), (17, 129), (64, 3)])
def test_pack_roundtrip_adds_128_to_int8(n, k):
    gen = torch.Generator().manual_seed(n * 1000 + k)
    w, s, z = make_weight(n, k, gen)
    packed = KERNELS.pack_linear_weight(w, s, z)
    w_u8, scales, zps = KERNELS.unpack_linear_weight(packed)
    assert torch.equal(w_u8.to(torch.int32), w.to(torch.int32) + 128)
    assert torch.equal(zps, z + 128) and torch.equal(scales, s)
    assert torch.equal(packed.row_sums[:n], w_u8.to(torch.int32).sum(1))
    assert torch.equal(packed.row_sums[n:], torch.zeros(packed.row_sums.numel() - n, dtype=torch.int32))
    # uint8 weights (QNNPACK's own representation) are packed as they are
    again = KERNELS.pack_linear_weight(w_u8, s, zps)
    assert torch.equal(again.packed, packed.packed) and torch.equal(again.zero_points, packed.zero_points)


def test_packed_weight_pickles(tmp_path):
    gen = torch.Generator().manual_seed(1)
    w, s, z = make_weight(5, 7, gen)
    packed = KERNELS.pack_linear_weight(w, s, z)
    clone = pickle.loads(pickle.dumps(packed))
    assert isinstance(clone, PackedLinearWeight)
    x = torch.randint(0, 256, (3, 7), dtype=torch.uint8)
    assert torch.equal(KERNELS.linear(x, 0.02, 3, clone, None, 0.1, 7), KERNELS.linear(x, 0.02, 3, packed, None, 0.1, 7))


def test_lowering_flatten_roundtrip():
    from quantplug.lowering import flatten_packed, unflatten_packed

    gen = torch.Generator().manual_seed(2)
    packed = KERNELS.pack_linear_weight(*make_weight(4, 9, gen))
    back = unflatten_packed(PackedLinearWeight, flatten_packed(packed))
    assert back.n == 4 and back.k == 9 and torch.equal(back.packed, packed.packed)


# ------------------------------------------------------- static linear --


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m,k,n", [(m, k, n) for m in DIMS for k in DIMS for n in DIMS][::4])
def test_linear_matches_reference_grid(isa, m, k, n):
    gen = torch.Generator().manual_seed(m * 7919 + k * 131 + n)
    w, s, z = make_weight(n, k, gen, per_channel=(m + n) % 2 == 0)
    packed = KERNELS.pack_linear_weight(w, s, z)
    x = torch.randint(0, 256, (m, k), generator=gen, dtype=torch.int32).to(torch.uint8)
    bias = torch.randn(n, generator=gen) if k % 2 else None
    relu = n % 3 == 0
    x_zp, out_zp = int(torch.randint(0, 256, (), generator=gen)), int(torch.randint(0, 256, (), generator=gen))
    out_scale = 0.05 * k ** 0.5
    want = ref_linear(x, 0.02, x_zp, w, s, z, bias, out_scale, out_zp, relu)
    with KERNELS.use_isa(isa):
        got = KERNELS.linear(x, 0.02, x_zp, packed, bias, out_scale, out_zp, relu=relu)
    assert got.dtype == torch.uint8 and got.shape == (m, n)
    assert torch.equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@HYP
@given(
    m=st.integers(1, 40), k=st.integers(1, 300), n=st.integers(1, 70),
    per_channel=st.booleans(), symmetric=st.booleans(), wdtype=st.sampled_from([torch.int8, torch.uint8]),
    x_mode=st.sampled_from(["random", "min", "max", "alternate"]),
    w_mode=st.sampled_from(["random", "min", "max", "alternate"]),
    x_zp=st.integers(0, 255), out_zp=st.integers(0, 255), relu=st.booleans(), use_bias=st.booleans(),
    x_scale=st.floats(ACT_SCALE_MIN, 1.0), out_scale=st.floats(ACT_SCALE_MIN, 100.0), seed=st.integers(0, 2**31),
)
def test_linear_hypothesis_every_isa(isa, m, k, n, per_channel, symmetric, wdtype, x_mode, w_mode, x_zp, out_zp,
                                     relu, use_bias, x_scale, out_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    w, s, z = make_weight(n, k, gen, per_channel=per_channel, symmetric=symmetric, dtype=wdtype, mode=w_mode)
    x = {"min": torch.zeros(m, k, dtype=torch.uint8), "max": torch.full((m, k), 255, dtype=torch.uint8),
         "alternate": (torch.arange(m * k).reshape(m, k) % 2 * 255).to(torch.uint8),
         "random": torch.randint(0, 256, (m, k), generator=gen, dtype=torch.int32).to(torch.uint8)}[x_mode]
    bias = torch.randn(n, generator=gen) * 10 if use_bias else None
    packed = KERNELS.pack_linear_weight(w, s, z)
    want = ref_linear(x, x_scale, x_zp, w, s, z, bias, out_scale, out_zp, relu)
    with KERNELS.use_isa(isa):
        got = KERNELS.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu)
    assert torch.equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [4096, 16384])
def test_linear_large_k_extremes_no_overflow(isa, k):
    # |acc| up to 255 * 255 * 16384 = 1.07e9 < 2**31: exact on every path
    n, m = 19, 5
    w = torch.full((n, k), 127, dtype=torch.int8)
    w[::2] = -128
    z = torch.full((n,), -128, dtype=torch.int32)
    z[::2] = 127
    s = torch.full((n,), 1e-3)
    x = torch.full((m, k), 255, dtype=torch.uint8)
    x[1] = 0
    packed = KERNELS.pack_linear_weight(w, s, z)
    for x_zp in (0, 255):
        want = ref_linear(x, 1.0, x_zp, w, s, z, None, 2000.0, 128)
        with KERNELS.use_isa(isa):
            got = KERNELS.linear(x, 1.0, x_zp, packed, None, 2000.0, 128)
        assert torch.equal(got, want)
        assert (want != 128).any()  # the accumulators did not all vanish


def test_linear_batch_dims_and_empty(kernels):
    gen = torch.Generator().manual_seed(3)
    w, s, z = make_weight(6, 10, gen)
    packed = kernels.pack_linear_weight(w, s, z)
    x = torch.randint(0, 256, (2, 3, 10), generator=gen, dtype=torch.int32).to(torch.uint8)
    got = kernels.linear(x, 0.1, 5, packed, None, 0.3, 9)
    assert got.shape == (2, 3, 6)
    assert torch.equal(got, ref_linear(x, 0.1, 5, w, s, z, None, 0.3, 9))
    assert kernels.linear(torch.empty(0, 10, dtype=torch.uint8), 0.1, 5, packed, None, 0.3, 9).shape == (0, 6)


def test_linear_matches_core_reference_kernels(kernels):
    ref = ReferenceKernels(torch.uint8, (0, 255))
    gen = torch.Generator().manual_seed(4)
    w, s, z = make_weight(33, 65, gen)
    x = torch.randint(0, 256, (7, 65), generator=gen, dtype=torch.int32).to(torch.uint8)
    b = torch.randn(33, generator=gen)
    for relu in (False, True):
        assert torch.equal(kernels.linear(x, 0.03, 77, kernels.pack_linear_weight(w, s, z), b, 0.2, 100, relu),
                           ref.linear(x, 0.03, 77, ref.pack_linear_weight(w, s, z), b, 0.2, 100, relu))


def test_linear_threads_agree(kernels):
    gen = torch.Generator().manual_seed(5)
    w, s, z = make_weight(200, 300, gen)
    packed = kernels.pack_linear_weight(w, s, z)
    x = torch.randint(0, 256, (130, 300), generator=gen, dtype=torch.int32).to(torch.uint8)
    want = ref_linear(x, 0.01, 128, w, s, z, None, 0.5, 128)
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        assert torch.equal(kernels.linear(x, 0.01, 128, packed, None, 0.5, 128), want)


# ------------------------------------------------------ dynamic linear --


@pytest.mark.parametrize("isa", ISAS)
@HYP
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 50), per_channel=st.booleans(),
       use_bias=st.booleans(), amp=st.floats(1e-3, 1e3), shift=st.floats(-1.0, 1.0), seed=st.integers(0, 2**31))
def test_linear_dynamic_hypothesis_every_isa(isa, m, k, n, per_channel, use_bias, amp, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    w, s, z = make_weight(n, k, gen, per_channel=per_channel)
    x = (torch.randn(m, k, generator=gen) + shift) * amp
    bias = torch.randn(n, generator=gen) if use_bias else None
    packed = KERNELS.pack_linear_weight(w, s, z)
    want, scale, zp = ref_linear_dynamic(x, w, s, z, bias)
    with KERNELS.use_isa(isa):
        assert KERNELS.choose_dynamic_qparams(x) == (scale, zp)
        got = KERNELS.linear_dynamic(x, packed, bias)
    assert torch.equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
def test_linear_dynamic_edge_inputs(isa):
    gen = torch.Generator().manual_seed(6)
    w, s, z = make_weight(9, 33, gen)
    packed = KERNELS.pack_linear_weight(w, s, z)
    for x in (torch.zeros(4, 33), torch.full((4, 33), 3.0), torch.full((4, 33), -1e-30),
              torch.randn(4, 33) * 1e30, torch.randn(2, 2, 33)):
        want, _, _ = ref_linear_dynamic(x, w, s, z, None)
        with KERNELS.use_isa(isa):
            assert torch.equal(KERNELS.linear_dynamic(x, packed, None), want)


def test_linear_dynamic_matches_core_reference_kernels(kernels):
    ref = ReferenceKernels(torch.uint8, (0, 255))
    gen = torch.Generator().manual_seed(7)
    w, s, z = make_weight(40, 70, gen)
    x, b = torch.randn(11, 70, generator=gen), torch.randn(40, generator=gen)
    assert torch.equal(kernels.linear_dynamic(x, kernels.pack_linear_weight(w, s, z), b),
                       ref.linear_dynamic(x, ref.pack_linear_weight(w, s, z), b))


def test_linear_dynamic_large_k(kernels):
    gen = torch.Generator().manual_seed(8)
    w, s, z = make_weight(5, 16384, gen, mode="max")
    x = torch.rand(3, 16384, generator=gen) * 10
    want, _, _ = ref_linear_dynamic(x, w, s, z, None)
    for isa in ISAS:
        with kernels.use_isa(isa):
            assert torch.equal(kernels.linear_dynamic(x, kernels.pack_linear_weight(w, s, z), None), want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_dynamic_long_tensor_every_isa_and_thread_count(isa, threads):
    """A per-tensor range over several rows and 140k values on 1 and 2 threads: the minimum
    near the end, the maximum in the middle, then all positive (zero point 0)."""
    gen = torch.Generator().manual_seed(11)
    w, s, z = make_weight(37, 2001, gen)
    b = torch.randn(37, generator=gen)
    packed = KERNELS.pack_linear_weight(w, s, z)
    x = torch.randn(70, 2001, generator=gen)
    x.view(-1)[139000] = -40.0
    x.view(-1)[70000] = 25.0
    torch.set_num_threads(threads)
    for xx in (x, x.abs() + 0.5, x[:33]):
        want, scale, zp = ref_linear_dynamic(xx, w, s, z, b)
        with KERNELS.use_isa(isa):
            assert KERNELS.choose_dynamic_qparams(xx) == (scale, zp)
            assert torch.equal(KERNELS.linear_dynamic(xx, packed, b), want)


def ref_linear_dynamic_rows(x, w_q, w_scales, w_zps, bias):
    """ref_linear_dynamic with one (scale, zero point) per row of x.reshape(-1, K)."""
    k = w_q.shape[1]
    flat = x.reshape(-1, k)
    rows = [ref_linear_dynamic(flat[i:i + 1], w_q, w_scales, w_zps, bias)[0] for i in range(flat.shape[0])]
    out = torch.cat(rows) if rows else torch.empty(0, w_q.shape[0])
    return out.reshape(*x.shape[:-1], w_q.shape[0])


@pytest.mark.parametrize("isa", ISAS)
@HYP
@given(m=st.integers(1, 30), k=st.integers(1, 150), n=st.integers(1, 40), per_channel=st.booleans(),
       use_bias=st.booleans(), amp=st.floats(1e-3, 1e3), shift=st.floats(-1.0, 1.0), seed=st.integers(0, 2**31))
def test_linear_dynamic_per_row_hypothesis_every_isa(isa, m, k, n, per_channel, use_bias, amp, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    w, s, z = make_weight(n, k, gen, per_channel=per_channel)
    # rows of very different ranges and signs: each must get its own qparams
    x = (torch.randn(m, k, generator=gen) + shift) * amp * torch.rand(m, 1, generator=gen).pow(4)
    bias = torch.randn(n, generator=gen) if use_bias else None
    packed = KERNELS.pack_linear_weight(w, s, z)
    with KERNELS.use_isa(isa):
        got = KERNELS.linear_dynamic(x, packed, bias, per_row=True)
    assert torch.equal(got, ref_linear_dynamic_rows(x, w, s, z, bias))


@pytest.mark.parametrize("isa", ISAS)
def test_linear_dynamic_per_row_edge_inputs(isa):
    gen = torch.Generator().manual_seed(9)
    w, s, z = make_weight(19, 37, gen)
    b = torch.randn(19, generator=gen)
    packed = KERNELS.pack_linear_weight(w, s, z)
    mixed = torch.randn(5, 37, generator=gen)
    mixed[1] = 0.0
    mixed[2] *= 1e30
    mixed[3] = mixed[3].abs() + 2.0  # all positive: zero point 0
    mixed[4] = -mixed[4].abs() - 2.0  # all negative: zero point 255
    for x in (torch.zeros(4, 37), mixed, torch.randn(2, 3, 37, generator=gen), torch.randn(40, 37, generator=gen)):
        want = ref_linear_dynamic_rows(x, w, s, z, b)
        with KERNELS.use_isa(isa):
            assert torch.equal(KERNELS.linear_dynamic(x, packed, b, per_row=True), want)
    with KERNELS.use_isa(isa):  # M = 0
        assert KERNELS.linear_dynamic(torch.zeros(0, 37), packed, b, per_row=True).shape == (0, 19)


def test_linear_dynamic_per_row_matches_core_reference_and_threads(kernels):
    ref = ReferenceKernels(torch.uint8, (0, 255))
    gen = torch.Generator().manual_seed(10)
    w, s, z = make_weight(70, 200, gen)
    x, b = torch.randn(130, 200, generator=gen) * torch.rand(130, 1, generator=gen), torch.randn(70, generator=gen)
    want = ref.linear_dynamic(x, ref.pack_linear_weight(w, s, z), b, per_row=True)
    packed = kernels.pack_linear_weight(w, s, z)
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        assert torch.equal(kernels.linear_dynamic(x, packed, b, per_row=True), want)


def test_dynamic_linear_module_uses_native_per_row(kernels):
    """The core's DynamicLinear finds per-row support and skips its Python row equalization."""
    from quantplug.nn.dynamic import DynamicLinear, kernels_support_per_row

    assert kernels_support_per_row(kernels)
    backend = quantplug.get_backend("qnnpack")
    lin = torch.nn.Linear(64, 24)
    x = torch.randn(5, 64) * torch.rand(5, 1)
    model = torch.nn.Sequential(lin)
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(), backend=backend.name)
    mod = model[0]
    assert isinstance(mod, DynamicLinear) and mod.per_row and not mod.row_equalize
    assert torch.equal(mod(x), kernels.linear_dynamic(x, mod._packed("packed"), mod.bias, per_row=True))


# ------------------------------------------------------------- bad input --


@pytest.fixture(scope="module")
def packed_3x4():
    return KERNELS.pack_linear_weight(torch.ones(3, 4, dtype=torch.int8), torch.full((3,), 0.1),
                                      torch.zeros(3, dtype=torch.int32))


@pytest.mark.parametrize("call,match", [
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.int8), 0.1, 0, p, None, 0.1, 0), "x_q has dtype"),
    (lambda p: KERNELS.linear(torch.zeros(4, 2, dtype=torch.uint8).t(), 0.1, 0, p, None, 0.1, 0), "not contiguous"),
    (lambda p: KERNELS.linear(torch.zeros(2, 5, dtype=torch.uint8), 0.1, 0, p, None, 0.1, 0), r"expected \[\.\.\., 4\]"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8, device="meta"), 0.1, 0, p, None, 0.1, 0), "meta"),
    (lambda p: KERNELS.linear([[0] * 4], 0.1, 0, p, None, 0.1, 0), "must be a torch.Tensor"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 1e-5, 0, p, None, 0.1, 0), "x_scale.*2\\*\\*-12"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0, p, None, float("nan"), 0), "out_scale"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 256, p, None, 0.1, 0), "x_zero_point=256"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0, p, None, 0.1, -1), "out_zero_point=-1"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0, p, torch.zeros(4), 0.1, 0), "bias has shape"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0, p, torch.zeros(3, dtype=torch.float64), 0.1, 0), "bias has dtype"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0, "weights", None, 0.1, 0), "PackedLinearWeight"),
    (lambda p: KERNELS.linear(torch.zeros(2, 4, dtype=torch.uint8), 0.1, 0,
                              PackedLinearWeight(p.packed[:-1], p.row_sums, p.scales, p.zero_points, 3, 4),
                              None, 0.1, 0), "packed.packed has shape"),
    (lambda p: KERNELS.linear_dynamic(torch.zeros(2, 4, dtype=torch.float64), p, None), "x has dtype"),
    (lambda p: KERNELS.linear_dynamic(torch.tensor([[1.0, float("inf"), 0.0, 0.0]]), p, None), "infinities"),
    (lambda p: KERNELS.pack_linear_weight(torch.zeros(3, 4, dtype=torch.int16), torch.ones(3),
                                          torch.zeros(3, dtype=torch.int32)), "w_q has dtype"),
    (lambda p: KERNELS.pack_linear_weight(torch.zeros(3, 4, dtype=torch.int8), torch.ones(2),
                                          torch.zeros(3, dtype=torch.int32)), "w_scales has shape"),
    (lambda p: KERNELS.pack_linear_weight(torch.zeros(3, 4, dtype=torch.int8), -torch.ones(3),
                                          torch.zeros(3, dtype=torch.int32)), "finite and > 0"),
    (lambda p: KERNELS.pack_linear_weight(torch.zeros(3, 4, dtype=torch.int8), torch.ones(3),
                                          torch.full((3,), 200, dtype=torch.int32)), r"\[-128, 127\]"),
    (lambda p: KERNELS.pack_linear_weight(torch.zeros(0, 4, dtype=torch.int8), torch.ones(0),
                                          torch.zeros(0, dtype=torch.int32)), "N and K"),
])
def test_bad_inputs_raise_kernel_input_error(packed_3x4, call, match):
    with pytest.raises(KernelInputError, match=match):
        call(packed_3x4)


def test_dynamic_per_row_rejects_infinities(packed_3x4):
    x = torch.zeros(3, 4)
    x[2, 1] = float("-inf")
    with pytest.raises(KernelInputError, match="infinities"):
        KERNELS.linear_dynamic(x, packed_3x4, None, per_row=True)


def test_multiplier_overflow_rejected_by_c(packed_3x4):
    huge = PackedLinearWeight(packed_3x4.packed, packed_3x4.row_sums, torch.full((3,), 3e38),
                              packed_3x4.zero_points, 3, 4)
    with pytest.raises(KernelInputError, match="QP_ERR_INVALID_ARGUMENT"):
        KERNELS.linear(torch.zeros(1, 4, dtype=torch.uint8), 1.0, 0, huge, None, ACT_SCALE_MIN, 0)
