"""Parity with PyTorch's own quantized engine.

PyTorch has no XNNPACK engine for quantized linear; its ``qnnpack`` engine has
the same math for XNNPACK's int8 numerics once the representation is
mapped: an int8 activation ``q`` with zero point ``z`` is the quint8
``q + 128`` with zero point ``z + 128`` (same real values), and qnnpack takes
qint8 symmetric per-channel weights and an fp32 bias that it quantizes with
scale ``x_scale * w_scale``, as ours. Its requantization multiplies in fp32
and rounds to nearest like ``qp_requantize``; the contract is "within 1 LSB"
because PyTorch does not promise the rounding of the multiplier product.
"""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif("qnnpack" not in torch.backends.quantized.supported_engines,
                                reason="this torch build has no qnnpack engine")


@pytest.fixture(autouse=True)
def qnnpack_engine():
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation is deprecated in torch
        yield
    torch.backends.quantized.engine = before


def _torch_packed(w_q, scales, bias):
    qw = torch._make_per_channel_quantized_tensor(w_q, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qw, bias)


def _problem(seed, m, k, n):
    g = torch.Generator().manual_seed(seed)
    wf = torch.randn(n, k, generator=g)
    scales = (wf.abs().amax(1) / 127).clamp_min(2**-12)
    w_q = torch.clamp(torch.round(wf / scales[:, None]), -127, 127).to(torch.int8)
    bias = torch.randn(n, generator=g)
    x_q = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8)
    return w_q, scales, bias, x_q, g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 70), seed=st.integers(0, 2**31 - 1),
       x_zp=st.integers(-128, 127), out_zp=st.integers(-128, 127), relu=st.booleans())
def test_static_linear_within_one_lsb_of_qnnpack(kernels, m, k, n, seed, x_zp, out_zp, relu):
    w_q, scales, bias, x_q, _ = _problem(seed, m, k, n)
    x_scale = 0.03
    out_scale = float(x_scale * scales.max() * 127 * k ** 0.5 / 3)
    ours = kernels.linear(x_q, x_scale, x_zp, kernels.pack_linear_weight(w_q, scales, torch.zeros(n, dtype=torch.int32)),
                          bias, out_scale, out_zp, relu=relu)
    qx = torch._make_per_tensor_quantized_tensor((x_q.int() + 128).to(torch.uint8), x_scale, x_zp + 128)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    theirs = op(qx, _torch_packed(w_q, scales, bias), out_scale, out_zp + 128).int_repr().int() - 128
    assert (theirs - ours.int()).abs().max() <= 1


def test_static_linear_qnnpack_exact_on_a_fixed_case(kernels):
    """Measured: on this case every output equals qnnpack's (no LSB differences at all)."""
    w_q, scales, bias, x_q, _ = _problem(0, 17, 70, 33)
    ours = kernels.linear(x_q, 0.05, 3, kernels.pack_linear_weight(w_q, scales, torch.zeros(33, dtype=torch.int32)),
                          bias, 0.2, -5)
    qx = torch._make_per_tensor_quantized_tensor((x_q.int() + 128).to(torch.uint8), 0.05, 131)
    theirs = torch.ops.quantized.linear(qx, _torch_packed(w_q, scales, bias), 0.2, 123).int_repr().int() - 128
    assert torch.equal(theirs, ours.int())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 20), k=st.integers(1, 200), n=st.integers(1, 50), seed=st.integers(0, 2**31 - 1),
       magnitude=st.floats(1e-2, 1e2))
def test_dynamic_linear_close_to_qnnpack(kernels, m, k, n, seed, magnitude):
    """qnnpack's dynamic linear picks per-tensor quint8 qparams with its own formula; the outputs agree
    to within one activation quantization step times sum |w| (usually exactly)."""
    w_q, scales, bias, _, g = _problem(seed, m, k, n)
    x = torch.randn(m, k, generator=g) * magnitude
    ours = kernels.linear_dynamic(x, kernels.pack_linear_weight(w_q, scales, torch.zeros(n, dtype=torch.int32)), bias)
    theirs = torch.ops.quantized.linear_dynamic(x, _torch_packed(w_q, scales, bias), False)
    step = float(x.max().clamp_min(0) - x.min().clamp_max(0)) / 255
    tol = step * (w_q.abs().float() * scales[:, None]).sum(1) + 1e-4 * (1 + theirs.abs())
    assert ((ours - theirs).abs() <= tol).all()
