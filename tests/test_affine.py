"""quantplug.affine: the numeric reference every C kernel is tested against.

Oracles are independent of the code under test: torch's own quantized ops
(PT2E's ``quantized_decomposed`` ops, ``fake_quantize_*``, torch.ao observers), NumPy
float32 arithmetic, Python's round-half-even ``round()``, or exact float64
math.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.ao.quantization.fx._decomposed  # registers torch.ops.quantized_decomposed (PT2E ops)
from hypothesis import given, settings
from hypothesis import strategies as st

from quantplug.affine import (
    choose_qparams,
    dequantize_affine,
    fake_quantize_affine,
    pack_int4,
    pack_uint4,
    quant_range,
    quantize_affine,
    quantize_bias,
    requantize_reference,
    sqnr,
    unpack_int4,
    unpack_uint4,
)
from torch.ao.quantization.observer import MinMaxObserver as TorchMinMax
from torch.ao.quantization.observer import PerChannelMinMaxObserver as TorchPerChannel

QD = torch.ops.quantized_decomposed  # the PT2E reference quantize/dequantize ops
INT8 = dict(quant_min=-128, quant_max=127, dtype=torch.int8)
UINT8 = dict(quant_min=0, quant_max=255, dtype=torch.uint8)


# ---------------------------------------------------------------- quant_range --


@pytest.mark.parametrize("dtype,kwargs,expected", [
    (torch.int8, {}, (-128, 127)),
    (torch.uint8, {}, (0, 255)),
    (torch.int8, {"reduce_range": True}, (-64, 63)),
    (torch.uint8, {"reduce_range": True}, (0, 127)),
    (torch.int8, {"symmetric_narrow": True}, (-127, 127)),
    (torch.int32, {}, (-(2**31), 2**31 - 1)),
    ("int4", {}, (-8, 7)),
    ("uint4", {}, (0, 15)),
    ("int4", {"symmetric_narrow": True}, (-7, 7)),
    (torch.qint8, {}, (-128, 127)),
    (torch.quint8, {}, (0, 255)),
])
def test_quant_range(dtype, kwargs, expected):
    assert quant_range(dtype, **kwargs) == expected


def test_quant_range_accepts_torch_sub_byte_dtypes():
    assert quant_range(torch.int4) == quant_range("int4")
    assert quant_range(torch.uint4) == quant_range("uint4")


def test_quant_range_rejects_bad_input():
    with pytest.raises(ValueError, match="unsupported quantized dtype"):
        quant_range(torch.float32)
    with pytest.raises(ValueError, match="signed"):
        quant_range(torch.uint8, symmetric_narrow=True)


# ------------------------------------------------------------- choose_qparams --

def _ranges(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [(0.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (-3.5, -0.25), (0.25, 7.0), (-1e-9, 1e-9), (-1000.0, 3.0), (-2.0, 2.0)]
    for _ in range(n):
        a, b = sorted((torch.randn(2, generator=g) * 10 ** float(torch.empty(1).uniform_(-3, 3, generator=g))).tolist())
        out.append((a, b))
    return out


def _torch_qparams(lo, hi, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range deprecation
        obs = TorchMinMax(**kwargs)
    obs(torch.tensor([lo, hi]))
    return obs.calculate_qparams()


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_choose_qparams_matches_torch_minmax_observer(dtype, symmetric, reduce_range):
    if dtype == torch.uint8 and symmetric and reduce_range:
        # torch.ao refuses this combination; ours centres the reduced range 0..127 on 64
        s, z = choose_qparams(-1.0, 2.0, quant_min=0, quant_max=127, symmetric=True, dtype=torch.uint8)
        assert z.item() == 64 and s.item() == pytest.approx(2.0 / 63.5)
        return
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    qmin, qmax = quant_range(dtype, reduce_range=reduce_range)
    for lo, hi in _ranges():
        want_s, want_z = _torch_qparams(lo, hi, dtype=dtype, qscheme=qscheme, reduce_range=reduce_range)
        s, z = choose_qparams(torch.tensor(lo), torch.tensor(hi), quant_min=qmin, quant_max=qmax,
                              symmetric=symmetric, dtype=dtype)
        assert s.dtype == torch.float32 and z.dtype == torch.int32 and s.dim() == 0
        assert s.item() == want_s.item() and z.item() == want_z.item(), (lo, hi)


@pytest.mark.parametrize("dtype,qmin,qmax,symmetric", [
    (torch.int8, -127, 127, True), (torch.int8, -127, 127, False), (torch.uint8, 0, 127, False),
    (torch.int8, -8, 7, False), (torch.int8, -8, 7, True),
])
def test_choose_qparams_matches_torch_for_custom_ranges(dtype, qmin, qmax, symmetric):
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    for lo, hi in _ranges(15, seed=1):
        want_s, want_z = _torch_qparams(lo, hi, dtype=dtype, qscheme=qscheme, quant_min=qmin, quant_max=qmax)
        s, z = choose_qparams(lo, hi, quant_min=qmin, quant_max=qmax, symmetric=symmetric, dtype=dtype)
        assert s.item() == want_s.item() and z.item() == want_z.item(), (lo, hi)


@pytest.mark.parametrize("symmetric", [False, True])
def test_choose_qparams_per_channel_matches_torch(symmetric):
    w = torch.randn(16, 8) * torch.logspace(-3, 2, 16).reshape(-1, 1)
    w[3] = 0.0
    w[5] = w[5].abs()
    qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    obs = TorchPerChannel(ch_axis=0, dtype=torch.qint8, qscheme=qscheme)
    obs(w)
    want_s, want_z = obs.calculate_qparams()
    s, z = choose_qparams(w.amin(1), w.amax(1), quant_min=-128, quant_max=127, symmetric=symmetric)
    assert s.shape == (16,) and torch.equal(s, want_s) and torch.equal(z, want_z.to(torch.int32))


def test_symmetric_unsigned_zero_point_is_the_upper_midpoint():
    _, z = choose_qparams(-1.0, 2.0, quant_min=0, quant_max=255, symmetric=True, dtype=torch.uint8)
    assert z.item() == 128
    _, z = choose_qparams(-1.0, 2.0, quant_min=0, quant_max=127, symmetric=True, dtype=torch.uint8)
    assert z.item() == 64  # torch.ao picks 63 for this custom range (rounds the midpoint down)
    _, z = choose_qparams(-1.0, 2.0, quant_min=-128, quant_max=127, symmetric=True, dtype=torch.int8)
    assert z.item() == 0


def test_scale_min_and_eps_clamp_the_scale_before_the_zero_point():
    s, z = choose_qparams(-1e-6, 1e-5, quant_min=0, quant_max=255, symmetric=False, dtype=torch.uint8,
                          scale_min=2**-12)
    assert s.item() == 2**-12
    assert z.item() == -round(-1e-6 / 2**-12)  # zero point from the clamped scale
    s, _ = choose_qparams(0.0, 0.0, quant_min=-128, quant_max=127, symmetric=True, eps=1e-3)
    assert s.item() == pytest.approx(1e-3)


def test_range_always_includes_zero():
    _, z = choose_qparams(2.0, 5.0, symmetric=False, quant_min=-128, quant_max=127)
    assert z.item() == -128  # 0.0 is the lowest representable value
    s, z = choose_qparams(-5.0, -2.0, symmetric=False, quant_min=0, quant_max=255, dtype=torch.uint8)
    assert z.item() == 255 and s.item() == pytest.approx(5.0 / 255)


@pytest.mark.parametrize("kwargs,match", [
    (dict(min_val=1.0, max_val=0.0), "min_val must be <="),
    (dict(min_val=float("nan"), max_val=1.0), "finite"),
    (dict(min_val=torch.zeros(2), max_val=torch.ones(3)), "same shape"),
    (dict(min_val=0.0, max_val=1.0, quant_min=5, quant_max=5), "quant_min must be <"),
    (dict(min_val=0.0, max_val=1.0, scale_min=0.0), "scale_min"),
    (dict(min_val=0.0, max_val=1.0, quant_min=0, quant_max=255, symmetric=True), "does not fit dtype"),
    (dict(min_val=0.0, max_val=1.0, quant_min=0.5, quant_max=255), "must be integers"),
])
def test_choose_qparams_validation(kwargs, match):
    args = dict(quant_min=-128, quant_max=127, symmetric=False) | kwargs
    with pytest.raises(ValueError, match=match):
        choose_qparams(**args)


# --------------------------------------------------------- quantize / dequant --

QPARAMS = [(0.037, 3), (1.0, 0), (2**-7, -20), (0.5, 127), (3.3e-4, -128)]


@pytest.mark.parametrize("scale,zp", QPARAMS)
def test_quantize_per_tensor_matches_torch_pt2e_ops(scale, zp):
    x = torch.randn(4096) * 2
    x[:8] = torch.tensor([0.0, -0.0, 1e9, -1e9, scale / 2, -scale / 2, 1.5 * scale, 2.5 * scale])
    got = quantize_affine(x, scale, zp, **INT8)
    assert got.dtype == torch.int8 and torch.equal(got, QD.quantize_per_tensor(x, scale, zp, -128, 127, torch.int8))
    uzp = min(max(zp + 128, 0), 255)
    got_u = quantize_affine(x, torch.tensor(scale), torch.tensor(uzp), **UINT8)
    assert torch.equal(got_u, QD.quantize_per_tensor(x, scale, uzp, 0, 255, torch.uint8))
    assert torch.equal(dequantize_affine(got, scale, zp), QD.dequantize_per_tensor(got, scale, zp, -128, 127, torch.int8))


def test_legacy_quantize_per_tensor_differs_only_on_ties():
    # torch.quantize_per_tensor's vectorized path rounds x * inv_scale + zero_point in one
    # step, so exact ties (x * inv_scale = k + 0.5) may land one step away from
    # round-then-add (ours, the C kernels', torch's fake_quantize and PT2E ops).
    scale, zp = 0.037, 3
    x = torch.randn(4096) * 2
    x[:4] = torch.tensor([0.5, -0.5, 1.5, 2.5]) * scale
    got = quantize_affine(x, scale, zp, **INT8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = torch.quantize_per_tensor(x, scale, zp, torch.qint8).int_repr()
    diff = (got.int() - legacy.int()).abs()
    v = x * torch.reciprocal(torch.tensor(scale))
    near_tie = ((v - v.floor()) - 0.5).abs() < 1e-4
    assert int(diff.max()) == 1 and bool((diff[~near_tie] == 0).all())


@pytest.mark.parametrize("scale,zp", QPARAMS)
def test_fake_quantize_matches_torch_op(scale, zp):
    x = torch.randn(2048) * 3
    got = fake_quantize_affine(x, scale, zp, quant_min=-128, quant_max=127)
    assert torch.equal(got, torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127))
    assert torch.equal(got, dequantize_affine(quantize_affine(x, scale, zp, **INT8), scale, zp))


def test_rounds_half_to_even():
    halves = torch.arange(-20, 20, dtype=torch.float32) + 0.5  # exact ties with scale 1
    got = quantize_affine(halves, 1.0, 0, **INT8)
    assert got.tolist() == [round(v) for v in halves.tolist()]  # Python's round() is half-even
    got = quantize_affine(halves * 0.25, 0.25, 3, **INT8)  # exact in binary too
    assert got.tolist() == [round(v) + 3 for v in halves.tolist()]


def test_nan_maps_to_zero_point_and_inf_saturates():
    x = torch.tensor([float("nan"), float("inf"), -float("inf")])
    assert quantize_affine(x, 0.1, 5, **INT8).tolist() == [5, 127, -128]
    assert quantize_affine(x, 0.1, 200, **UINT8).tolist() == [200, 255, 0]


@pytest.mark.parametrize("dtype", ["int4", torch.int4])
def test_int4_values_live_in_int8_storage(dtype):
    x = torch.linspace(-2, 2, 101)
    q = quantize_affine(x, 0.2, 0, quant_min=-8, quant_max=7, dtype=dtype)
    assert q.dtype == torch.int8 and q.min().item() == -8 and q.max().item() == 7
    with pytest.raises(ValueError, match="does not fit dtype"):
        quantize_affine(x, 0.2, 0, quant_min=-128, quant_max=127, dtype=dtype)
    assert quantize_affine(x, 0.2, 3, quant_min=0, quant_max=15, dtype="uint4").dtype == torch.uint8


def test_int32_quantization_is_exact_for_large_values():
    x = torch.tensor([1.0e9, -2.0e9, 3.0e9, 12345.0])
    q = quantize_affine(x, 1.0, 7, quant_min=-(2**31), quant_max=2**31 - 1, dtype=torch.int32)
    want = [min(max(round(float(torch.tensor(v, dtype=torch.float32))) + 7, -(2**31)), 2**31 - 1) for v in x.tolist()]
    assert q.dtype == torch.int32 and q.tolist() == want


def test_per_group_is_per_channel_on_the_grouped_view():
    rows, cols, g = 6, 32, 8
    w = torch.randn(rows, cols)
    groups = w.reshape(rows, cols // g, g)
    scale, zp = choose_qparams(groups.amin(-1), groups.amax(-1), quant_min=-8, quant_max=7, symmetric=False)
    q = quantize_affine(w, scale, zp, quant_min=-8, quant_max=7, dtype="int4", group_size=g)
    flat = w.reshape(-1, g)
    want = quantize_affine(flat, scale.reshape(-1), zp.reshape(-1), quant_min=-8, quant_max=7, dtype="int4", axis=0)
    assert q.shape == w.shape and torch.equal(q.reshape(-1, g), want)
    deq = dequantize_affine(q, scale, zp, group_size=g)
    assert torch.equal(deq.reshape(-1, g), dequantize_affine(want, scale.reshape(-1), zp.reshape(-1), axis=0))
    err = (deq - w).abs().reshape(rows, cols // g, g)
    assert bool((err <= scale.unsqueeze(-1) / 2 * (1 + 1e-5)).all())


@pytest.mark.parametrize("call,match", [
    (lambda x: quantize_affine(x, 0.0, 0, **INT8), "positive and finite"),
    (lambda x: quantize_affine(x, float("nan"), 0, **INT8), "positive and finite"),
    (lambda x: quantize_affine(x, torch.tensor([0.1, -0.1, 0.1, 0.1]), 0, axis=0, **INT8), "positive"),
    (lambda x: quantize_affine(x, 0.1, 0, quant_min=5, quant_max=4, dtype=torch.int8), "quant_min must be <="),
    (lambda x: quantize_affine(x, 0.1, 0, quant_min=0, quant_max=300, dtype=torch.uint8), "does not fit"),
    (lambda x: quantize_affine(x, 0.1, 200, **INT8), "zero_point must lie"),
    (lambda x: quantize_affine(x, 0.1, 0.5, **INT8), "integers"),
    (lambda x: quantize_affine(x, torch.ones(3), 0, axis=0, **INT8), "must have 4 entries"),
    (lambda x: quantize_affine(x, 0.1, 0, axis=2, **INT8), "out of range"),
    (lambda x: quantize_affine(x, torch.ones(4), 0, group_size=4, **INT8), "does not divide"),
    (lambda x: quantize_affine(x, torch.ones(3), 0, group_size=2, **INT8), "one entry per group"),
    (lambda x: quantize_affine(x, torch.ones(4), 0, **INT8), "per-tensor quantization takes one scale"),
    (lambda x: quantize_affine(x, 0.1, 0, quant_min=-128, quant_max=127, dtype=torch.float32), "unsupported"),
])
def test_quantize_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(4, 6))


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(1e-4, 10.0),
    zp=st.integers(-128, 127),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=64),
)
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(scale, zp, fractions):
    # Values inside [(qmin - zp) * s, (qmax - zp) * s] come back within s/2; the 1e-5
    # relative slack covers the float32 rounding of x * (1/s) (a few ulps), nothing more.
    lo, hi = (-128 - zp) * scale, (127 - zp) * scale
    x = torch.tensor([lo + f * (hi - lo) for f in fractions], dtype=torch.float32).clamp(lo, hi)
    back = dequantize_affine(quantize_affine(x, scale, zp, **INT8), scale, zp)
    err = (back.double() - x.double()).abs()
    assert float(err.max()) <= scale / 2 * (1 + 1e-5) + 1e-7 * max(abs(lo), abs(hi))


def test_dequantize_out_dtype_and_validation():
    q = torch.tensor([-128, 0, 127], dtype=torch.int8)
    d = dequantize_affine(q, 0.5, -1, out_dtype=torch.float64)
    assert d.dtype == torch.float64 and d.tolist() == [-63.5, 0.5, 64.0]
    with pytest.raises(ValueError, match="integer tensor"):
        dequantize_affine(q.float(), 0.5, 0)


# ------------------------------------------------------------------ int4 pack --


@settings(max_examples=50, deadline=None)
@given(rows=st.integers(1, 5), pairs=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_pack_int4_round_trip(rows, pairs, seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-8, 8, (rows, 2 * pairs), generator=g, dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, pairs)
    assert torch.equal(unpack_int4(packed), q)


def test_pack_int4_nibble_order():
    # low nibble = even index, high nibble = odd index, two's complement nibbles
    q = torch.tensor([1, -2, -8, 7], dtype=torch.int8)
    assert pack_int4(q).tolist() == [(0xE << 4) | 0x1, (0x7 << 4) | 0x8]


def test_pack_int4_validation():
    with pytest.raises(ValueError, match="even"):
        pack_int4(torch.zeros(3, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_int4(torch.tensor([8, 0], dtype=torch.int8))
    with pytest.raises(ValueError, match="int8"):
        pack_int4(torch.zeros(2, dtype=torch.int32))


def test_pack_uint4_round_trip_nibble_order_and_validation():
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 16, (4, 10), generator=g, dtype=torch.uint8)
    packed = pack_uint4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (4, 5)
    assert torch.equal(unpack_uint4(packed), codes)
    # torch's embedding_bag_4bit layout: element 2i in the low nibble of byte i
    assert pack_uint4(torch.tensor([1, 14, 15, 0], dtype=torch.uint8)).tolist() == [0xE1, 0x0F]
    with pytest.raises(ValueError, match="even"):
        pack_uint4(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack_uint4(torch.tensor([16, 0], dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pack_uint4(torch.zeros(2, dtype=torch.int8))
    with pytest.raises(ValueError, match="uint8"):
        unpack_uint4(torch.zeros(2, dtype=torch.int8))


# ---------------------------------------------------------------- bias, requant --


def test_quantize_bias_per_tensor_and_per_channel():
    bias = torch.randn(16) * 4
    w_scale = torch.rand(16) * 0.05 + 1e-3
    q = quantize_bias(bias, 0.02, w_scale)
    step = (0.02 * w_scale.double())
    assert q.dtype == torch.int32
    assert bool(((q.double() * step - bias.double()).abs() <= step / 2 * (1 + 1e-5)).all())
    q1 = quantize_bias(bias, torch.tensor([0.02]), torch.tensor(0.01))
    assert bool(((q1.double() * 2e-4 - bias.double()).abs() <= 1e-4 * (1 + 1e-4)).all())


def test_quantize_bias_saturates_at_int32():
    q = quantize_bias(torch.tensor([1e30, -1e30, 0.0]), 1e-3, torch.tensor(1e-3))
    assert q.tolist() == [2**31 - 1, -(2**31), 0]
    with pytest.raises(ValueError, match="per-channel"):
        quantize_bias(torch.zeros(3), 0.1, torch.ones(4))
    with pytest.raises(ValueError, match="positive"):
        quantize_bias(torch.zeros(3), 0.0, torch.ones(3))


def _numpy_requant(acc, m, zp, qmin, qmax):
    v = np.rint(acc.numpy().astype(np.float32) * np.asarray(m, dtype=np.float32))  # float32 product, ties to even
    return np.clip(v.astype(np.float64) + zp, qmin, qmax).astype(np.int64)


@pytest.mark.parametrize("per_channel", [False, True])
def test_requantize_matches_float32_c_semantics(per_channel):
    g = torch.Generator().manual_seed(3)
    acc = torch.randint(-(2**20), 2**20, (33, 7), generator=g, dtype=torch.int32)
    acc[0] = torch.tensor([2**31 - 1, -(2**31), 2**24 + 1, -(2**24) - 3, 16777217, 0, 1], dtype=torch.int32)
    m = torch.rand(7, generator=g) * 1e-3 + 1e-6 if per_channel else torch.tensor(3.1e-4)
    for zp, qmin, qmax in ((5, -128, 127), (128, 0, 255), (-128, -128, 127)):
        got = requantize_reference(acc, m, zp, qmin, qmax)
        assert got.dtype == torch.int32
        assert got.tolist() == _numpy_requant(acc, m.numpy(), zp, qmin, qmax).tolist()
    assert requantize_reference(acc, m, 3, -128, 127, dtype=torch.int8).dtype == torch.int8


def test_requantize_ties_go_to_even():
    acc = torch.tensor([1, 3, 5, -1, -3, 7], dtype=torch.int32)
    assert requantize_reference(acc, 0.5, 0, -128, 127).tolist() == [round(a / 2) for a in acc.tolist()]


def test_requantize_validation():
    acc = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match="integer"):
        requantize_reference(acc.float(), 0.1, 0, -128, 127)
    with pytest.raises(ValueError, match="last dim"):
        requantize_reference(acc, torch.ones(2), 0, -128, 127)
    with pytest.raises(ValueError, match="int32 range"):
        requantize_reference(torch.tensor([2**40]), 0.1, 0, -128, 127)
    with pytest.raises(ValueError, match="out_zero_point"):
        requantize_reference(acc, 0.1, 300, 0, 255)
    with pytest.raises(ValueError, match="positive"):
        requantize_reference(acc, -0.1, 0, -128, 127)


# ------------------------------------------------------------------------ sqnr --


def test_sqnr():
    ref = torch.randn(1000)
    assert sqnr(ref, ref.clone()) == math.inf
    assert sqnr(ref, ref * 1.1) == pytest.approx(20.0)  # noise norm = 0.1 * signal norm
    assert sqnr(ref, ref * 1.01) == pytest.approx(40.0)
    assert sqnr(torch.zeros(3), torch.ones(3)) == -math.inf
    with pytest.raises(ValueError, match="shapes"):
        sqnr(ref, ref[:10])
