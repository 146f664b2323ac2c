"""The int8 / int4 bag kernels' call path: torch's open-ended offsets passed as they are
(FBGEMM_BAG_OPEN_END), the per-table cache of checks and interleaved qparams, and the index
checks made while bagging (every index, every thread, before its row is read)."""

import gc

import pytest
import torch

from quantplug.errors import KernelInputError

MODES = ["sum", "mean", "max"]


def _table(g, rows, dim, bits):
    if bits == 8:
        q = torch.randint(-128, 128, (rows, dim), dtype=torch.int8, generator=g)
    else:
        q = torch.randint(0, 256, (rows, dim // 2), dtype=torch.uint8, generator=g)
    s = torch.rand(rows, generator=g) + 0.05
    z = torch.randint(-20, 20, (rows,), dtype=torch.int32, generator=g)
    return q, s, z


def _bag(kernels, bits):
    return kernels.embedding_bag_int8 if bits == 8 else kernels.embedding_bag_int4


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("odt", [torch.int64, torch.int32])
def test_open_ended_offsets_equal_the_closed_form_on_every_isa(kernels, isas, bits, odt):
    g = torch.Generator().manual_seed(bits)
    q, s, z = _table(g, 50, 40, bits)
    lengths = torch.tensor([3, 0, 25, 1, 0, 7, 0])  # empty bags inside and at the end, one past the burst
    idx = torch.randint(0, 50, (int(lengths.sum()),), generator=g)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]]).to(odt)
    closed = torch.cat([starts, starts.new_tensor([idx.numel()])])
    for mode in MODES:
        psw = torch.randn(idx.numel(), generator=g) if mode == "sum" else None
        for isa in isas:
            with kernels.use_isa(isa):
                open_ = _bag(kernels, bits)(idx, starts, q, s, z, mode=mode, per_sample_weights=psw, padding_idx=3)
                ref = _bag(kernels, bits)(idx, closed, q, s, z, mode=mode, per_sample_weights=psw, padding_idx=3,
                                          include_last_offset=True)
            assert open_.shape == (7, 40) and torch.equal(open_, ref), (mode, isa)
            assert not bool(open_[[1, 4, 6]].any())  # empty bags give zeros


@pytest.mark.parametrize("bits", [8, 4])
def test_plain_call_hot_path_equals_the_general_path(kernels, bits):
    """torch's usual call (1-D indices, bag starts, nothing else) takes ``_bag_codes``' inlined
    path: every index / offset dtype pair, every mode, two threads, and its errors, against the
    general path (the same bags with the closing offset) and the dense reference."""
    g = torch.Generator().manual_seed(20 + bits)
    q, s, z = _table(g, 60, 24, bits)
    idx = torch.randint(0, 60, (900,), generator=g)
    starts = torch.arange(0, 900, 3)
    rows = ((q.to(torch.int32) if bits == 8 else torch.stack([q & 15, q >> 4], 2).reshape(60, 24).to(torch.int32))
            - z.unsqueeze(1)).float() * s.unsqueeze(1)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for idt in (torch.int64, torch.int32):
                for odt in (torch.int64, torch.int32):
                    for mode in MODES:
                        i, o = idx.to(idt), starts.to(odt)
                        hot = _bag(kernels, bits)(i, o, q, s, z, mode=mode)
                        general = _bag(kernels, bits)(i, torch.cat([o, o.new_tensor([900])]), q, s, z, mode=mode,
                                                      include_last_offset=True)
                        assert torch.equal(hot, general), (threads, idt, odt, mode)
                        dense = torch.nn.functional.embedding_bag(idx, rows, starts, mode=mode)
                        torch.testing.assert_close(hot, dense, rtol=1e-5, atol=1e-4)
            assert kernels.lib.qp_get_num_threads() == threads  # the hot path follows torch's thread count
    finally:
        torch.set_num_threads(before)
    bad = idx.clone()
    bad[899] = 60
    with pytest.raises(KernelInputError, match=r"indices must lie in \[0, 60\)"):
        _bag(kernels, bits)(bad, starts, q, s, z, mode="sum")
    with pytest.raises(KernelInputError, match="offsets must start at 0"):
        _bag(kernels, bits)(idx, starts.flip(0), q, s, z, mode="sum")
    assert _bag(kernels, bits)(idx, starts[:0], q, s, z, mode="sum").shape == (0, 24)


def test_c_entry_checks_open_ended_offsets(kernels):
    g = torch.Generator().manual_seed(1)
    q, s, z = _table(g, 10, 16, 8)
    lib, p = kernels.lib, kernels.ptr
    qp = torch.empty(10, 2, dtype=torch.int32)
    assert lib.fbgemm_embedding_qparams_interleave(p(s, "float *"), p(z, "int32_t *"), 10, p(qp, "int32_t *")) == 0
    idx = torch.tensor([1, 2, 3, 4])
    out = torch.empty(4, 16)

    def run(offsets, flags=3, num_bags=None):
        return lib.fbgemm_embedding_bag_codes(
            p(q, "uint8_t *"), 8, p(qp, "int32_t *"), 10, 16, p(idx, "void *"), 1, 4, p(offsets, "void *"), flags,
            offsets.numel() if num_bags is None else num_bags, kernels.ffi.NULL, 0, -1, p(out, "float *"))

    assert run(torch.tensor([0, 2, 4])) == 0  # the last bag is empty: allowed
    assert run(torch.tensor([0, 5])) == 1  # past len(indices)
    assert run(torch.tensor([0, 3, 2])) == 1  # decreasing
    assert run(torch.tensor([1, 2])) == 1  # not from 0
    assert run(torch.tensor([0, 2]), flags=4) == 1  # unknown flag
    assert run(torch.tensor([0]), num_bags=0) == 0  # no bags: nothing read
    assert lib.fbgemm_embedding_bag_codes(p(q, "uint8_t *"), 5, p(qp, "int32_t *"), 10, 16, p(idx, "void *"), 1, 4,
                                          p(idx, "void *"), 3, 1, kernels.ffi.NULL, 0, -1, p(out, "float *")) == 1


@pytest.mark.parametrize("bits", [8, 4])
def test_table_cache_follows_in_place_changes_and_goes_with_the_table(kernels, bits):
    g = torch.Generator().manual_seed(2)
    q, s, z = _table(g, 30, 24, bits)
    idx, off = torch.randint(0, 30, (40,), generator=g), torch.arange(0, 40, 4)
    bag = _bag(kernels, bits)

    def fresh():  # copies: a table the cache has never seen
        return bag(idx, off, q.clone(), s.clone(), z.clone(), mode="sum")

    first = bag(idx, off, q, s, z, mode="sum")
    assert torch.equal(first, fresh())
    s.mul_(2.0)
    assert torch.equal(bag(idx, off, q, s, z, mode="sum"), fresh())
    z.add_(3)
    assert torch.equal(bag(idx, off, q, s, z, mode="sum"), fresh())
    q.copy_(q.flip(0))  # codes are read in place: no rebuild needed, the result still follows
    assert torch.equal(bag(idx, off, q, s, z, mode="sum"), fresh())
    s[4] = float("inf")
    with pytest.raises(KernelInputError, match="scales contains inf or NaN"):
        bag(idx, off, q, s, z, mode="sum")
    s[4] = 1.0
    bag(idx, off, q, s, z, mode="sum")
    tables = kernels.__dict__["_code_tables"]
    assert id(q) in tables
    key = id(q)
    del q
    gc.collect()
    assert key not in tables  # the entry went with its table


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("where", [0, 21, 45, 2047])
def test_every_index_is_checked_while_bagging(kernels, isas, threads, where):
    """2048 indices x 64 columns: enough work for the thread pool; bad indices inside the first
    bag, past the hint burst of a long bag (45) and in the last one, negative and past the end."""
    g = torch.Generator().manual_seed(where)
    q, s, z = _table(g, 100, 64, 8)
    lengths = torch.tensor([50] + [2] * 999)
    off = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        for bad in (100, -1):
            idx = torch.randint(0, 100, (2048,), generator=g)
            idx[where] = bad
            for isa in isas:
                with kernels.use_isa(isa), pytest.raises(KernelInputError, match=r"indices must lie in \[0, 100\)"):
                    kernels.embedding_bag_int8(idx, off, q, s, z, mode="sum")
            idx[where] = 7
            good = kernels.embedding_bag_int8(idx, off, q, s, z, mode="sum")  # no state left behind
            assert torch.equal(good, kernels.embedding_bag_int8(idx, torch.cat([off, off.new_tensor([2048])]), q, s, z,
                                                                mode="sum", include_last_offset=True))
    finally:
        torch.set_num_threads(before)
