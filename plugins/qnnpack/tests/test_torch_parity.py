"""Parity with torch's own QNNPACK engine (``torch.backends.quantized.engine = 'qnnpack'``).

Static linear: within 1 LSB, and almost always equal. The rare 1-LSB
differences come from torch's side of the arithmetic, not from QNNPACK's
integer GEMM (which is exact in both): torch quantizes the bias with a
scale product it forms itself (``input_scale * weight_scale`` taken from
double-precision qparams) and computes the float32 requantization scale in
its own order, so an accumulator whose scaled value lies within an ulp of a
.5 rounding boundary can round the other way. quantplug's contract is
``quantplug.affine.requantize_reference`` with ``requant_params``; the
kernels match that bit for bit (test_kernels.py).

Dynamic linear: torch picks the activation zero point with a different
(error-minimizing, double precision) rule, so outputs can differ by about
one activation quantization step times the weight magnitude; the bound
checked is exactly that.
"""

import warnings

import pytest
import torch

import quantplug

pytestmark = pytest.mark.skipif("qnnpack" not in torch.backends.quantized.supported_engines,
                                reason="this torch build has no qnnpack engine")

KERNELS = quantplug.get_backend("qnnpack").kernels


@pytest.fixture(autouse=True)
def qnnpack_engine():
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notices on quantized tensors
        yield
    torch.backends.quantized.engine = previous


def _torch_weight(n, k, per_channel, gen):
    w = torch.randn(n, k, generator=gen)
    if per_channel:
        s = (torch.rand(n, generator=gen) * 0.02 + 0.002).double()
        z = torch.randint(-20, 21, (n,), generator=gen)
        qw = torch.quantize_per_channel(w, s, z, 0, torch.qint8)
        return qw, s.float(), z.to(torch.int32)
    s, z = 0.015, 3
    qw = torch.quantize_per_tensor(w, s, z, torch.qint8)
    return qw, torch.full((n,), s), torch.full((n,), z, dtype=torch.int32)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_static_linear_within_one_lsb_of_torch_qnnpack(per_channel, relu):
    gen = torch.Generator().manual_seed(10 + per_channel + 2 * relu)
    total = differing = 0
    for m, k, n in [(1, 1, 1), (3, 17, 5), (17, 64, 33), (64, 129, 17), (5, 300, 64), (129, 3, 7)]:
        qw, ws, wz = _torch_weight(n, k, per_channel, gen)
        x_scale, x_zp = 0.02 + 0.03 * float(torch.rand((), generator=gen)), int(torch.randint(0, 256, (), generator=gen))
        out_scale, out_zp = 0.05 + 0.3 * float(torch.rand((), generator=gen)), int(torch.randint(0, 256, (), generator=gen))
        qx = torch.quantize_per_tensor(torch.randn(m, k, generator=gen) * 2, x_scale, x_zp, torch.quint8)
        bias = torch.randn(n, generator=gen)
        op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
        want = op(qx, torch.ops.quantized.linear_prepack(qw, bias), out_scale, out_zp).int_repr()
        packed = KERNELS.pack_linear_weight(qw.int_repr().contiguous(), ws, wz)
        got = KERNELS.linear(qx.int_repr(), x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu)
        diff = (got.to(torch.int32) - want.to(torch.int32)).abs()
        assert int(diff.max()) <= 1, f"m={m} k={k} n={n}: {int(diff.max())} LSB from torch's qnnpack"
        total += diff.numel()
        differing += int((diff > 0).sum())
    assert differing <= max(2, total // 100), f"{differing}/{total} outputs differ by 1 LSB"


def test_uint8_weight_representation_matches_torch_prepack():
    # torch's qnnpack prepack stores qint8 weights as uint8 (value + 128), zero point + 128: ours too.
    gen = torch.Generator().manual_seed(20)
    qw, ws, wz = _torch_weight(7, 9, True, gen)
    packed = KERNELS.pack_linear_weight(qw.int_repr().contiguous(), ws, wz)
    w_u8, _, zps = KERNELS.unpack_linear_weight(packed)
    assert torch.equal(w_u8.to(torch.int32), qw.int_repr().to(torch.int32) + 128)
    assert torch.equal(zps, qw.q_per_channel_zero_points().to(torch.int32) + 128)


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_linear_close_to_torch_qnnpack(per_channel):
    gen = torch.Generator().manual_seed(30 + per_channel)
    for m, k, n in [(1, 5, 3), (8, 64, 32), (33, 17, 65)]:
        qw, ws, wz = _torch_weight(n, k, per_channel, gen)
        bias = torch.randn(n, generator=gen)
        x = torch.randn(m, k, generator=gen) * 3
        want = torch.ops.quantized.linear_dynamic(x, torch.ops.quantized.linear_prepack(qw, bias))
        got = KERNELS.linear_dynamic(x, KERNELS.pack_linear_weight(qw.int_repr().contiguous(), ws, wz), bias)
        x_scale, _ = KERNELS.choose_dynamic_qparams(x)
        # one activation step per input element, times |w|, plus float slack
        bound = 1.01 * x_scale * qw.dequantize().abs().sum(1) + 1e-4
        assert bool(((got - want).abs() <= bound).all())
        exact = x @ qw.dequantize().t() + bias
        assert float((got - exact).abs().max()) <= float(bound.max())


def _within_one_lsb(got, want, what):
    """At most 1 LSB apart, and only rarely (same reasons as the static linear)."""
    diff = (got.to(torch.int32) - want.to(torch.int32)).abs()
    assert int(diff.max()) <= 1, f"{what}: {int(diff.max())} LSB from torch's qnnpack"
    assert int((diff > 0).sum()) <= max(2, diff.numel() // 50), f"{what}: {int((diff > 0).sum())}/{diff.numel()} differ"


@pytest.mark.parametrize("geometry", [
    # N, Cin, H, W, Cout, k, stride, pad, dilation, groups
    (1, 3, 17, 15, 8, 7, 2, 3, 1, 1),    # ResNet stem shape, small
    (2, 16, 9, 9, 16, 3, 1, 1, 1, 1),    # 3x3
    (1, 24, 8, 8, 40, 1, 1, 0, 1, 1),    # pointwise
    (1, 12, 10, 10, 18, 3, 2, 1, 1, 3),  # grouped
    (1, 40, 12, 12, 40, 3, 1, 1, 1, 40),  # depthwise
    (1, 8, 11, 11, 8, 3, 1, 2, 2, 8),    # dilated depthwise
])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_within_one_lsb_of_torch_qnnpack(geometry, per_channel, relu):
    n, cin, h, w, cout, k, stride, pad, dil, groups = geometry
    gen = torch.Generator().manual_seed(sum(geometry) + per_channel + 2 * relu)
    wf = torch.randn(cout, cin // groups, k, k, generator=gen)
    if per_channel:
        s = (torch.rand(cout, generator=gen) * 0.02 + 0.002).double()
        z = torch.randint(-20, 21, (cout,), generator=gen)
        qw = torch.quantize_per_channel(wf, s, z, 0, torch.qint8)
        ws, wz = s.float(), z.to(torch.int32)
    else:
        qw = torch.quantize_per_tensor(wf, 0.015, 3, torch.qint8)
        ws, wz = torch.full((cout,), 0.015), torch.full((cout,), 3, dtype=torch.int32)
    bias = torch.randn(cout, generator=gen)
    x_scale, x_zp, out_scale, out_zp = 0.03, 110, 0.07, 90
    qx = torch.quantize_per_tensor(torch.randn(n, cin, h, w, generator=gen) * 2, x_scale, x_zp, torch.quint8)
    prepacked = torch.ops.quantized.conv2d_prepack(qw, bias, [stride] * 2, [pad] * 2, [dil] * 2, groups)
    op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
    want = op(qx, prepacked, out_scale, out_zp).int_repr()
    packed = KERNELS.pack_conv2d_weight(qw.int_repr().contiguous(), ws, wz, stride, pad, dil, groups)
    got = KERNELS.conv2d(qx.int_repr(), x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu)
    _within_one_lsb(got, want, f"conv2d {geometry}")


@pytest.mark.parametrize("relu", [False, True])
def test_add_and_mul_within_one_lsb_of_torch_qnnpack(relu):
    # torch's qnnpack add requantizes in fixed point, its mul in float from dequantized values:
    # both can land 1 LSB from quantplug's float32 contracts near a rounding tie.
    gen = torch.Generator().manual_seed(40 + relu)
    a = torch.quantize_per_tensor(torch.randn(2, 8, 9, 7, generator=gen) * 2, 0.025, 120, torch.quint8)
    b = torch.quantize_per_tensor(torch.randn(2, 8, 9, 7, generator=gen) * 3, 0.04, 100, torch.quint8)
    args = (a.int_repr(), 0.025, 120, b.int_repr(), 0.04, 100)
    want = (torch.ops.quantized.add_relu if relu else torch.ops.quantized.add)(a, b, 0.06, 80).int_repr()
    _within_one_lsb(KERNELS.add(*args, 0.06, 80, relu=relu), want, "add")
    want = (torch.ops.quantized.mul_relu if relu else torch.ops.quantized.mul)(a, b, 0.1, 70).int_repr()
    _within_one_lsb(KERNELS.mul(*args, 0.1, 70, relu=relu), want, "mul")


@pytest.mark.parametrize("op", ["sigmoid", "tanh", "hardsigmoid"])
def test_lookup_ops_match_torch_qnnpack_with_fixed_qparams(op):
    gen = torch.Generator().manual_seed(50)
    x = torch.quantize_per_tensor(torch.randn(4, 300, generator=gen) * 4, 0.04, 130, torch.quint8)
    fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "hardsigmoid": torch.nn.functional.hardsigmoid}[op]
    want = fn(x)
    got = getattr(KERNELS, op)(x.int_repr(), 0.04, 130)
    from quantplug_qnnpack.backend_config import FIXED_QPARAMS

    assert (want.q_scale(), want.q_zero_point()) == pytest.approx(FIXED_QPARAMS[op])  # the same fixed qparams
    _within_one_lsb(got, want.int_repr(), op)
