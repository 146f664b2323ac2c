"""Cached C plans of the static / dynamic linear (csrc/linear_plan.c): bit-identical to the
unplanned C entry points on every ISA, rebuilt whenever what they were computed from changes,
never pickled, and bad inputs still raise the checked path's errors."""

import copy
import pickle

import pytest
import torch

from quantplug import KernelInputError
from quantplug_fbgemm.kernels import ACT_RANGE

_PLAN, _DPLAN = "_fbgemm_plan", "_fbgemm_dplan"
# GEMV rows (1 and 2 take the 8-chain GEMV kernel, 3-4 the wide one) x odd / tail shapes
ROWS = [1, 2, 3, 4]
KN = [(1, 1), (3, 17), (5, 47), (129, 33), (770, 50)]


def _weights(n, k, seed, wzp=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.02 + 1e-4
    zps = torch.randint(-128, 128, (n,), dtype=torch.int32, generator=g) if wzp else torch.zeros(n, dtype=torch.int32)
    return w, scales, zps, g


def _ptrs(kernels, packed):
    p = kernels.ptr
    return (p(packed.packed, "int8_t *"), p(packed.row_sums, "int32_t *"), p(packed.scales, "float *"),
            p(packed.zero_points, "int32_t *"))


def _unplanned_dynamic(kernels, x, packed, bias, per_row):
    """The unplanned C entry point (fbgemm_linear_dynamic_f32 / _per_row_f32) on x."""
    lib, ffi = kernels.lib, kernels.ffi
    m = x.numel() // packed.k
    out = torch.empty(m, packed.n)
    lo, hi = kernels.dynamic_per_row_act_range if per_row else ACT_RANGE
    fn = lib.fbgemm_linear_dynamic_per_row_f32 if per_row else lib.fbgemm_linear_dynamic_f32
    status = fn(kernels.ptr(x, "float *"), m, packed.k, *_ptrs(kernels, packed), packed.n,
                ffi.NULL if bias is None else kernels.ptr(bias, "float *"), lo, hi, kernels.ptr(out, "float *"),
                ffi.NULL, ffi.NULL)
    assert status == 0
    return out


def _unplanned_static(kernels, x, packed, bias, xs, xz, os_, oz, lo=0, hi=127):
    """The unplanned C entry point fbgemm_linear_u8s8 (multipliers computed in the call)."""
    lib, ffi = kernels.lib, kernels.ffi
    m = x.numel() // packed.k
    out = torch.empty(m, packed.n, dtype=torch.uint8)
    status = lib.fbgemm_linear_u8s8(kernels.ptr(x, "uint8_t *"), m, packed.k, xs, xz, *_ptrs(kernels, packed),
                                    packed.n, ffi.NULL if bias is None else kernels.ptr(bias, "float *"), os_, oz,
                                    lo, hi, 0, kernels.ptr(out, "uint8_t *"))
    assert status == 0
    return out


def _each_isa(kernels, isas, fn, expected):
    for isa in isas:
        with kernels.use_isa(isa):
            got = fn()
        assert torch.equal(got, expected), isa


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("k,n", KN)
@pytest.mark.parametrize("wzp", [False, True])
def test_planned_dynamic_equals_unplanned_on_every_isa(kernels, isas, m, k, n, wzp):
    w, s, z, g = _weights(n, k, m * 1000 + k + n, wzp)
    packed = kernels.pack_linear_weight(w, s, z)
    bias = torch.randn(n, generator=g) if n % 2 else None
    x = torch.randn(m, k, generator=g) * 2 + 0.3
    for per_row in (False, True):
        with kernels.use_isa("scalar"):
            expected = _unplanned_dynamic(kernels, x, packed, bias, per_row)
        for isa in isas:
            with kernels.use_isa(isa):
                assert torch.equal(_unplanned_dynamic(kernels, x, packed, bias, per_row), expected), isa
                # twice: the first call makes the plan, the second takes the cached-plan path
                assert torch.equal(kernels.linear_dynamic(x, packed, bias, per_row=per_row), expected), isa
                assert torch.equal(kernels.linear_dynamic(x, packed, bias, per_row=per_row), expected), isa


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("k,n", KN)
def test_planned_static_equals_unplanned_on_every_isa(kernels, isas, m, k, n):
    w, s, z, g = _weights(n, k, m * 7 + k * 3 + n, wzp=bool(k % 2))
    packed = kernels.pack_linear_weight(w, s, z)
    bias = torch.randn(n, generator=g) * 3 if n % 2 else None
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    with kernels.use_isa("scalar"):
        expected = _unplanned_static(kernels, x, packed, bias, 0.04, 60, 0.3, 64)
    for _ in range(2):  # the second round runs every ISA on the cached plan
        _each_isa(kernels, isas, lambda: kernels.linear(x, 0.04, 60, packed, bias, 0.3, 64), expected)


def test_plans_are_cached_and_reused(kernels):
    w, s, z, g = _weights(40, 64, 1)
    packed, bias = kernels.pack_linear_weight(w, s, z), torch.randn(40, generator=g)
    x, xq = torch.randn(2, 64, generator=g), torch.randint(0, 128, (2, 64), dtype=torch.uint8, generator=g)
    kernels.linear(xq, 0.1, 3, packed, bias, 0.2, 4)
    kernels.linear_dynamic(x, packed, bias)
    plans = packed.__dict__[_PLAN][-1], packed.__dict__[_DPLAN][-1]
    kernels.linear(xq, 0.1, 3, packed, bias, 0.2, 4)
    kernels.linear_dynamic(x, packed, bias, per_row=True)  # one dynamic plan serves both modes
    assert packed.__dict__[_PLAN][-1] is plans[0] and packed.__dict__[_DPLAN][-1] is plans[1]


def _fresh(kernels, packed):
    """An unplanned copy of ``packed`` (same values, no caches)."""
    return kernels.pack_linear_weight(*kernels.unpack_linear_weight(packed))


@pytest.mark.parametrize("change", ["bias replaced", "bias in place", "bias .data swap", "scales in place",
                                   "zero points in place", "scales replaced", "qparams"])
def test_plan_is_rebuilt_when_its_inputs_change(kernels, change):
    w, s, z, g = _weights(24, 40, 2)
    packed, bias = kernels.pack_linear_weight(w, s, z), torch.randn(24, generator=g)
    x, xq = torch.randn(3, 40, generator=g), torch.randint(0, 128, (3, 40), dtype=torch.uint8, generator=g)
    qp = [0.05, 7, 0.2, 60]
    kernels.linear(xq, *qp[:2], packed, bias, *qp[2:])
    kernels.linear_dynamic(x, packed, bias)
    if change == "bias replaced":
        bias = bias + 1.0
    elif change == "bias in place":
        bias.mul_(-2.0)
    elif change == "bias .data swap":
        bias.data = torch.randn(24, generator=g)
    elif change == "scales in place":
        packed.scales.mul_(1.5)
    elif change == "zero points in place":
        packed.zero_points[3] = 5
    elif change == "scales replaced":
        packed.scales = packed.scales * 0.5
    else:
        qp = [0.07, 9, 0.1, 61]
    fresh = _fresh(kernels, packed)
    assert torch.equal(kernels.linear(xq, *qp[:2], packed, bias, *qp[2:]),
                       kernels.linear(xq, *qp[:2], fresh, bias, *qp[2:]))
    assert torch.equal(kernels.linear_dynamic(x, packed, bias), kernels.linear_dynamic(x, fresh, bias))
    if change != "qparams":  # the outputs really moved (the test would catch a stale plan)
        assert not torch.equal(kernels.linear_dynamic(x, packed, bias),
                               kernels.linear_dynamic(x, _fresh(kernels, packed), torch.randn(24)))


def test_plans_are_not_pickled_or_copied(kernels):
    w, s, z, _ = _weights(8, 16, 3)
    packed = kernels.pack_linear_weight(w, s, z)
    kernels.linear(torch.zeros(1, 16, dtype=torch.uint8), 0.1, 0, packed, None, 0.1, 0)
    kernels.linear_dynamic(torch.ones(1, 16), packed, None)
    for clone in (pickle.loads(pickle.dumps(packed)), copy.deepcopy(packed), copy.copy(packed)):
        assert _PLAN not in clone.__dict__ and _DPLAN not in clone.__dict__
        assert torch.equal(kernels.linear_dynamic(torch.ones(1, 16), clone, None),
                           kernels.linear_dynamic(torch.ones(1, 16), packed, None))


def _error(fn):
    with pytest.raises(KernelInputError) as info:
        fn()
    return str(info.value)


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(2, 16, dtype=torch.int8)), dict(x=torch.zeros(16, 2, dtype=torch.uint8).t()),
    dict(x=torch.zeros(2, 15, dtype=torch.uint8)), dict(x_scale=float("nan")), dict(x_scale=-1.0),
    dict(out_zero_point=256), dict(x_zero_point=1.5), dict(bias=torch.zeros(7)),
    dict(bias=torch.tensor([float("nan")] + [0.0] * 7)), dict(out_quant_min=100, out_quant_max=50),
])
def test_static_bad_inputs_raise_the_same_errors_with_a_plan(kernels, bad):
    w, s, z, _ = _weights(8, 16, 4)
    args = dict(x=torch.zeros(2, 16, dtype=torch.uint8), x_scale=0.1, x_zero_point=3, bias=None, out_scale=0.2,
                out_zero_point=4)

    def call(packed):
        a = {**args, **bad}
        return kernels.linear(a.pop("x"), a.pop("x_scale"), a.pop("x_zero_point"), packed, a.pop("bias"),
                              a.pop("out_scale"), a.pop("out_zero_point"), **a)

    unplanned = _error(lambda: call(kernels.pack_linear_weight(w, s, z)))
    planned = kernels.pack_linear_weight(w, s, z)
    kernels.linear(args["x"], 0.1, 3, planned, None, 0.2, 4)
    assert _PLAN in planned.__dict__
    assert _error(lambda: call(planned)) == unplanned


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("bad", ["nan", "inf", "dtype", "strides", "k", "bias"])
def test_dynamic_bad_inputs_raise_the_same_errors_with_a_plan(kernels, per_row, bad):
    w, s, z, _ = _weights(8, 16, 5)
    x, bias = torch.zeros(2, 16), None
    if bad in ("nan", "inf"):
        x[1, 2] = float(bad)
    elif bad == "dtype":
        x = x.double()
    elif bad == "strides":
        x = torch.zeros(16, 2).t()
    elif bad == "k":
        x = torch.zeros(2, 17)
    else:
        bias = torch.zeros(8, 1)
    unplanned = _error(lambda: kernels.linear_dynamic(x, kernels.pack_linear_weight(w, s, z), bias, per_row=per_row))
    planned = kernels.pack_linear_weight(w, s, z)
    kernels.linear_dynamic(torch.zeros(2, 16), planned, None)
    assert _DPLAN in planned.__dict__
    assert _error(lambda: kernels.linear_dynamic(x, planned, bias, per_row=per_row)) == unplanned


def test_c_plans_refuse_bad_arguments(kernels):
    lib, ffi = kernels.lib, kernels.ffi
    w, s, z, _ = _weights(8, 16, 6)
    packed = kernels.pack_linear_weight(w, s, z)
    nan_bias = torch.tensor([float("nan")] + [0.0] * 7)
    ptrs = _ptrs(kernels, packed)
    assert lib.fbgemm_dynamic_plan_new(*ptrs, 8, 16, kernels.ptr(nan_bias, "float *"), 0, 127, 0, 255) == ffi.NULL
    assert lib.fbgemm_dynamic_plan_new(*ptrs, 8, 16, ffi.NULL, 5, 5, 0, 255) == ffi.NULL
    assert lib.fbgemm_dynamic_plan_new(*ptrs, 8, 16, ffi.NULL, 0, 127, 0, 256) == ffi.NULL
    assert lib.fbgemm_linear_plan_new(*ptrs, 8, 16, 0.1, 3, kernels.ptr(nan_bias, "float *"), 0.2, 4, 0, 127,
                                      0) == ffi.NULL
    assert lib.fbgemm_linear_plan_new(*ptrs, 8, 16, 0.1, 3, ffi.NULL, 0.2, 4, 100, 50, 0) == ffi.NULL
    assert lib.fbgemm_linear_plan_new(*ptrs, 8, 16, 0.1, 3, ffi.NULL, 0.2, 4, 0, 127, 8) == ffi.NULL
    out = torch.empty(1, 8)
    assert lib.fbgemm_dynamic_plan_run(ffi.NULL, torch.zeros(1, 16).data_ptr(), 1, 0, out.data_ptr(), 0) == 1
    assert lib.fbgemm_linear_plan_run(ffi.NULL, 0, 0, 0, 0) == 1
    plan = ffi.gc(lib.fbgemm_dynamic_plan_new(*ptrs, 8, 16, ffi.NULL, 0, 127, 0, 255), lib.fbgemm_dynamic_plan_free)
    assert lib.fbgemm_dynamic_plan_run(plan, 0, 1, 0, out.data_ptr(), 0) == 1  # NULL x with rows
    assert lib.fbgemm_dynamic_plan_run(plan, 0, 0, 0, 0, 0) == 0  # no rows: nothing to do


def test_planned_calls_follow_torchs_thread_count(kernels):
    """The planned runs resize the pool themselves (in C) instead of through sync_threads."""
    w, s, z, _ = _weights(8, 16, 7)
    packed = kernels.pack_linear_weight(w, s, z)
    xq, x = torch.zeros(1, 16, dtype=torch.uint8), torch.ones(1, 16)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            for _ in range(2):  # the second call takes the cached plan
                kernels.lib.qp_set_num_threads(3)
                kernels.linear(xq, 0.1, 0, packed, None, 0.1, 0)
                assert kernels.lib.qp_get_num_threads() == threads
                kernels.lib.qp_set_num_threads(3)
                kernels.linear_dynamic(x, packed, None)
                assert kernels.lib.qp_get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
        kernels.sync_threads()


def test_tensor_qparams_use_a_plan_but_do_not_cache_it(kernels):
    w, s, z, g = _weights(8, 16, 8)
    packed = kernels.pack_linear_weight(w, s, z)
    xq = torch.randint(0, 128, (2, 16), dtype=torch.uint8, generator=g)
    x_scale = torch.tensor(0.1)
    got = kernels.linear(xq, x_scale, 3, packed, None, 0.2, 4)
    assert _PLAN not in packed.__dict__
    assert torch.equal(got, kernels.linear(xq, 0.1, 3, packed, None, 0.2, 4))
    assert _PLAN in packed.__dict__
