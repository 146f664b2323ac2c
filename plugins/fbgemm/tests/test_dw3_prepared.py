"""The prepared depthwise 3x3 path (fbgemm_dw3_prepare / fbgemm_dw3_u8s8_prepared) and the
remembered call of FbgemmKernels.conv2d: bit-exact with the unprepared C entry, recomputed
whenever anything it was prepared from changes, and never a way around the input checks."""

import pickle

import pytest
import torch

from quantplug import KernelInputError
from quantplug_fbgemm.kernels import _DW3_CALL, _PREPARED


def _dw_case(seed, c, n=1, h=9, w=11, stride=1, pad=1, wzp=False):
    g = torch.Generator().manual_seed(seed)
    # channels_last: the layout the remembered call takes (others are converted by the checked path)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g).contiguous(memory_format=torch.channels_last)
    wt = torch.randint(-128, 128, (c, 1, 3, 3), dtype=torch.int8, generator=g)
    s = torch.rand(c, generator=g) * 0.01 + 1e-3
    z = torch.randint(-3, 4, (c,), dtype=torch.int32, generator=g) if wzp else torch.zeros(c, dtype=torch.int32)
    b = torch.randn(c, generator=g) * 20
    return x, wt, s, z, b, stride, pad


def _unprepared(kernels, x, packed, bias, xs, xz, os_, oz, lo, hi):
    """The generic C entry, called directly (it recomputes every constant per call)."""
    x = x.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    oh = (h + 2 * packed.pad_h - 3) // packed.stride_h + 1
    ow = (w + 2 * packed.pad_w - 3) // packed.stride_w + 1
    out = torch.empty((n, c, oh, ow), dtype=torch.uint8, memory_format=torch.channels_last)
    p = kernels.ptr
    status = kernels.lib.fbgemm_conv2d_u8s8(
        p(x, "uint8_t *"), n, h, w, c, xs, xz, p(packed.packed, "int8_t *"), p(packed.row_sums, "int32_t *"),
        p(packed.scales, "float *"), p(packed.zero_points, "int32_t *"), c, 3, 3, packed.stride_h, packed.stride_w,
        packed.pad_h, packed.pad_w, 1, 1, c, kernels.ffi.NULL if bias is None else p(bias, "float *"), os_, oz, lo,
        hi, p(out, "uint8_t *"))
    assert status == 0
    return out


@pytest.mark.parametrize("c,n,h,w,stride,pad", [(16, 1, 9, 11, 1, 1), (20, 2, 7, 5, 1, 0), (48, 1, 12, 9, 2, 1),
                                                 (5, 1, 3, 3, 1, 1), (144, 1, 10, 10, 1, 1)])
def test_prepared_equals_unprepared_on_every_isa(kernels, isas, c, n, h, w, stride, pad):
    x, wt, s, z, b, _, _ = _dw_case(c + h, c, n, h, w)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, 1, c)
    for bias, xz, os_, oz, relu, lo, hi in [(b, 131, 0.3, 97, False, 0, 127), (None, 0, 1e-3, 0, False, 0, 127),
                                            (b, 255, 0.7, 60, True, 60, 127), (b, 7, 0.05, 128, False, 0, 255)]:
        for isa in isas:
            with kernels.use_isa(isa):
                expected = _unprepared(kernels, x, packed, bias, 0.05, xz, os_, oz, lo, hi)
                for _ in range(2):  # first call prepares, the second repeats the remembered call
                    got = kernels.conv2d(x, 0.05, xz, packed, bias, os_, oz, relu, out_quant_max=hi)
                    assert torch.equal(got, expected), (isa, xz, os_, oz, relu)
    assert packed.__dict__.get(_DW3_CALL) is not None  # the repeat path was taken


def test_in_place_changes_and_new_qparams_recompute(kernels):
    x, wt, s, z, b, stride, pad = _dw_case(1, 24)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, 1, 24)

    def check(bias, xs=0.05, xz=70, os_=0.3):
        got = kernels.conv2d(x, xs, xz, packed, bias, os_, 64)
        assert torch.equal(got, _unprepared(kernels, x, packed, bias, xs, xz, os_, 64, 0, 127))
        return got

    first = check(b)
    b.mul_(-1.0)  # the same bias object, changed in place
    assert not torch.equal(check(b), first)
    packed.scales.mul_(2.0)
    check(b)
    packed.packed.neg_()
    check(b)
    check(b.clone())  # another bias object
    check(None)
    check(b)
    check(b, xz=71)  # each differs from the call before in one qparam (the zero point is baked in)
    check(b, xz=71, xs=0.06)
    check(b, xz=71, xs=0.06, os_=0.2)
    # a tensor qparam takes the checked path and gives the same result as the float
    assert torch.equal(kernels.conv2d(x, torch.tensor(0.05), 70, packed, b, 0.3, 64), check(b))


def test_remembered_call_does_not_skip_input_checks(kernels):
    x, wt, s, z, b, stride, pad = _dw_case(2, 16)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, 1, 16)
    out = kernels.conv2d(x, 0.05, 70, packed, b, 0.3, 64)
    assert torch.equal(kernels.conv2d(x.contiguous(), 0.05, 70, packed, b, 0.3, 64), out)  # NCHW: converted
    with pytest.raises(KernelInputError, match="channels"):
        kernels.conv2d(x[:, :8].contiguous(memory_format=torch.channels_last), 0.05, 70, packed, b, 0.3, 64)
    with pytest.raises(KernelInputError, match="dtype"):
        kernels.conv2d(x.to(torch.int8), 0.05, 70, packed, b, 0.3, 64)
    with pytest.raises(KernelInputError, match="smaller"):
        kernels.conv2d(x[:, :, :1, :1].contiguous(memory_format=torch.channels_last), 0.05, 70,
                       kernels.pack_conv2d_weight(wt, s, z, 1, 0, 1, 16), b, 0.3, 64)
    with pytest.raises(KernelInputError, match="x_scale"):
        kernels.conv2d(x, torch.tensor([0.05, 0.05]), 70, packed, b, 0.3, 64)
    bad = b.clone()
    bad[3] = float("nan")
    with pytest.raises(KernelInputError, match="bias"):
        kernels.conv2d(x, 0.05, 70, packed, bad, 0.3, 64)
    packed.stride_h = 0  # geometry changed on the dataclass: validated again
    with pytest.raises(KernelInputError, match="geometry"):
        kernels.conv2d(x, 0.05, 70, packed, b, 0.3, 64)


def test_caches_are_not_pickled_and_other_weights_are_not_prepared(kernels):
    x, wt, s, z, b, stride, pad = _dw_case(3, 16, wzp=True)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, 1, 16)
    kernels.conv2d(x, 0.05, 70, packed, b, 0.3, 64)  # weight zero points: the generic depthwise kernel
    assert packed.__dict__[_PREPARED][1] is None and _DW3_CALL not in packed.__dict__
    x, wt, s, z, b, stride, pad = _dw_case(3, 16)
    packed = kernels.pack_conv2d_weight(wt, s, z, stride, pad, 1, 16)
    kernels.conv2d(x, 0.05, 70, packed, b, 0.3, 64)
    state = pickle.loads(pickle.dumps(packed)).__dict__
    assert _PREPARED not in state and _DW3_CALL not in state


def test_c_entry_points_reject_what_they_were_not_prepared_for(kernels):
    lib, p = kernels.lib, kernels.ptr
    _, wt, s, z, b, _, _ = _dw_case(4, 16)
    packed = kernels.pack_conv2d_weight(wt, s, z, 1, 1, 1, 16)
    args = (p(packed.packed, "int8_t *"), p(packed.row_sums, "int32_t *"), p(packed.scales, "float *"),
            p(packed.zero_points, "int32_t *"))
    assert lib.fbgemm_dw3_prepared_size(0) == 0
    buf = torch.zeros(lib.fbgemm_dw3_prepared_size(16), dtype=torch.uint8)
    bp = p(buf, "void *")
    x = torch.full((1, 5, 5, 16), 7, dtype=torch.uint8)  # = x_zp: real 0.0 everywhere
    out = torch.empty(1, 5, 5, 16, dtype=torch.uint8)

    def run(c=16, oz=0):
        return lib.fbgemm_dw3_u8s8_prepared(p(x, "uint8_t *"), 1, 5, 5, c, 1, 1, 1, 1, bp, oz, 0, 255,
                                            p(out, "uint8_t *"))

    assert run() == 1  # never prepared: no header
    for geometry in [(16, 1, 3, 3, 1, 1), (16, 16, 3, 3, 2, 1), (16, 16, 3, 1, 1, 1)]:  # groups 1, dilated, 3x1
        assert lib.fbgemm_dw3_prepare(*args, *geometry, 0.05, 7, kernels.ffi.NULL, 0.3, bp) == 1
    zps = torch.ones(16, dtype=torch.int32)
    assert lib.fbgemm_dw3_prepare(*args[:3], p(zps, "int32_t *"), 16, 16, 3, 3, 1, 1, 0.05, 7, kernels.ffi.NULL, 0.3,
                                  bp) == 1
    assert lib.fbgemm_dw3_prepare(*args, 16, 16, 3, 3, 1, 1, 0.05, 7, kernels.ffi.NULL, 0.3, bp) == 0
    assert run(oz=9) == 0 and bool((out == 9).all())  # real 0.0 in, no bias: the output zero point
    assert run(c=32) == 1 and run(oz=256) == 1
