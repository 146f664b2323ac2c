"""quantplug.fake_quant: forward values and gradients against torch's fake-quantize ops and torch.ao modules."""

import functools
import math
import warnings

import pytest
import torch
import torch.ao.quantization as tq

from quantplug import fake_quant as fq
from quantplug import observers as ob
from quantplug.affine import choose_qparams, fake_quantize_affine


def _batches(n=3, shape=(16, 8, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) * (1 + i) + 0.3 * i for i in range(n)]


def _grad(module, x, grad_out):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    y.backward(grad_out)
    return y.detach(), x.grad


# -------------------------------------------------------------- FakeQuantize --

FQ_CASES = [
    # (our observer, torch's observer, kwargs)
    (ob.MovingAverageMinMaxObserver, tq.MovingAverageMinMaxObserver,
     dict(dtype=torch.int8, qscheme=torch.per_tensor_affine, quant_min=-128, quant_max=127)),
    (ob.MovingAverageMinMaxObserver, tq.MovingAverageMinMaxObserver,
     dict(dtype=torch.quint8, qscheme=torch.per_tensor_symmetric)),
    (ob.MinMaxObserver, tq.MinMaxObserver, dict(dtype=torch.quint8, qscheme=torch.per_tensor_affine, reduce_range=True)),
    (ob.MovingAveragePerChannelMinMaxObserver, tq.MovingAveragePerChannelMinMaxObserver,
     dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=1)),
    (ob.PerChannelMinMaxObserver, tq.PerChannelMinMaxObserver,
     dict(dtype=torch.qint8, qscheme=torch.per_channel_affine, ch_axis=0, quant_min=-127, quant_max=127)),
]


@pytest.mark.parametrize("ours,theirs,kwargs", FQ_CASES)
def test_fake_quantize_matches_torch_ao_forward_and_gradient(ours, theirs, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = tq.FakeQuantize(observer=theirs, **kwargs)
    mine = fq.FakeQuantize(observer=ours, **kwargs)
    for x in _batches():
        g = torch.randn_like(x)
        y_ref, gx_ref = _grad(ref, x, g)
        y, gx = _grad(mine, x, g)
        assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
        assert torch.equal(mine.scale, ref.scale) and torch.equal(mine.zero_point, ref.zero_point.to(torch.int32))
    s, z = mine.calculate_qparams()
    ws, wz = ref.calculate_qparams()
    assert torch.equal(s, ws) and torch.equal(z, wz.to(torch.int32))


@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quantize_is_the_affine_reference_with_a_straight_through_gradient(per_channel):
    obs = (ob.PerChannelMinMaxObserver.with_args(dtype=torch.int8, ch_axis=1) if per_channel
           else ob.MinMaxObserver.with_args(dtype=torch.int8))
    mod = fq.FakeQuantize(observer=obs)
    x = _batches(1)[0]
    y, gx = _grad(mod, x, torch.ones_like(x))
    scale, zp = mod.calculate_qparams()
    axis = 1 if per_channel else None
    assert torch.equal(y, fake_quantize_affine(x, scale, zp, quant_min=-128, quant_max=127, axis=axis))
    # gradient 1 where round(x/s)+z stayed inside [qmin, qmax], 0 where it was clamped
    shape = [1, -1, 1] if per_channel else [1]
    q = torch.round(x * torch.reciprocal(scale.reshape(shape))) + zp.reshape(shape)
    assert torch.equal(gx, ((q >= -128) & (q <= 127)).float())
    # with a frozen, narrow scale some values clamp: their gradient must be 0
    mod.disable_observer()
    mod.scale.mul_(0.25)
    _, gx = _grad(mod, x, torch.ones_like(x))
    assert 0 < int((gx == 0).sum()) < x.numel()


def test_switches():
    mod = fq.FakeQuantize(observer=ob.MovingAverageMinMaxObserver, dtype=torch.int8)
    x = torch.randn(64)
    mod.disable_fake_quant()
    assert torch.equal(mod(x), x)  # observer still runs
    assert mod.activation_post_process.has_observed
    mod.enable_fake_quant()
    mod.disable_observer()
    frozen = mod.scale.clone()
    mod(x * 100)
    assert torch.equal(mod.scale, frozen)
    mod.enable_observer()
    mod(x * 100)
    assert mod.scale.item() > frozen.item()
    assert not torch.equal(mod(x), x)


def test_observer_instance_or_factory():
    inst = ob.MinMaxObserver(dtype=torch.int8)
    assert fq.FakeQuantize(observer=inst).activation_post_process is inst
    with pytest.raises(ValueError, match="instance together with observer arguments"):
        fq.FakeQuantize(observer=inst, dtype=torch.int8)
    # the nesting quantplug.annotators builds for QAT specs
    ctr = fq.FakeQuantize.with_args(observer=ob.MovingAverageMinMaxObserver.with_args(
        dtype=torch.uint8, qscheme=torch.per_tensor_affine, quant_min=0, quant_max=127))
    assert isinstance(ctr, functools.partial)
    mod = ctr()
    assert (mod.quant_min, mod.quant_max, mod.dtype) == (0, 127, torch.uint8)
    with pytest.raises(ValueError, match="integer dtype"):
        fq.FakeQuantize(observer=ob.PlaceholderObserver.with_args(dtype=torch.float16))


def test_dynamic_fake_quantize_uses_each_batch_own_range():
    mod = fq.FakeQuantize(observer=ob.PlaceholderObserver.with_args(dtype=torch.int8))
    assert mod.is_dynamic
    for x in _batches():
        s, z = choose_qparams(x.min(), x.max(), quant_min=-128, quant_max=127, symmetric=False)
        assert torch.equal(mod(x), fake_quantize_affine(x, s, z, quant_min=-128, quant_max=127))


def test_state_dict_round_trip_per_channel():
    make = functools.partial(fq.FakeQuantize, observer=ob.PerChannelMinMaxObserver, dtype=torch.int8,
                             qscheme=torch.per_channel_symmetric)
    src = make()
    x = torch.randn(6, 4)
    src(x)
    dst = make()
    dst.load_state_dict(src.state_dict())
    dst.disable_observer()
    assert dst.scale.shape == (6,) and torch.equal(dst(x), src(x))


# ------------------------------------------------------------------------ LSQ --


def _lsq_pair(x, scale, zp, axis, qmin, qmax, grad_factor, grad_out):
    """Run our LSQ Function and torch's learnable op on the same inputs; return both (y, dx, ds, dz)."""
    out = []
    for ours in (True, False):
        xx = x.detach().clone().requires_grad_()
        s = scale.detach().clone().requires_grad_()
        z = zp.detach().clone().requires_grad_()
        if ours:
            y = fq._LSQFakeQuantize.apply(xx, s, z, axis, qmin, qmax, grad_factor)
        elif axis is None:
            y = torch._fake_quantize_learnable_per_tensor_affine(xx, s, z, qmin, qmax, grad_factor)
        else:
            y = torch._fake_quantize_learnable_per_channel_affine(xx, s, z, axis, qmin, qmax, grad_factor)
        y.backward(grad_out)
        out.append((y.detach(), xx.grad, s.grad, z.grad))
    return out


def _assert_lsq_close(mine, ref, grad_out=None, grad_factor=1.0):
    (y, dx, ds, dz), (wy, wdx, wds, wdz) = mine, ref
    assert torch.equal(y, wy) and torch.equal(dx, wdx)
    # Scale / zero-point gradients are sums over many elements. Besides the summation order,
    # torch computes x / s where we compute x * (1 / s) in the backward: an element that lies
    # exactly on a rounding tie can round the other way there, which moves that element's
    # (round(x/s) - x/s) term by 1, i.e. the sum by at most |g| * grad_factor. Allow two such
    # elements (the forward and dx above are still required to be bit-identical).
    tie = 0.0 if grad_out is None else 2.0 * float(grad_out.abs().max()) * grad_factor
    torch.testing.assert_close(ds, wds, rtol=1e-5, atol=1e-5 * float(wds.abs().max()) + 1e-6 + tie)
    torch.testing.assert_close(dz, wdz, rtol=1e-5, atol=1e-5 * float(wdz.abs().max()) + 1e-6)


@pytest.mark.parametrize("zp", [0.0, 3.0, 2.4, 3.7, 100.0])
@pytest.mark.parametrize("grad_factor", [1.0, 0.3])
def test_lsq_per_tensor_matches_torch(zp, grad_factor):
    torch.manual_seed(0)
    x = torch.randn(2000) * 3
    g = torch.randn(2000)
    _assert_lsq_close(*_lsq_pair(x, torch.tensor([0.02]), torch.tensor([zp]), None, -128, 127, grad_factor, g),
                      grad_out=g, grad_factor=grad_factor)


@pytest.mark.parametrize("zp", [-3.0, -3.2, 2.5, -127.6])
def test_lsq_negative_or_tie_zero_points_match_torch_per_channel_op(zp):
    # torch's per-tensor backward rounds the zero point as trunc(z + 0.5) (so -3 becomes -2),
    # unlike its forward; its per-channel op rounds consistently. Ours equals the latter.
    torch.manual_seed(1)
    x = torch.randn(1, 2000) * 3
    g = torch.randn(1, 2000)
    mine = _lsq_pair(x, torch.tensor([0.02]), torch.tensor([zp]), None, -128, 127, 0.5, g)[0]
    ref = _lsq_pair(x, torch.tensor([0.02]), torch.tensor([zp]), 0, -128, 127, 0.5, g)[1]
    _assert_lsq_close(mine, ref, grad_out=g, grad_factor=0.5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_lsq_per_channel_matches_torch(axis):
    g = torch.Generator().manual_seed(axis)
    x = torch.randn(4, 6, 5, generator=g) * 3
    n = x.shape[axis]
    scale = torch.rand(n, generator=g) * 0.05 + 0.01
    zp = torch.randn(n, generator=g) * 5
    _assert_lsq_close(*_lsq_pair(x, scale, zp, axis, 0, 255 if axis else 127, 0.7, torch.randn(x.shape, generator=g)))


def test_learnable_module_initialises_from_the_observer_then_learns():
    mod = fq.LearnableFakeQuantize(observer=ob.MovingAverageMinMaxObserver, dtype=torch.int8, init_batches=2)
    batches = _batches(3)
    assert mod.scale.requires_grad and mod.zero_point.requires_grad  # affine: both learned
    for i, x in enumerate(batches[:2]):
        mod(x)
        s, z = mod.activation_post_process.calculate_qparams()
        assert torch.equal(mod.scale.detach(), s) and torch.equal(mod.zero_point.detach(), z.float())
    assert mod.observer_enabled.item() == 0  # switched to learning after init_batches
    x = batches[2]
    obs_before = mod.activation_post_process.min_val.clone()
    g = torch.randn_like(x)
    _, gx = _grad(mod, x, g)
    assert torch.equal(mod.activation_post_process.min_val, obs_before)  # observer no longer fed
    # LSQ gradient scaling 1/sqrt(numel * qmax), checked against torch's op (its one-channel
    # per-channel form: the per-tensor backward mis-rounds negative zero points, see above)
    factor = 1.0 / math.sqrt(x.numel() * 127)
    flat = (1, x.numel())
    ry, rdx, rds, rdz = _lsq_pair(x.reshape(flat), mod.scale, mod.zero_point, 0, -128, 127, factor, g.reshape(flat))[1]
    mod.scale.grad = mod.zero_point.grad = None
    y2 = mod(x)
    y2.backward(g)
    _assert_lsq_close((y2.detach(), gx, mod.scale.grad, mod.zero_point.grad),
                      (ry.reshape(x.shape), rdx.reshape(x.shape), rds, rdz))


def test_learnable_per_channel_sizes_its_parameters_on_the_first_batch():
    mod = fq.LearnableFakeQuantize(observer=ob.PerChannelMinMaxObserver.with_args(
        dtype=torch.int8, qscheme=torch.per_channel_symmetric, ch_axis=0))
    param = mod.scale
    w = torch.randn(6, 10)
    mod(w)
    assert mod.scale is param and mod.scale.shape == (6,)  # same Parameter object, for optimizers
    assert not mod.zero_point.requires_grad and bool((mod.zero_point == 0).all())  # symmetric: fixed
    y = mod(w)
    y.sum().backward()
    assert mod.scale.grad.shape == (6,) and mod.zero_point.grad is None


def test_lsq_training_reduces_quantization_error():
    torch.manual_seed(0)
    x = torch.randn(4096)
    # start from a scale 10x too coarse; LSQ should shrink it
    mod = fq.LearnableFakeQuantize(observer=ob.MinMaxObserver, dtype=torch.int8, scale=0.3, init_batches=0,
                                   use_grad_scaling=True)
    opt = torch.optim.Adam(mod.parameters(), lr=0.01)
    with torch.no_grad():
        start = float(((mod(x) - x) ** 2).mean())
    for _ in range(100):
        loss = ((mod(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = float(((mod(x) - x) ** 2).mean())
    assert end < 0.2 * start and mod.scale.item() < 0.3


def test_learnable_calculate_qparams_rounds_and_clamps():
    mod = fq.LearnableFakeQuantize(observer=ob.MinMaxObserver, dtype=torch.uint8, scale=0.1, zero_point=300.4,
                                   init_batches=0)
    s, z = mod.calculate_qparams()
    assert s.tolist() == [pytest.approx(0.1)] and z.tolist() == [255] and z.dtype == torch.int32
    with torch.no_grad():
        mod.scale.fill_(-1.0)
    assert mod.calculate_qparams()[0].item() > 0  # never a non-positive scale


# ------------------------------------------------------------- fixed qparams --


def test_fixed_qparams_fake_quantize():
    ctr = ob.FixedQParamsObserver.with_args(scale=1 / 256, zero_point=-128, dtype=torch.int8, quant_min=-128,
                                            quant_max=127)
    mod = fq.FixedQParamsFakeQuantize(observer=ctr)
    x = torch.rand(100) * 1.2 - 0.1
    y, gx = _grad(mod, x, torch.ones_like(x))
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, 1 / 256, -128, -128, 127))
    assert torch.equal(gx, ((x * 256).round() - 128 <= 127).float() * ((x * 256).round() - 128 >= -128).float())
    mod(x * 50)
    s, z = mod.calculate_qparams()
    assert s.tolist() == [1 / 256] and z.tolist() == [-128]
    with pytest.raises(ValueError, match="FixedQParamsObserver"):
        fq.FixedQParamsFakeQuantize(observer=ob.MinMaxObserver)
