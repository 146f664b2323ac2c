"""The prepared depthwise plan and the repeat fast path of ``conv2d`` (AVX-512 VNNI).

The plan caches per-layer constants on the packed weight; these tests check that every
change it derives from (bias object and contents, qparams, scales, ISA) gives the
reference result again, that it is never pickled, and that bad inputs still raise.
"""

import pickle

import pytest
import torch

from quantplug.errors import KernelInputError
from quantplug_arm_xnnpack.kernels import _DW_CALL, _DW_PLAN

C = 20  # one 16-channel tail group of the row kernel's 16-channel layout plus a partial one


@pytest.fixture
def vnni(kernels):
    if "avx512vnni" not in kernels.usable_isas():
        pytest.skip("the prepared depthwise plan exists on the AVX-512 VNNI path only")
    with kernels.use_isa("avx512vnni"):
        yield


def _layer(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (1, C, 5, 6), generator=g, dtype=torch.int8).contiguous(
        memory_format=torch.channels_last)
    w = torch.randint(-127, 128, (C, 1, 3, 3), generator=g, dtype=torch.int8)
    scales = torch.rand(C, generator=g) * 0.02 + 1e-3
    return x, w, scales, torch.randn(C, generator=g) * 5


def _pack(k, w, scales):
    return k.pack_conv2d_weight(w, scales, torch.zeros(C, dtype=torch.int32), 1, 1, 1, C)


def test_dw_plan_follows_every_change(kernels, ref, vnni):
    x, w, scales, bias = _layer()
    packed = _pack(kernels, w, scales)

    def check(xs, xz, b, os_, oz, relu, sc=scales):
        got = kernels.conv2d(x, xs, xz, packed, b, os_, oz, relu)
        want = ref.conv2d(x, xs, xz, _pack(ref, w, sc), b, os_, oz, relu)
        assert torch.equal(got, want), f"{(got.int() - want.int()).abs().max()} LSB off"
        assert got.is_contiguous(memory_format=torch.channels_last)

    check(0.05, -9, bias, 0.2, 4, False)
    assert _DW_PLAN in packed.__dict__ and _DW_CALL in packed.__dict__
    check(0.05, -9, bias, 0.2, 4, False)  # the repeat path
    bias.add_(3.0)  # in place: same object, new version
    check(0.05, -9, bias, 0.2, 4, False)
    check(0.05, -9, bias.clone() * -1, 0.2, 4, False)  # another bias object
    check(0.07, -9, bias, 0.2, 4, False)
    check(0.07, 11, bias, 0.3, -2, True)
    check(0.07, 11, None, 0.3, -2, True)
    packed.scales.mul_(2.0)  # exact in fp32; the reference gets the doubled scales
    check(0.07, 11, None, 0.3, -2, True, scales * 2.0)


def test_dw_plan_falls_back_under_another_isa_and_is_not_pickled(kernels, ref, vnni):
    x, w, scales, bias = _layer(1)
    packed = _pack(kernels, w, scales)
    want = ref.conv2d(x, 0.05, 3, _pack(ref, w, scales), bias, 0.2, -4)
    assert torch.equal(kernels.conv2d(x, 0.05, 3, packed, bias, 0.2, -4), want)
    for other in [i for i in kernels.usable_isas() if i != "avx512vnni"]:
        with kernels.use_isa(other):  # the plan's constants are the VNNI kernel's: the plain call runs
            assert torch.equal(kernels.conv2d(x, 0.05, 3, packed, bias, 0.2, -4), want), other
    state = pickle.dumps(packed)
    assert b"_xnnpack_dw" not in state
    again = pickle.loads(state)
    assert torch.equal(kernels.conv2d(x, 0.05, 3, again, bias, 0.2, -4), want)


@pytest.mark.parametrize("call, message", [
    (lambda k, x, p, b: k.conv2d(x[:, :4], 0.05, 3, p, b, 0.2, -4), "expected Cin=20"),
    (lambda k, x, p, b: k.conv2d(x.float(), 0.05, 3, p, b, 0.2, -4), "dtype"),
    (lambda k, x, p, b: k.conv2d(x, 0.05, 3, p, b, 0.2, 200), "out_zero_point"),
    (lambda k, x, p, b: k.conv2d(x, float("nan"), 3, p, b, 0.2, -4), "x_scale"),
    (lambda k, x, p, b: k.conv2d(x[:, :, :0], 0.05, 3, p, b, 0.2, -4), "smaller than"),
])
def test_dw_plan_repeat_keeps_the_errors(kernels, vnni, call, message):
    x, w, scales, bias = _layer(2)
    packed = _pack(kernels, w, scales)
    kernels.conv2d(x, 0.05, 3, packed, bias, 0.2, -4)  # plan and remembered call in place
    with pytest.raises(KernelInputError, match=message):
        call(kernels, x, packed, bias)
