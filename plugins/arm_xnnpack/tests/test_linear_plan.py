"""The prepared linear plans (static and dynamic) cached on a PackedLinearWeight.

A plan copies the bias, multipliers and scales of one layer; these tests change each of them
(in place and by replacement), the qparams and the ISA, and check the reference result every
time, that plans are never pickled, and that bad inputs still raise after a plan exists.
"""

import pickle

import pytest
import torch

from quantplug.errors import KernelInputError
from quantplug_arm_xnnpack.kernels import _DPLAN, _PLAN

N, K = 20, 24  # a 16-channel block plus a partial one


def _layer(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
    return w, torch.rand(N, generator=g) * 0.02 + 1e-3, torch.randn(N, generator=g) * 3, g


def _pack(k, w, scales):
    return k.pack_linear_weight(w, scales, torch.zeros(N, dtype=torch.int32))


def test_static_plan_follows_every_change(kernels, ref, isa):
    w, scales, bias, g = _layer()
    packed = _pack(kernels, w, scales)
    x = torch.randint(-128, 128, (2, 3, K), generator=g, dtype=torch.int8)

    def check(xs, xz, b, os_, oz, relu, sc=scales):
        got = kernels.linear(x, xs, xz, packed, b, os_, oz, relu)
        want = ref.linear(x, xs, xz, _pack(ref, w, sc), b, os_, oz, relu)
        assert got.shape == (2, 3, N) and torch.equal(got, want), isa

    check(0.05, -9, bias, 0.2, 4, False)
    check(0.05, -9, bias, 0.2, 4, False)  # the plan again
    bias.add_(2.0)  # in place: same object, new version
    check(0.05, -9, bias, 0.2, 4, False)
    check(0.05, -9, -bias, 0.2, 4, False)  # another bias object
    check(0.07, 5, bias, 0.3, -2, True)
    check(0.07, 5, None, 0.3, -2, True)
    packed.scales.mul_(2.0)  # exact in fp32; the reference gets the doubled scales
    check(0.07, 5, None, 0.3, -2, True, scales * 2.0)


def test_dynamic_plan_follows_every_change(kernels, ref, isa):
    w, scales, bias, g = _layer(1)
    packed = _pack(kernels, w, scales)
    x = torch.randn(3, K, generator=g)

    def check(b, per_row, sc=scales):
        got = kernels.linear_dynamic(x, packed, b, per_row=per_row)
        want = ref.linear_dynamic(x, _pack(ref, w, sc), b, per_row=per_row)
        assert torch.equal(got, want), isa

    check(bias, False)
    check(bias, True)
    bias.mul_(-1.5)
    check(bias, True)
    check(bias.clone() + 1, True)
    check(None, False)
    packed.scales.mul_(2.0)
    check(None, False, scales * 2.0)


def test_plans_are_not_pickled(kernels):
    w, scales, bias, g = _layer(2)
    packed = _pack(kernels, w, scales)
    x = torch.randint(-128, 128, (1, K), generator=g, dtype=torch.int8)
    want = kernels.linear(x, 0.05, 0, packed, bias, 0.2, 0)
    want_dyn = kernels.linear_dynamic(x.float(), packed, bias)
    if "avx512vnni" in kernels.usable_isas():  # a SIMD path: both plans exist
        assert _PLAN in packed.__dict__ and _DPLAN in packed.__dict__
    state = pickle.dumps(packed)
    assert b"_xnnpack_plan" not in state and b"_xnnpack_dplan" not in state
    again = pickle.loads(state)
    assert torch.equal(kernels.linear(x, 0.05, 0, again, bias, 0.2, 0), want)
    assert torch.equal(kernels.linear_dynamic(x.float(), again, bias), want_dyn)


@pytest.mark.parametrize("call, message", [
    (lambda k, x, p, b: k.linear(x[:, :5].contiguous(), 0.05, 0, p, b, 0.2, 0), "last dim must be K"),
    (lambda k, x, p, b: k.linear(x.float(), 0.05, 0, p, b, 0.2, 0), "dtype"),
    (lambda k, x, p, b: k.linear(x, 0.05, 0, p, b, 0.2, 200), "out_zero_point"),
    (lambda k, x, p, b: k.linear(x, 0.05, 0, p, b[:3], 0.2, 0), "bias"),
    (lambda k, x, p, b: k.linear(x, 1e6, 0, p, b, 1e-6, 0), "requantization scale"),
    (lambda k, x, p, b: k.linear_dynamic(x.float() * float("nan"), p, b), "inf or NaN"),
    (lambda k, x, p, b: k.linear_dynamic(x.double(), p, b), "dtype"),
    (lambda k, x, p, b: k.linear_dynamic(x.float(), p, b.double()), "bias"),
])
def test_plans_keep_the_errors(kernels, call, message):
    w, scales, bias, g = _layer(3)
    packed = _pack(kernels, w, scales)
    x = torch.randint(-128, 128, (2, K), generator=g, dtype=torch.int8)
    kernels.linear(x, 0.05, 0, packed, bias, 0.2, 0)  # both plans in place
    kernels.linear_dynamic(x.float(), packed, bias)
    with pytest.raises(KernelInputError, match=message):
        call(kernels, x, packed, bias)
