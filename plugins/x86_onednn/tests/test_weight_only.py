"""Weight-only linear (fp32 activations, int8 / int4 group-wise weights): every ISA path equals
the scalar one bit for bit, and all agree with a pure-PyTorch float64 reference."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantplug.direct_calls import op_of
from quantplug.errors import KernelInputError

from conftest import make_gen

SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _int4(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = w.shape
    s = (w.reshape(n, k // group, group).abs().amax(-1) / 7.5).clamp_min(1e-6)
    q = torch.round(w / s.repeat_interleave(group, 1)).clamp(-8, 7).to(torch.int8)
    return q, s


def _check_paths(xk, run, ref: torch.Tensor, k: int) -> None:
    outs = {}
    for isa in xk.usable_isas():
        with xk.use_isa(isa):
            outs[isa] = run()
    base = outs["scalar"]
    # fp32 sums of k terms: error bound ~ k * eps * sum|terms| (here checked loosely)
    tol = 1e-5 * (k ** 0.5) * (ref.abs().max().item() + 1)
    assert (base.double() - ref).abs().max().item() <= tol
    for isa, out in outs.items():
        assert torch.equal(out, base), f"[{isa}] differs from the scalar path"


@settings(**SETTINGS)
@given(m=st.integers(1, 9), k=st.sampled_from([1, 3, 4, 17, 64, 130]), n=st.integers(1, 70),
       seed=st.integers(0, 2**31), with_bias=st.booleans())
def test_int8_weight_only_matches_reference(xk, m, k, n, seed, with_bias):
    g = make_gen(seed)
    w_q = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int32).to(torch.int8)
    s = torch.rand(n, generator=g) * 0.01 + 1e-3
    x = torch.randn(m, k, generator=g)
    bias = torch.randn(n, generator=g) if with_bias else None
    packed = xk.pack_linear_weight(w_q, s, torch.zeros(n, dtype=torch.int32))
    ref = x.double() @ (w_q.double() * s.double()[:, None]).T + (0 if bias is None else bias.double())
    _check_paths(xk, lambda: xk.linear_weight_only(x, packed, bias), ref, k)


@settings(**SETTINGS)
@given(m=st.integers(1, 6), groups=st.integers(1, 3), group=st.sampled_from([2, 32, 64, 128]),
       n=st.integers(1, 70), seed=st.integers(0, 2**31), with_bias=st.booleans())
def test_int4_weight_only_matches_reference(xk, m, groups, group, n, seed, with_bias):
    g = make_gen(seed)
    k = groups * group
    q, s = _int4(torch.randn(n, k, generator=g), group)
    x = torch.randn(m, k, generator=g)
    bias = torch.randn(n, generator=g) if with_bias else None
    packed = xk.pack_linear_weight_int4(q, s, group)
    deq = q.double() * s.double().repeat_interleave(group, 1)
    ref = x.double() @ deq.T + (0 if bias is None else bias.double())
    _check_paths(xk, lambda: xk.linear_int4_weight_only(x, packed, bias), ref, k)


def test_int4_extreme_values_and_leading_dims(xk):
    q = torch.tensor([[-8, 7] * 64, [7, -8] * 64, [-8] * 128], dtype=torch.int8)
    s = torch.full((3, 2), 0.5)
    packed = xk.pack_linear_weight_int4(q, s, 64)
    x = torch.randn(2, 3, 128)
    ref = x.double() @ (q.double() * 0.5).T
    out = xk.linear_int4_weight_only(x, packed, None)
    assert out.shape == (2, 3, 3)
    assert torch.allclose(out.double(), ref, atol=1e-4)
    assert pickle.loads(pickle.dumps(packed)).packed.equal(packed.packed)


def test_weight_only_bad_inputs(xk):
    q, s = _int4(torch.randn(4, 64), 32)
    with pytest.raises(KernelInputError, match="group_size"):
        xk.pack_linear_weight_int4(q, s, 48)
    with pytest.raises(KernelInputError, match="-8..7"):
        xk.pack_linear_weight_int4(q * 2, s, 32)
    with pytest.raises(KernelInputError, match="scales"):
        xk.pack_linear_weight_int4(q, s[:, :1], 32)
    packed = xk.pack_linear_weight_int4(q, s, 32)
    with pytest.raises(KernelInputError, match="x"):
        xk.linear_int4_weight_only(torch.randn(2, 63), packed, None)
    with pytest.raises(KernelInputError, match="dtype"):
        xk.linear_int4_weight_only(torch.randn(2, 64).double(), packed, None)
    with pytest.raises(KernelInputError, match="PackedInt4LinearWeight"):
        xk.linear_int4_weight_only(torch.randn(2, 64), object(), None)
    p8 = xk.pack_linear_weight(torch.ones(4, 8, dtype=torch.int8), torch.ones(4), torch.zeros(4, dtype=torch.int32))
    with pytest.raises(KernelInputError, match="bias"):
        xk.linear_weight_only(torch.randn(1, 8), p8, torch.randn(5))


@pytest.mark.parametrize("options,op", [
    ({}, "linear_weight_only"),
    ({"weight_only_dtype": "int4", "group_size": 32}, "linear_int4_weight_only"),
])
def test_graph_flow_lowers_weight_only_linears(options, op, tmp_path):
    """is_weight_only=True: linears get weight-only annotations, convert_pt2e lowers them to the
    plugin's weight-only kernels (int4: only linears whose K is a multiple of the group), the
    rest stays float; close to float and save/load round-trips."""
    import torch.nn as nn

    import quantplug
    from quantplug.affine import sqnr
    from quantplug.serialization import load, save

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 40), nn.ReLU(), nn.Linear(40, 8)).eval()
    x = torch.randn(5, 64)
    q = quantplug.get_quantizer("x86", is_weight_only=True, **options)
    prepared = quantplug.prepare_pt2e(model, q, (x,))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared)
    target = getattr(torch.ops.quantplug_x86_onednn, op).default
    n_kernels = sum(op_of(n.target) == target for n in lowered.graph.nodes)
    assert n_kernels == (2 if "group_size" in options else 3)  # int4: K=40 is not a multiple of 32
    with torch.no_grad():
        assert float(sqnr(model(x), lowered(x))) > (20.0 if "group_size" in options else 35.0)
        save(lowered, tmp_path / "m.safetensors")
        assert torch.equal(load(tmp_path / "m.safetensors")(x), lowered(x))


@pytest.mark.parametrize("options,match", [
    ({"is_dynamic": True}, "is_dynamic"), ({"is_qat": True}, "is_qat"),
    ({"weight_only_dtype": "int2"}, "weight_only_dtype"), ({"weight_only_dtype": "int4", "group_size": 48}, "group_size"),
])
def test_weight_only_options_refused(options, match):
    from quantplug_x86_onednn import X86OneDNNQuantizer

    with pytest.raises(ValueError, match=match):
        X86OneDNNQuantizer(is_weight_only=True, **options)


@pytest.mark.parametrize("m", [1, 3, 8, 9, 33])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("n", [37, 70])
def test_int4_row_blocks_bit_exact(xk, m, group, n):
    """Row counts around the AVX-512 row-blocked int4 kernel (8-row blocks of 2 tiles, a
    partial last block, a lone last tile when the tile count is odd, 3 and 5 tiles): every
    path equals the scalar one bit for bit, for each group size, with and without bias."""
    g = make_gen(m * 131 + group + n)
    k = 3 * group
    q, s = _int4(torch.randn(n, k, generator=g), group)
    x = torch.randn(m, k, generator=g)
    packed = xk.pack_linear_weight_int4(q, s, group)
    deq = q.double() * s.double().repeat_interleave(group, 1)
    for bias in (None, torch.randn(n, generator=g)):
        ref = x.double() @ deq.T + (0 if bias is None else bias.double())
        _check_paths(xk, lambda bias=bias: xk.linear_int4_weight_only(x, packed, bias), ref, k)
