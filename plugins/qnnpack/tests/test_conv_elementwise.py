"""conv2d, add, mul and lookup-table kernels: every usable ISA path vs the scalar path and the reference.

conv2d must equal :class:`quantplug.reference_kernels.ReferenceKernels` bit for bit
(general, pointwise, grouped, depthwise; NCHW and channels_last; extreme values;
reduction lengths past 16384). add and mul must equal their float32 contracts
bit for bit on every path; the lookup tables must equal the reference chain
``dq -> f -> q`` exactly.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantplug
from quantplug.errors import KernelInputError
from quantplug.quant_ops import ops as qops
from quantplug.reference_kernels import ReferenceKernels

from quantplug_qnnpack.backend_config import FIXED_QPARAMS

KERNELS = quantplug.get_backend("qnnpack").kernels
ISAS = KERNELS.usable_isas()
REF = ReferenceKernels(act_dtype=torch.uint8, act_range=(0, 255))
HYP = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _bytes(shape, mode, gen, lo=0, hi=255, dtype=torch.uint8):
    if mode == "min":
        return torch.full(shape, lo, dtype=dtype)
    if mode == "max":
        return torch.full(shape, hi, dtype=dtype)
    return torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int32).to(dtype)


# ------------------------------------------------------------------ conv2d --

GEOMETRY = st.fixed_dictionaries({
    "kind": st.sampled_from(["general", "pointwise", "grouped", "depthwise"]),
    "n": st.integers(1, 2), "cin_g": st.integers(1, 9), "cout_g": st.integers(1, 20),
    "groups": st.integers(2, 3), "dw_channels": st.integers(1, 40),
    "h": st.integers(1, 9), "w": st.integers(1, 9), "k": st.integers(1, 3),
    "stride": st.integers(1, 2), "pad": st.integers(0, 1), "dilation": st.integers(1, 2),
    "channels_last": st.booleans(), "relu": st.booleans(), "bias": st.booleans(),
    "x_mode": st.sampled_from(["random", "random", "min", "max"]),
    "w_mode": st.sampled_from(["random", "random", "min", "max"]),
    "x_zp": st.integers(0, 255), "out_zp": st.integers(0, 255), "seed": st.integers(0, 2**31 - 1),
})


def _conv_case(g):
    """(x_q, w_q, scales, zps, bias, stride, pad, dilation, groups) of a hypothesis geometry, or None."""
    gen = torch.Generator().manual_seed(g["seed"])
    k, groups = g["k"], 1
    cin_g, cout = g["cin_g"], g["cout_g"]
    if g["kind"] == "pointwise":
        k = 1
    elif g["kind"] == "grouped":
        groups, cout = g["groups"], g["cout_g"] * g["groups"]
    elif g["kind"] == "depthwise":
        groups = cout = g["dw_channels"]
        cin_g = 1
    eff = g["dilation"] * (k - 1) + 1
    h, w = max(g["h"], eff - 2 * g["pad"]), max(g["w"], eff - 2 * g["pad"])
    x = _bytes((g["n"], cin_g * groups, h, w), g["x_mode"], gen)
    if g["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    w_q = _bytes((cout, cin_g, k, k), g["w_mode"], gen, -128, 127, torch.int8)
    scales = torch.rand(cout, generator=gen) * 0.02 + 0.001
    zps = torch.randint(-128, 128, (cout,), generator=gen, dtype=torch.int32)
    bias = torch.randn(cout, generator=gen) * 3 if g["bias"] else None
    return x, w_q, scales, zps, bias, g["stride"], g["pad"], g["dilation"], groups


def _check_conv(case, x_scale, x_zp, out_scale, out_zp, relu):
    x, w_q, scales, zps, bias, stride, pad, dilation, groups = case
    ours = KERNELS.pack_conv2d_weight(w_q, scales, zps, stride, pad, dilation, groups)
    ref = REF.pack_conv2d_weight(w_q, scales, zps, stride, pad, dilation, groups)
    want = REF.conv2d(x, x_scale, x_zp, ref, bias, out_scale, out_zp, relu=relu)
    got = KERNELS.conv2d(x, x_scale, x_zp, ours, bias, out_scale, out_zp, relu=relu)
    assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, want), f"{int((got != want).sum())} of {got.numel()} outputs differ"


@pytest.mark.parametrize("isa", ISAS)
@HYP
@given(g=GEOMETRY)
def test_conv2d_every_isa_matches_reference(isa, g):
    case = _conv_case(g)
    with KERNELS.use_isa(isa):
        _check_conv(case, 0.03, g["x_zp"], 0.05 + 0.01 * (g["seed"] % 7), g["out_zp"], g["relu"])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("channels,pad,mode", [(1, 1, "random"), (16, 0, "random"), (40, 1, "random"),
                                               (144, 1, "random"), (33, 2, "max"), (17, 1, "min")])
def test_depthwise_3x3_stride1_every_isa(isa, channels, pad, mode):
    """MobileNet's depthwise layer shape (the pair-row path on AVX-512 VNNI): borders, padding
    rows, channel tails, two images, the grid's ends."""
    gen = torch.Generator().manual_seed(channels * 10 + pad)
    x = _bytes((2, channels, 7, 12), mode, gen).contiguous(memory_format=torch.channels_last)
    w = _bytes((channels, 1, 3, 3), "min" if mode == "max" else "random", gen, -128, 127, torch.int8)
    scales = torch.rand(channels, generator=gen) * 0.02 + 0.001
    zps = torch.randint(-128, 128, (channels,), generator=gen, dtype=torch.int32)
    bias = torch.randn(channels, generator=gen) * 3
    case = (x, w, scales, zps, bias, 1, pad, 1, channels)
    with KERNELS.use_isa(isa):
        _check_conv(case, 0.03, 0 if mode == "max" else 131, 0.05, 100, False)
        _check_conv(case, 0.03, 255 if mode == "min" else 7, 0.07, 3, True)


# The 3x3 depthwise row path (conv.c: staged tap triples, one dot product per kernel row): (n, channels,
# h, w, stride, pad, threads, weights, scales). weights "fit": every w - w_zp in int8 (one vpdpbusd per
# row); "wide": w - w_zp reaches -255 and 255 (the 2 * h + l split); "mixed": both kinds of 16-channel
# slice. scales "big": a multiplier that sends |acc * mult| past int32 (the float clamp is needed).
DW3_CASES = [
    (1, 5, 1, 1, 1, 1, 1, "fit", "normal"),      # one pixel: only the middle kernel row is inside
    (1, 16, 2, 3, 1, 2, 1, "wide", "normal"),    # pad 2: output rows that read one input row
    (2, 17, 6, 13, 1, 1, 1, "mixed", "normal"),  # a 1-channel tail slice, odd width, two images
    (1, 33, 9, 11, 2, 1, 1, "mixed", "big"),     # stride 2, big multipliers
    (1, 48, 5, 7, 2, 0, 1, "wide", "big"),
    (2, 40, 21, 9, 1, 1, 2, "fit", "normal"),    # bands split between threads and images
    (1, 144, 6, 10, 1, 1, 1, "mixed", "big"),    # MobileNet's channel count
    (1, 20, 4, 5, 1, 0, 1, "fit", "big"),        # no padding, width 1..3 rows of pixels
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", DW3_CASES)
def test_depthwise_3x3_row_path_every_isa(isa, case):
    n, c, h, w, stride, pad, threads, wmode, smode = case
    gen = torch.Generator().manual_seed(c * 100 + h)
    x = _bytes((n, c, h, w), "random", gen).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :] = 255  # full-range input in every case
    x[-1, -1, -1, :] = 0
    w_q = _bytes((c, 1, 3, 3), "random", gen, -128, 127, torch.int8)
    zps = torch.randint(-20, 21, (c,), generator=gen, dtype=torch.int32)
    if wmode != "fit":
        # "mixed": every other whole 16-channel slice
        wide = (torch.arange(c) // 16) % 2 == 0 if wmode == "mixed" else torch.ones(c, dtype=torch.bool)
        w_q[wide, 0, 0, 0] = 127
        w_q[wide, 0, 2, 2] = -128
        zps[wide] = torch.where(torch.arange(c)[wide] % 3 == 0, -128, 127).to(torch.int32)
    else:
        w_q = w_q.clamp(-100, 100)
    scales = torch.rand(c, generator=gen) * 0.02 + 0.001
    if smode == "big":
        scales = scales * 200
    bias = torch.randn(c, generator=gen) * 3
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with KERNELS.use_isa(isa):
            for x_zp, out_scale, out_zp, relu, b in ((131, 0.05, 100, False, bias), (0, 0.07, 3, True, None),
                                                     (255, 2.0**-12, 255, False, bias * 1000)):
                _check_conv((x, w_q, scales, zps, b, stride, pad, 1, c), 0.03 if smode == "normal" else 4.0,
                            x_zp, out_scale, out_zp, relu)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("isa", ISAS)
def test_conv2d_long_reduction_extremes_no_overflow(isa):
    # K = 3 * 3 * 2048 = 18432 > 16384 with |x - x_zp| = 255 and |w - w_zp| = 255 everywhere:
    # |acc| = 255 * 255 * 18432 ~ 1.2e9 still fits in int32, and no path may saturate on the way.
    x = torch.full((1, 2048, 3, 3), 255, dtype=torch.uint8)
    w = torch.full((2, 2048, 3, 3), -128, dtype=torch.int8)
    case = (x, w, torch.tensor([1e-9, 2e-9]), torch.tensor([127, 127], dtype=torch.int32), None, 1, 0, 1, 1)
    with KERNELS.use_isa(isa):
        _check_conv(case, 0.01, 0, 0.01, 128, False)
        # the far end of the grid: x at 0 with zero point 255
        case = (torch.zeros_like(x), torch.full_like(w, 127), case[2], torch.tensor([-128, -128], dtype=torch.int32),
                None, 1, 0, 1, 1)
        _check_conv(case, 0.01, 255, 0.01, 128, False)


# (n, cin_g, cout_g, groups, h, w, k, stride, pad, dilation, x_mode): at least 4 * 32 output rows per
# thread, so the conv runs as fused row tasks (im2col + GEMM per task, see conv.c), with task
# boundaries inside images, between images and off the tiles' multiples.
ROW_TASKS = [
    (2, 8, 20, 1, 19, 17, 3, 1, 1, 1, "random"),   # 3x3 borders, 646 rows over two images
    (1, 3, 16, 1, 33, 37, 7, 2, 3, 1, "random"),   # the stem's few-channel 7x7 / 2
    (2, 24, 40, 1, 31, 33, 1, 2, 0, 1, "max"),     # strided pointwise
    (2, 5, 7, 3, 23, 21, 3, 1, 2, 2, "random"),    # groups, dilation 2
    (1, 17, 33, 1, 16, 17, 3, 1, 1, 1, "min"),     # 272 rows: one task per 34
    # unstrided pointwise: rows read in place of the image (conv.c qnnpack_rows_are_pixels)
    (2, 13, 20, 1, 9, 11, 1, 1, 0, 1, "random"),   # K 13 padded to 16, 20 channels: 16 + 4
    (1, 144, 24, 1, 14, 14, 1, 1, 0, 1, "max"),    # MobileNet's 144 -> 24, last block 8 wide
    (1, 1024, 1000, 1, 6, 7, 1, 1, 0, 1, "random"),  # 1 MB of weights: the chunked im2col path
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geom", ROW_TASKS)
def test_conv2d_row_tasks_every_isa_and_thread_count(isa, threads, geom):
    n, cin_g, cout_g, groups, h, w, k, stride, pad, dilation, x_mode = geom
    gen = torch.Generator().manual_seed(h * 100 + w)
    cout = cout_g * groups
    x = _bytes((n, cin_g * groups, h, w), x_mode, gen).contiguous(memory_format=torch.channels_last)
    w_q = _bytes((cout, cin_g, k, k), "random", gen, -128, 127, torch.int8)
    scales = torch.rand(cout, generator=gen) * 0.02 + 0.001
    zps = torch.randint(-128, 128, (cout,), generator=gen, dtype=torch.int32)
    bias = torch.randn(cout, generator=gen) * 3
    torch.set_num_threads(threads)
    with KERNELS.use_isa(isa):
        _check_conv((x, w_q, scales, zps, bias, stride, pad, dilation, groups), 0.03, 17, 0.05, 120, False)
        _check_conv((x, w_q, scales, zps, None, stride, pad, dilation, groups), 0.03, 250, 0.08, 3, True)


def test_conv2d_nchw_and_channels_last_agree(kernels):
    gen = torch.Generator().manual_seed(3)
    x = _bytes((2, 16, 11, 13), "random", gen)
    w = _bytes((24, 8, 3, 3), "random", gen, -128, 127, torch.int8)
    packed = kernels.pack_conv2d_weight(w, torch.full((24,), 0.01), torch.zeros(24, dtype=torch.int32), 2, 1, 1, 2)
    a = kernels.conv2d(x, 0.05, 7, packed, None, 0.1, 3)
    b = kernels.conv2d(x.contiguous(memory_format=torch.channels_last), 0.05, 7, packed, None, 0.1, 3)
    assert torch.equal(a, b)


# -------------------------------------------------------- add, mul, lookup --

ELEMENTWISE = st.fixed_dictionaries({
    "n": st.sampled_from([1, 7, 8, 15, 16, 17, 63, 64, 65, 257, 4099]),
    "a_mode": st.sampled_from(["random", "random", "min", "max"]),
    "b_mode": st.sampled_from(["random", "random", "min", "max"]),
    "a_zp": st.integers(0, 255), "b_zp": st.integers(0, 255), "out_zp": st.integers(0, 255),
    "a_scale": st.floats(2.0**-12, 4.0), "b_scale": st.floats(2.0**-12, 4.0), "out_scale": st.floats(2.0**-12, 4.0),
    "relu": st.booleans(), "seed": st.integers(0, 2**31 - 1),
})


def _f32(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float32)


def ref_mul(a, a_zp, b, b_zp, a_scale, b_scale, out_scale, out_zp, relu):
    """Exact integer product, one float32 multiply by a_scale * b_scale / out_scale, round half to even."""
    prod = (a.to(torch.int32) - a_zp) * (b.to(torch.int32) - b_zp)
    mult = _f32(a_scale) * _f32(b_scale) / _f32(out_scale)
    v = torch.round(prod.to(torch.float32) * mult) + out_zp
    return v.clamp(out_zp if relu else 0, 255).to(torch.uint8)


@pytest.mark.parametrize("isa", ISAS)
@HYP
@given(e=ELEMENTWISE)
def test_add_and_mul_every_isa_match_their_contracts(isa, e):
    gen = torch.Generator().manual_seed(e["seed"])
    a, b = _bytes((e["n"],), e["a_mode"], gen), _bytes((e["n"],), e["b_mode"], gen)
    args = (a, e["a_scale"], e["a_zp"], b, e["b_scale"], e["b_zp"], e["out_scale"], e["out_zp"])
    want_add = REF.add(*args, relu=e["relu"])
    want_mul = ref_mul(a, e["a_zp"], b, e["b_zp"], e["a_scale"], e["b_scale"], e["out_scale"], e["out_zp"], e["relu"])
    with KERNELS.use_isa(isa):
        assert torch.equal(KERNELS.add(*args, relu=e["relu"]), want_add)
        assert torch.equal(KERNELS.mul(*args, relu=e["relu"]), want_mul)


def test_mul_within_one_lsb_of_the_float_reference_chain(kernels):
    # The reference graph rounds dq(a) * dq(b) / out_scale; the kernel rounds the exact product once.
    gen = torch.Generator().manual_seed(5)
    a, b = _bytes((4096,), "random", gen), _bytes((4096,), "random", gen)
    got = kernels.mul(a, 0.02, 100, b, 0.03, 140, 0.05, 128)
    da = qops.dequantize_per_tensor.default(a, 0.02, 100, 0, 255, torch.uint8)
    db = qops.dequantize_per_tensor.default(b, 0.03, 140, 0, 255, torch.uint8)
    want = qops.quantize_per_tensor.default(da * db, 0.05, 128, 0, 255, torch.uint8)
    assert int((got.to(torch.int32) - want.to(torch.int32)).abs().max()) <= 1


def test_elementwise_layouts(kernels):
    gen = torch.Generator().manual_seed(6)
    a = _bytes((2, 5, 3, 4), "random", gen)
    b = _bytes((2, 5, 3, 4), "random", gen)
    want = kernels.mul(a, 0.1, 3, b, 0.1, 4, 0.2, 5)
    cl_a, cl_b = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
    got = kernels.mul(cl_a, 0.1, 3, cl_b, 0.1, 4, 0.2, 5)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, want)
    assert torch.equal(kernels.mul(cl_a, 0.1, 3, b, 0.1, 4, 0.2, 5), want)  # mixed layouts
    assert torch.equal(kernels.add(a.transpose(1, 2), 0.1, 3, b.transpose(1, 2), 0.1, 4, 0.2, 5),
                       kernels.add(a, 0.1, 3, b, 0.1, 4, 0.2, 5).transpose(1, 2))
    table = kernels.lut_table("sigmoid", 0.05, 128)
    assert torch.equal(kernels.lookup(a.transpose(1, 2), table), table[a.transpose(1, 2).long()])
    assert kernels.lookup(cl_a, table).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("op", sorted(FIXED_QPARAMS))
@settings(max_examples=12, deadline=None)
@given(x_scale=st.floats(2.0**-12, 2.0), x_zp=st.integers(0, 255))
def test_lookup_table_equals_reference_chain(op, x_scale, x_zp):
    """The table is dq -> f -> q with quantplug's own ops: the lowered op is bit-exact with the chain."""
    out_scale, out_zp = FIXED_QPARAMS[op]
    fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardsigmoid": torch.nn.functional.hardsigmoid}[op]
    levels = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    x = qops.dequantize_per_tensor.default(levels, x_scale, x_zp, 0, 255, torch.uint8)
    want = qops.quantize_per_tensor.default(fn(x), out_scale, out_zp, 0, 255, torch.uint8)
    assert torch.equal(KERNELS.lut_table(op, x_scale, x_zp), want)
    gen = torch.Generator().manual_seed(x_zp)
    data = _bytes((3, 70001), "random", gen)  # > one 64 Ki chunk: the threaded path too
    got = getattr(KERNELS, op)(data, x_scale, x_zp)
    assert torch.equal(got, want[data.long()])


@pytest.mark.parametrize("call,match", [
    (lambda k: k.mul(torch.zeros(3), 0.1, 0, torch.zeros(3, dtype=torch.uint8), 0.1, 0, 0.1, 0), "a_q has dtype"),
    (lambda k: k.mul(torch.zeros(3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, dtype=torch.uint8), 0.1, 0, 0.1, 0),
     "differ in shape"),
    (lambda k: k.mul(torch.zeros(3, dtype=torch.uint8), 0.1, 0, "b", 0.1, 0, 0.1, 0), "b_q must be a torch.Tensor"),
    (lambda k: k.mul(torch.zeros(3, dtype=torch.uint8), 0.1, 300, torch.zeros(3, dtype=torch.uint8), 0.1, 0, 0.1, 0),
     "a_zero_point"),
    (lambda k: k.mul(torch.zeros(3, dtype=torch.uint8), 1e-5, 0, torch.zeros(3, dtype=torch.uint8), 0.1, 0, 0.1, 0),
     "2\\*\\*-12"),
    (lambda k: k.add(torch.zeros(3, dtype=torch.uint8, device="meta"), 0.1, 0, torch.zeros(3, dtype=torch.uint8),
                     0.1, 0, 0.1, 0), "is on meta"),
    (lambda k: k.lookup(torch.zeros(3, dtype=torch.uint8), torch.zeros(255, dtype=torch.uint8)), "table has shape"),
    (lambda k: k.lookup(torch.zeros(3, dtype=torch.int8), torch.zeros(256, dtype=torch.uint8)), "x_q has dtype"),
    (lambda k: k.lut_table("gelu", 0.1, 0), "unknown op 'gelu'"),
    (lambda k: k.sigmoid(torch.zeros(3, dtype=torch.uint8), float("nan"), 0), "x_scale"),
])
def test_elementwise_bad_inputs(kernels, call, match):
    with pytest.raises(KernelInputError, match=match):
        call(kernels)
