"""quantplug.observers: qparams equal to torch.ao's observers, calibration state, distributed sync."""

import datetime
import functools
import socket
import warnings

import pytest
import torch
import torch.ao.quantization.observer as tao

from quantplug import observers as ob
from quantplug.affine import choose_qparams

# (ours, torch.ao's, per_channel)
MINMAX_FAMILY = [
    (ob.MinMaxObserver, tao.MinMaxObserver, False),
    (ob.MovingAverageMinMaxObserver, tao.MovingAverageMinMaxObserver, False),
    (ob.PerChannelMinMaxObserver, tao.PerChannelMinMaxObserver, True),
    (ob.MovingAveragePerChannelMinMaxObserver, tao.MovingAveragePerChannelMinMaxObserver, True),
]


def _qscheme(symmetric, per_channel):
    if per_channel:
        return torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    return torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine


def _batches(kind="normal", seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":  # shifting, widening activations
        return [torch.randn(4, 6, 40, generator=g) * (1 + i) + 0.7 * (i - 1) for i in range(3)]
    if kind == "relu":
        return [torch.relu(torch.randn(4, 6, 40, generator=g)) * (i + 1) for i in range(3)]
    if kind == "heavy_tail":  # outliers the histogram search should clip
        return [torch.empty(4, 6, 40).cauchy_(generator=g) for _ in range(3)]
    if kind == "narrowing":  # later batches inside the first range: histogram counts add up in place
        return [torch.randn(4, 6, 40, generator=g) * s for s in (5.0, 1.0, 0.2)]
    if kind == "constant":
        return [torch.full((4, 6, 40), 2.5), torch.full((2, 6, 3), 2.5)]
    raise ValueError(kind)


def _make_pair(ours, theirs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao warns that reduce_range is deprecated
        return ours(**kwargs), theirs(**kwargs)


# -------------------------------------------------------- parity with torch --


@pytest.mark.parametrize("ours,theirs,per_channel", MINMAX_FAMILY, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_minmax_family_matches_torch(ours, theirs, per_channel, dtype, symmetric, reduce_range):
    kwargs = dict(dtype=dtype, qscheme=_qscheme(symmetric, per_channel), reduce_range=reduce_range)
    if per_channel:
        kwargs["ch_axis"] = 1
    # torch.ao refuses this for torch.quint8 per tensor; for torch.uint8 it returns zero point 128,
    # outside the reduced range 0..127. Ours centres the reduced range: 64.
    out_of_range_in_torch = dtype == torch.uint8 and symmetric and reduce_range
    mine, ref = _make_pair(ours, theirs, **kwargs)
    for x in _batches():
        assert mine(x) is x
        ref(x)
    torch.testing.assert_close(mine.min_val, ref.min_val, rtol=0, atol=0)
    torch.testing.assert_close(mine.max_val, ref.max_val, rtol=0, atol=0)
    scale, zp = mine.calculate_qparams()
    want_scale, want_zp = ref.calculate_qparams()
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    assert scale.shape == want_scale.shape == ((6,) if per_channel else (1,))
    assert torch.equal(scale, want_scale)
    if out_of_range_in_torch:
        assert bool((want_zp == 128).all()) and bool((zp == 64).all())
    else:
        assert torch.equal(zp, want_zp.to(torch.int32))


@pytest.mark.parametrize("kind", ["normal", "relu", "heavy_tail", "narrowing", "constant"])
@pytest.mark.parametrize("dtype,symmetric,reduce_range", [
    (torch.uint8, False, False), (torch.uint8, False, True), (torch.uint8, True, False),
    (torch.int8, False, False), (torch.int8, True, False), (torch.int8, True, True),
])
def test_histogram_matches_torch(kind, dtype, symmetric, reduce_range):
    # Tolerance: none. The histogram updates and the greedy search use the same float32
    # operations as torch.ao, so the searched range is bit-identical. One search step moves
    # the range by a bin (1/2048 of it, ~0.05% of the scale); any tolerance wide enough to
    # absorb float noise would hide a search that stops one step early or late.
    kwargs = dict(dtype=dtype, qscheme=_qscheme(symmetric, False), reduce_range=reduce_range, bins=2048)
    mine, ref = _make_pair(ob.HistogramObserver, tao.HistogramObserver, **kwargs)
    for x in _batches(kind, seed=1):
        mine(x)
        ref(x)
    assert torch.equal(mine.histogram, ref.histogram)
    assert mine.min_val.item() == ref.min_val.item() and mine.max_val.item() == ref.max_val.item()
    scale, zp = mine.calculate_qparams()
    want_scale, want_zp = ref.calculate_qparams()
    assert torch.equal(scale, want_scale) and torch.equal(zp, want_zp.to(torch.int32))


def test_histogram_search_only_narrows_the_range():
    # The greedy L2 search trims sparse tails (a little: it stops at the first step that
    # does not improve the error) and never widens the observed range.
    g = torch.Generator().manual_seed(3)
    for x in (torch.randn(20000, generator=g), torch.empty(20000).exponential_(generator=g)):
        hist, mm = ob.HistogramObserver(dtype=torch.int8), ob.MinMaxObserver(dtype=torch.int8)
        hist(x)
        mm(x)
        assert hist.calculate_qparams()[0].item() < mm.calculate_qparams()[0].item()


@pytest.mark.parametrize("ours,theirs,kwargs", [
    (ob.MinMaxObserver, tao.MinMaxObserver,
     dict(dtype=torch.int8, qscheme=torch.per_tensor_symmetric, quant_min=-127, quant_max=127)),
    (ob.MinMaxObserver, tao.MinMaxObserver, dict(dtype=torch.uint8, quant_min=0, quant_max=127)),
    (ob.MinMaxObserver, tao.MinMaxObserver, dict(dtype=torch.int8, quant_min=-8, quant_max=7, reduce_range=True)),
    (ob.PerChannelMinMaxObserver, tao.PerChannelMinMaxObserver,
     dict(dtype=torch.int8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127)),
    (ob.HistogramObserver, tao.HistogramObserver, dict(dtype=torch.uint8, quant_min=0, quant_max=127)),
    (ob.MinMaxObserver, tao.MinMaxObserver, dict(dtype=torch.qint8)),  # torch.ao dtype spelling
])
def test_custom_ranges_match_torch(ours, theirs, kwargs):
    mine, ref = _make_pair(ours, theirs, **kwargs)
    assert (mine.quant_min, mine.quant_max) == (ref.quant_min, ref.quant_max)
    for x in _batches(seed=2):
        mine(x)
        ref(x)
    (s, z), (ws, wz) = mine.calculate_qparams(), ref.calculate_qparams()
    assert torch.equal(s, ws) and torch.equal(z, wz.to(torch.int32))


# ------------------------------------------------------------- calibration --


@pytest.mark.parametrize("cls", [ob.MinMaxObserver, ob.MovingAverageMinMaxObserver, ob.PerChannelMinMaxObserver,
                                 ob.MovingAveragePerChannelMinMaxObserver, ob.HistogramObserver,
                                 ob.PercentileObserver])
def test_has_observed(cls):
    obs = cls()
    assert obs.has_observed is False
    obs(torch.empty(0, 3))
    assert obs.has_observed is False
    with pytest.warns(UserWarning, match="has not observed any data"):
        scale, zp = obs.calculate_qparams()
    assert scale.tolist() == [1.0] and zp.tolist() == [0]
    obs(torch.randn(4, 3))
    assert obs.has_observed is True


def test_observers_without_data_needs_are_always_ready():
    assert ob.PlaceholderObserver(dtype=torch.int8).has_observed
    assert ob.FixedQParamsObserver(scale=1 / 256, zero_point=0).has_observed


def test_reset_forgets_observations():
    obs = ob.PerChannelMinMaxObserver()
    obs(torch.randn(3, 4))
    obs.reset_min_max_vals()
    assert not obs.has_observed
    h = ob.HistogramObserver()
    h(torch.randn(10))
    h.reset_histogram()
    assert not h.has_observed and float(h.histogram.sum()) == 0.0


def test_histogram_ignores_non_finite_values():
    obs = ob.HistogramObserver(dtype=torch.int8)
    with pytest.warns(UserWarning, match="non-finite"):
        obs(torch.tensor([1.0, float("inf"), -2.0, float("nan"), 0.5]))
    assert (obs.min_val.item(), obs.max_val.item()) == (-2.0, 1.0)
    assert float(obs.histogram.sum()) == 3.0


# ---------------------------------------------------------- configuration --


def test_qscheme_and_flags_are_equivalent():
    a = ob.MinMaxObserver(dtype=torch.int8, qscheme=torch.per_tensor_symmetric)
    b = ob.MinMaxObserver(dtype=torch.int8, symmetric=True)
    assert a.symmetric and b.symmetric and not a.per_channel and a.qscheme == b.qscheme == torch.per_tensor_symmetric
    x = torch.randn(100) + 1
    a(x)
    b(x)
    assert torch.equal(a.calculate_qparams()[0], b.calculate_qparams()[0])
    pc = ob.PerChannelMinMaxObserver(qscheme=torch.per_channel_symmetric, ch_axis=1)
    assert pc.per_channel and pc.symmetric and pc.ch_axis == 1


@pytest.mark.parametrize("make,match", [
    (lambda: ob.MinMaxObserver(qscheme=torch.per_channel_affine), "per tensor"),
    (lambda: ob.PerChannelMinMaxObserver(qscheme=torch.per_tensor_affine), "per channel"),
    (lambda: ob.HistogramObserver(qscheme=torch.per_channel_symmetric), "per tensor only"),
    (lambda: ob.MinMaxObserver(qscheme=torch.per_tensor_symmetric, symmetric=False), "contradicts"),
    (lambda: ob.MinMaxObserver(qscheme=torch.per_channel_affine_float_qparams), "unsupported qscheme"),
    (lambda: ob.MinMaxObserver(quant_min=0), "both quant_min and quant_max"),
    (lambda: ob.MinMaxObserver(dtype=torch.int8, quant_min=1, quant_max=127), "include 0"),
    (lambda: ob.MinMaxObserver(dtype=torch.int8, quant_min=0, quant_max=255), "does not fit"),
    (lambda: ob.MinMaxObserver(dtype=torch.float32), "unsupported quantized dtype"),
    (lambda: ob.MinMaxObserver(eps=0.0), "eps"),
    (lambda: ob.MovingAverageMinMaxObserver(averaging_constant=0.0), "averaging_constant"),
    (lambda: ob.PercentileObserver(percentile=40.0), "percentile"),
    (lambda: ob.FixedQParamsObserver(scale=0.0, zero_point=0), "scale"),
    (lambda: ob.FixedQParamsObserver(scale=0.1, zero_point=300), "zero_point"),
])
def test_bad_configuration_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_with_args_returns_a_partial():
    ctr = ob.PerChannelMinMaxObserver.with_args(dtype=torch.int8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    assert isinstance(ctr, functools.partial) and ctr.keywords["dtype"] == torch.int8
    a, b = ctr(), ctr()
    assert a is not b and isinstance(a, ob.PerChannelMinMaxObserver) and a.dtype == torch.int8


def test_scale_min_bounds_the_scale():
    obs = ob.MinMaxObserver(dtype=torch.uint8, scale_min=2**-12)
    obs(torch.tensor([0.0, 1e-4]))
    assert obs.calculate_qparams()[0].item() == 2**-12
    eps_obs = ob.MinMaxObserver(dtype=torch.uint8, eps=2**-12)  # torch.ao's way of saying the same
    eps_obs(torch.tensor([0.0, 1e-4]))
    assert eps_obs.calculate_qparams()[0].item() == 2**-12


def test_per_channel_channel_count_must_not_change():
    obs = ob.PerChannelMinMaxObserver(ch_axis=0)
    obs(torch.randn(3, 5))
    with pytest.raises(ValueError, match="channels"):
        obs(torch.randn(4, 5))


def test_state_dict_round_trip_into_a_fresh_observer():
    src = ob.PerChannelMinMaxObserver(dtype=torch.int8, qscheme=torch.per_channel_symmetric)
    src(torch.randn(8, 4))
    dst = ob.PerChannelMinMaxObserver(dtype=torch.int8, qscheme=torch.per_channel_symmetric)
    dst.load_state_dict(src.state_dict())
    assert dst.has_observed and torch.equal(dst.calculate_qparams()[0], src.calculate_qparams()[0])
    hsrc, hdst = ob.HistogramObserver(), ob.HistogramObserver()
    hsrc(torch.randn(100))
    hdst.load_state_dict(hsrc.state_dict())
    assert torch.equal(hdst.calculate_qparams()[0], hsrc.calculate_qparams()[0])


# ------------------------------------------------------------- other kinds --


@pytest.mark.parametrize("percentile", [99.0, 99.9])
def test_percentile_observer_matches_quantiles(percentile):
    g = torch.Generator().manual_seed(4)
    batches = [torch.randn(50000, generator=g) * 2 + 0.5 for _ in range(2)]
    obs = ob.PercentileObserver(percentile=percentile, dtype=torch.uint8)
    for x in batches:
        obs(x)
    data = torch.cat(batches).double()
    lo = float(torch.quantile(data, 1 - percentile / 100))
    hi = float(torch.quantile(data, percentile / 100))
    want_scale, want_zp = choose_qparams(lo, hi, quant_min=0, quant_max=255, symmetric=False, dtype=torch.uint8)
    # the percentiles are read off the histogram: exact to about one bin, (max - min) / bins,
    # and re-binning between batches may move mass by one more bin
    tol = 2 * float(obs.max_val - obs.min_val) / obs.bins
    scale, zp = obs.calculate_qparams()
    assert abs(scale.item() - want_scale.item()) * 255 <= 2 * tol
    assert abs(zp.item() - want_zp.item()) <= 1


def test_percentile_100_is_minmax():
    x = torch.randn(1000)
    p, m = ob.PercentileObserver(percentile=100.0), ob.MinMaxObserver()
    p(x)
    m(x)
    torch.testing.assert_close(p.calculate_qparams()[0], m.calculate_qparams()[0], rtol=1e-5, atol=0)


def test_placeholder_observer():
    obs = ob.PlaceholderObserver(dtype=torch.int8, qscheme=torch.per_tensor_symmetric)
    x = torch.randn(3)
    assert obs.is_dynamic and obs(x) is x and (obs.quant_min, obs.quant_max) == (-128, 127)
    with pytest.raises(RuntimeError, match="dynamic"):
        obs.calculate_qparams()
    assert ob.PlaceholderObserver(dtype=torch.float16).quant_min is None


def test_fixed_qparams_observer():
    obs = ob.FixedQParamsObserver(scale=1 / 256, zero_point=-128, dtype=torch.int8, quant_min=-128, quant_max=127)
    x = torch.randn(5)
    assert obs(x) is x
    scale, zp = obs.calculate_qparams()
    assert scale.tolist() == [1 / 256] and zp.tolist() == [-128] and zp.dtype == torch.int32


# ------------------------------------------------------------ distributed --


def test_sync_is_a_no_op_without_torch_distributed():
    obs = ob.MinMaxObserver(sync=True)
    obs(torch.tensor([-1.0, 2.0]))
    obs.sync_across_ranks()
    assert (obs.min_val.item(), obs.max_val.item()) == (-1.0, 2.0)
    assert obs.calculate_qparams()[0].item() == pytest.approx(3.0 / 255)


def _sync_data():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(64, 4, generator=g)
    b = torch.randn(64, 4, generator=g) * 3
    b[0, 0], b[1, 1] = -20.0, 25.0  # the second half holds the global extremes (see the histogram check)
    return a, b


def _sync_cases():
    return {
        "minmax": functools.partial(ob.MinMaxObserver, dtype=torch.int8),
        "per_channel": functools.partial(ob.PerChannelMinMaxObserver, dtype=torch.int8, ch_axis=1,
                                         qscheme=torch.per_channel_symmetric),
        "histogram": functools.partial(ob.HistogramObserver, dtype=torch.uint8),
        "percentile": functools.partial(ob.PercentileObserver, dtype=torch.uint8, percentile=99.0),
    }


def _sync_worker(rank, world, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        part = _sync_data()[rank]
        results = {}
        for name, make in _sync_cases().items():
            obs = make(sync=True)
            obs(part)
            first = obs.calculate_qparams()
            second = obs.calculate_qparams()  # must not add the other rank's counts again
            results[name] = (first, second, float(obs.histogram.sum()) if hasattr(obs, "histogram") else None)
        # a rank that saw nothing still takes part and ends up with the other rank's statistics
        empty = ob.PerChannelMinMaxObserver(dtype=torch.int8, ch_axis=1, sync=True)
        if rank == 0:
            empty(part)
        results["one_rank_empty"] = (empty.calculate_qparams(), None, None)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_sync_across_two_gloo_ranks(tmp_path):
    torch.multiprocessing.spawn(_sync_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    a, b = _sync_data()
    whole = torch.cat([a, b])
    for name, make in _sync_cases().items():
        (s0, z0), again0, count0 = ranks[0][name]
        (s1, z1), again1, count1 = ranks[1][name]
        assert torch.equal(s0, s1) and torch.equal(z0, z1), name  # every rank agrees
        assert torch.equal(s0, again0[0]) and torch.equal(s1, again1[0]), name  # idempotent
        if count0 is not None:
            assert count0 == count1 == whole.numel(), name  # every value counted exactly once
        if name in ("minmax", "per_channel"):
            single = make()
            single(whole)  # one observer seeing all the data
            ws, wz = single.calculate_qparams()
            assert torch.equal(s0, ws) and torch.equal(z0, wz), name
        else:
            # Histograms: rank 0's histogram is re-binned onto the global range exactly as a
            # single observer re-bins its first batch when the second widens the range, so
            # "a then b" on one observer is bit-identical...
            seq = make()
            seq(a)
            seq(b)
            ws, wz = seq.calculate_qparams()
            assert torch.equal(s0, ws) and torch.equal(z0, wz), name
            # ...and one histogram of everything at once differs only by that re-binning
            # (mass moved by at most one bin): well within 2% of the scale.
            once = make()
            once(whole)
            os_, oz = once.calculate_qparams()
            assert abs(s0.item() - os_.item()) <= 0.02 * os_.item() and abs(z0.item() - oz.item()) <= 2, name
    only = ob.PerChannelMinMaxObserver(dtype=torch.int8, ch_axis=1)
    only(a)
    for r in range(2):
        s, z = ranks[r]["one_rank_empty"][0]
        ws, wz = only.calculate_qparams()
        assert torch.equal(s, ws) and torch.equal(z, wz), r
