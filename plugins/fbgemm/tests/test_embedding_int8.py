"""The core's int8 embedding protocol (``embedding_int8`` / ``embedding_bag_int8``) on the fbgemm C kernels,
and its 4-bit counterpart (``embedding_int4`` / ``embedding_bag_int4``).

Rows are ``(q - zp) * scale`` (int8 or 4-bit codes, per-row float32 scale, int32 zero point, read in
place): every ISA path equals the scalar one bit for bit, lookups equal the core's rows bit for
bit, bags match ``F.embedding_bag`` over the dequantized rows (the core's reference path) and
torch's own quantized ``embedding_bag_byte_rowwise_offsets`` on the same rows.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import quantplug
from quantplug.affine import choose_qparams, quantize_affine
from quantplug.errors import KernelInputError

HYP = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _table(g, rows, dim, wide_zp=False, bits=8):
    """A row-wise table as the core builds it (asymmetric per row), or with arbitrary zero points.

    8 bit: int8 codes ``[rows, dim]``; 4 bit: codes 0..15, two per byte ``[rows, dim / 2]``.
    """
    w = torch.randn(rows, dim, generator=g) * torch.rand(rows, 1, generator=g) * 4 + torch.randn(rows, 1, generator=g)
    lo, hi, dtype = (-128, 127, torch.int8) if bits == 8 else (0, 15, torch.uint8)
    s, z = choose_qparams(w.amin(1), w.amax(1), quant_min=lo, quant_max=hi, symmetric=False, dtype=dtype)
    q = quantize_affine(w, s, z, quant_min=lo, quant_max=hi, dtype=dtype, axis=0)
    if wide_zp:  # the kernel must not assume zero points in the code range
        z = torch.randint(-(2**20), 2**20, (rows,), generator=g, dtype=torch.int32)
    if bits == 4:
        q = q[:, 0::2] | (q[:, 1::2] << 4)
    return q, s.to(torch.float32), z.to(torch.int32)


def _codes(q, bits):
    return q if bits == 8 else torch.stack([q & 15, q >> 4], 2).reshape(q.shape[0], -1)


def _rows(q, s, z, bits=8):
    """The core's dequantization (QuantizedEmbedding._rows)."""
    return (_codes(q, bits).to(torch.int32) - z.unsqueeze(-1)).to(torch.float32) * s.unsqueeze(-1)


def _bags(g, rows, bags, max_len, dtype):
    lengths = torch.randint(0, max_len + 1, (bags,), generator=g)
    indices = torch.randint(0, rows, (int(lengths.sum()),), generator=g).to(dtype)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]]).to(dtype)
    return indices, offsets


def _per_isa(kernels, isas, fn):
    out = {}
    for isa in isas:
        with kernels.use_isa(isa):
            out[isa] = fn()
    for isa, got in out.items():
        assert torch.equal(got, out["scalar"]), isa
    return out["scalar"]


@HYP
@given(rows=st.integers(1, 30), dim=st.integers(1, 300), bags=st.integers(0, 9), max_len=st.integers(0, 7),
       mode=st.sampled_from(["sum", "mean", "max"]), weighted=st.booleans(), idx64=st.booleans(),
       pad=st.booleans(), last=st.booleans(), wide_zp=st.booleans(), bits=st.sampled_from([8, 4]),
       seed=st.integers(0, 2**16))
def test_bag_every_isa_bit_identical_and_close_to_f_embedding_bag(kernels, isas, rows, dim, bags, max_len, mode,
                                                                 weighted, idx64, pad, last, wide_zp, bits, seed):
    g = torch.Generator().manual_seed(seed)
    dim += dim % 2 if bits == 4 else 0
    q, s, z = _table(g, rows, dim, wide_zp, bits)
    bag = kernels.embedding_bag_int8 if bits == 8 else kernels.embedding_bag_int4
    indices, offsets = _bags(g, rows, bags, max_len, torch.int64 if idx64 else torch.int32)
    if last:
        offsets = torch.cat([offsets, offsets.new_tensor([indices.numel()])])
    psw = torch.randn(indices.numel(), generator=g) if weighted and mode == "sum" else None
    padding_idx = int(seed % rows) if pad else None
    got = _per_isa(kernels, isas, lambda: bag(
        indices, offsets, q, s, z, mode=mode, per_sample_weights=psw, include_last_offset=last,
        padding_idx=padding_idx))
    expected = F.embedding_bag(indices.long(), _rows(q, s, z, bits), offsets.long(), mode=mode, per_sample_weights=psw,
                               include_last_offset=last, padding_idx=padding_idx)
    if mode == "max":  # no arithmetic: the same values exactly
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max().clamp(min=1)))


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (0,)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("bits", [8, 4])
def test_embedding_lookup_equals_the_core_rows_bit_for_bit(kernels, isas, shape, dtype, bits):
    g = torch.Generator().manual_seed(len(shape))
    dim = 37 if bits == 8 else 38
    q, s, z = _table(g, 50, dim, wide_zp=True, bits=bits)
    idx = torch.randint(0, 50, shape, generator=g).to(dtype)
    lookup = kernels.embedding_int8 if bits == 8 else kernels.embedding_int4
    got = _per_isa(kernels, isas, lambda: lookup(idx, q, s, z))
    assert got.shape == (*shape, dim) and torch.equal(got, _rows(q, s, z, bits)[idx.long()])


def test_fixed_size_bags_from_2d_input_and_threads(kernels):
    g = torch.Generator().manual_seed(5)
    q, s, z = _table(g, 300, 128)
    inp = torch.randint(0, 300, (700, 6), generator=g)  # large enough for the thread pool
    ref = F.embedding_bag(inp, _rows(q, s, z), mode="sum")
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append(kernels.embedding_bag_int8(inp, None, q, s, z, mode="sum"))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[0], ref, rtol=1e-5, atol=1e-4)


# torch 2.13's quantized byte op reduces with a sum whatever the mode (max is compared with
# F.embedding_bag above); per_sample_weights only with mode='sum' (torch's rule).
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False)])
def test_parity_with_torch_quantized_embedding_bag_byte(kernels, mode, weighted):
    """The same int8 rows as torch's fused byte table (code = q + 128, bias = -(128 + zp) * scale)."""
    g = torch.Generator().manual_seed(11)
    q, s, z = _table(g, 100, 48)
    indices, offsets = _bags(g, 100, 12, 6, torch.int64)
    psw = torch.rand(indices.numel(), generator=g) if weighted else None
    codes = (q.to(torch.int32) + 128).to(torch.uint8)
    bias = -(128 + z).to(torch.float32) * s
    table = torch.cat([codes, torch.stack([s, bias], 1).contiguous().view(torch.uint8)], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            table, indices, offsets, False, {"sum": 0, "mean": 1}[mode], False, psw, None, False)
    ours = kernels.embedding_bag_int8(indices, offsets, q, s, z, mode=mode, per_sample_weights=psw)
    if mode == "mean":  # torch 2.13's op returns the sum for mode=1 (see test_embedding.py)
        ends = torch.cat([offsets[1:], torch.tensor([indices.numel()])])
        theirs = theirs / (ends - offsets).clamp(min=1).float()[:, None]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [8, 4])
def test_eager_flow_uses_the_fbgemm_kernels_for_embeddings(kernels, bits):
    """quantize_(..., embeddings=True[, embedding_bits=4]) on fbgemm runs these kernels, equal to the
    core's reference rows (lookups bit for bit)."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(40, 24), "bag": nn.EmbeddingBag(40, 24, mode="mean", padding_idx=3)})
    ref = nn.ModuleDict({k: v for k, v in model.items()})
    import copy

    ours, theirs = copy.deepcopy(model), copy.deepcopy(ref)
    cfg = quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=True, embedding_bits=bits)
    quantplug.quantize_(ours, cfg, backend="fbgemm")
    quantplug.quantize_(theirs, cfg, backend="reference")
    assert ours["emb"].uses_plugin_kernel and ours["bag"].uses_plugin_kernel
    assert f"int{bits} embedding kernel" in ours["emb"].kernel_path
    assert torch.equal(ours["emb"].weight_q, theirs["emb"].weight_q)  # same codes, same packing
    idx = torch.randint(0, 40, (4, 6))
    assert torch.equal(ours["emb"](idx), theirs["emb"](idx))
    inp, off = torch.tensor([1, 3, 5, 3, 7, 9, 2]), torch.tensor([0, 2, 2, 5])
    torch.testing.assert_close(ours["bag"](inp, off), theirs["bag"](inp, off), rtol=1e-6, atol=1e-6)


def test_int4_embedding_model_saves_and_loads(tmp_path):
    """quantplug.save / load of an eager model with int4 tables: same width, same kernel, same output."""
    def fresh():
        torch.manual_seed(0)
        return nn.Sequential(nn.Embedding(30, 16), nn.Linear(16, 4))

    model = fresh()
    quantplug.quantize_(model, quantplug.Int8DynamicActivationInt8WeightConfig(embeddings=True, embedding_bits=4),
                        backend="fbgemm")
    idx = torch.randint(0, 30, (3, 5))
    path = tmp_path / "m.safetensors"
    quantplug.save(model, str(path))
    loaded = quantplug.load(str(path), model=fresh())
    assert loaded[0].bits == 4 and loaded[0].uses_plugin_kernel
    assert torch.equal(loaded(idx), model(idx))


def test_bad_inputs_are_refused_with_clear_errors(kernels):
    g = torch.Generator().manual_seed(0)
    q, s, z = _table(g, 10, 8)
    idx, off = torch.tensor([1, 2, 3]), torch.tensor([0, 2])
    with pytest.raises(KernelInputError, match=r"indices must lie in \[0, 10\)"):
        kernels.embedding_bag_int8(torch.tensor([1, 10]), torch.tensor([0]), q, s, z)
    with pytest.raises(KernelInputError, match=r"indices must lie in \[0, 10\)"):
        kernels.embedding_int8(torch.tensor([-1]), q, s, z)
    with pytest.raises(KernelInputError, match="offsets must start at 0"):
        kernels.embedding_bag_int8(idx, torch.tensor([1, 2]), q, s, z)
    with pytest.raises(KernelInputError, match="mode must be"):
        kernels.embedding_bag_int8(idx, off, q, s, z, mode="prod")
    with pytest.raises(KernelInputError, match="per_sample_weights needs mode='sum'"):
        kernels.embedding_bag_int8(idx, off, q, s, z, mode="mean", per_sample_weights=torch.ones(3))
    with pytest.raises(KernelInputError, match="per_sample_weights has shape"):
        kernels.embedding_bag_int8(idx, off, q, s, z, mode="sum", per_sample_weights=torch.ones(2))
    with pytest.raises(KernelInputError, match="needs offsets"):
        kernels.embedding_bag_int8(idx, None, q, s, z)
    with pytest.raises(KernelInputError, match="padding_idx=10 is outside"):
        kernels.embedding_bag_int8(idx, off, q, s, z, padding_idx=10)
    with pytest.raises(KernelInputError, match="weight_q has dtype torch.uint8"):
        kernels.embedding_bag_int8(idx, off, q.view(torch.uint8), s, z)
    with pytest.raises(KernelInputError, match="scales"):
        kernels.embedding_bag_int8(idx, off, q, s[:5], z)
    with pytest.raises(KernelInputError, match="zero_points"):
        kernels.embedding_bag_int8(idx, off, q, s, z.to(torch.int64))
    with pytest.raises(KernelInputError, match="fbgemm.embedding_int8: indices must be"):
        kernels.embedding_int8(torch.tensor([1.0]), q, s, z)
    with pytest.raises(KernelInputError, match="weight_packed has dtype torch.int8"):
        kernels.embedding_bag_int4(idx, off, q, s, z)
    with pytest.raises(KernelInputError, match="fbgemm.embedding_int4: indices must lie"):
        kernels.embedding_int4(torch.tensor([10]), q.view(torch.uint8), s, z)


def test_int4_parity_with_torch_quantized_embedding_bag_4bit(kernels):
    """4-bit rows through torch's fused 4-bit op: scales 2**-e and zero points 0..15, so torch's
    float16 scale and bias (``-zp * scale``) hold the same rows exactly."""
    g = torch.Generator().manual_seed(4)
    rows, dim = 60, 32
    codes = torch.randint(0, 16, (rows, dim), generator=g, dtype=torch.uint8)
    s = torch.pow(2.0, -torch.randint(2, 9, (rows,), generator=g).float())
    z = torch.randint(0, 16, (rows,), generator=g, dtype=torch.int32)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    half = torch.stack([s, -z.float() * s], 1).to(torch.float16).contiguous().view(torch.uint8)
    table = torch.cat([packed, half], 1)
    indices, offsets = _bags(g, rows, 10, 6, torch.int64)
    psw = torch.rand(indices.numel(), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(
            table, indices, offsets, False, 0, False, psw, None, False)
    ours = kernels.embedding_bag_int4(indices, offsets, packed, s, z, mode="sum", per_sample_weights=psw)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [128, 256, 300])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("bits", [8, 4])
def test_128_column_blocks_every_isa_bit_identical_in_every_mode(kernels, isas, dim, dtype, bits):
    """Rows of whole 128-column blocks (plus a tail at 300), where the AVX-512 paths widen codes into
    permuted lanes and restore the column order once per bag (int8 with VNNI: half of each block by
    vpdpbusd; 4-bit: low and high nibbles of 16 bytes as two vectors). Empty, one-index and long
    bags (longer than the 8 indices one vector compare checks), every mode, a padding row, zero
    points outside the code range."""
    g = torch.Generator().manual_seed(dim)
    q, s, z = _table(g, 40, dim, wide_zp=dim == 256, bits=bits)
    bag = kernels.embedding_bag_int8 if bits == 8 else kernels.embedding_bag_int4
    rows = _rows(q, s, z, bits)
    lengths = torch.tensor([0, 1, 2, 9, 17, 3])
    indices = torch.randint(0, 40, (int(lengths.sum()),), generator=g).to(dtype)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]]).to(dtype)
    psw = torch.randn(indices.numel(), generator=g)
    for mode, weights, pad in [("sum", None, None), ("sum", psw, None), ("mean", None, int(indices[5])),
                               ("max", None, None)]:
        got = _per_isa(kernels, isas, lambda: bag(
            indices, offsets, q, s, z, mode=mode, per_sample_weights=weights, padding_idx=pad))
        expected = F.embedding_bag(indices.long(), rows, offsets.long(), mode=mode,
                                   per_sample_weights=weights, padding_idx=pad)
        if mode == "max":
            assert torch.equal(got, expected)
        else:
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max().clamp(min=1)))
        assert torch.equal(got[0], torch.zeros(dim))  # the empty bag
        if weights is None and pad != int(indices[0]):  # a one-index bag is the row exactly
            assert torch.equal(got[1], rows[int(indices[0])])


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("bad,where", [(40, 20), (-1, 29), (2**31 - 1, 8)])
def test_an_index_outside_the_table_late_in_a_long_bag_is_refused_on_every_isa(kernels, isas, dtype, bad, where):
    """The bag check reads 8 indices per vector compare on AVX-512: an index in a later or a partial
    vector (and a negative int32 one, sign-extended) is refused as in the scalar path."""
    g = torch.Generator().manual_seed(where)
    q, s, z = _table(g, 40, 128)
    indices = torch.randint(0, 40, (30,), generator=g)
    indices[where] = bad
    for isa in isas:
        with kernels.use_isa(isa), pytest.raises(KernelInputError, match=r"indices must lie in \[0, 40\)"):
            kernels.embedding_bag_int8(indices.to(dtype), torch.tensor([0, 5], dtype=dtype), q, s, z, mode="sum")
