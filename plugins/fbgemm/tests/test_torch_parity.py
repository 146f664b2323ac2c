"""Parity with PyTorch's own FBGEMM engine (torch.backends.quantized.engine = "fbgemm").

Static linear: within 1 LSB. The only source of differences: torch's fbgemm adds the float
bias in the float domain (``(acc * x_scale * w_scale + bias) / out_scale``), whereas quantplug
rounds the bias to int32 first (``bias_q = round(bias / (x_scale * w_scale))``, the int32-bias
numerics of the reference representation) and requantizes ``acc + bias_q``. The two differ by
at most half an accumulator unit before requantization, which moves a result across a
rounding boundary rarely (a few elements in 10^4) and by one step. Without bias the results
are identical. torch also clamps to the full quint8 range 0..255, so the comparison passes
``out_quant_max=255`` (the graph's reference quantize clamps to 0..127, our default).

Dynamic linear: both quantize the activations per tensor to 0..127 (reduce_range) and
accumulate exactly in int32, but torch's FBGEMM path chooses the activation qparams with
fbgemm's own ``ChooseQuantizationParams`` (scale in double precision, zero point nudged by an
error comparison) and quantizes with its own rounding, whereas quantplug uses the core's
``choose_qparams`` (torch.ao observer arithmetic in float32, the reference every backend shares).
An activation can therefore land one quantization step apart: the bound below is one
activation step per input element, ``x_scale * sum_k |w[j, k]| * w_scale[j]``; most outputs
agree to float rounding.
"""

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines,
                                reason="this torch build has no fbgemm engine")
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def fbgemm_engine():
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized-tensor constructors are deprecated
        yield
    torch.backends.quantized.engine = before


def _torch_weight(w, scales, per_channel):
    if per_channel:
        return torch._make_per_channel_quantized_tensor(w, scales.double(), torch.zeros(len(scales), dtype=torch.long), 0)
    return torch._make_per_tensor_quantized_tensor(w, float(scales[0]), 0)


@HYP
@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       x_scale=st.floats(1e-3, 0.5), x_zp=st.integers(0, 127), out_scale=st.floats(1e-2, 5.0),
       out_zp=st.integers(0, 127), per_channel=st.booleans(), has_bias=st.booleans(), relu=st.booleans())
def test_static_linear_within_one_lsb_of_torch(kernels, m, k, n, seed, x_scale, x_zp, out_scale, out_zp,
                                               per_channel, has_bias, relu):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.02 + 1e-3
    if not per_channel:
        scales = scales[:1].expand(n).contiguous()
    bias = torch.randn(n, generator=g) * 2 if has_bias else None
    packed = kernels.pack_linear_weight(w, scales, torch.zeros(n, dtype=torch.int32))
    ours = kernels.linear(x, x_scale, x_zp, packed, bias, out_scale, out_zp, relu=relu, out_quant_max=255)
    tw = torch.ops.quantized.linear_prepack(_torch_weight(w, scales, per_channel), bias)
    tx = torch._make_per_tensor_quantized_tensor(x, x_scale, x_zp)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    theirs = op(tx, tw, out_scale, out_zp).int_repr()
    diff = (ours.to(torch.int32) - theirs.to(torch.int32)).abs()
    assert diff.max() <= 1
    if bias is None:
        assert torch.equal(ours, theirs)


def test_static_linear_lsb_differences_are_rare(kernels):
    g = torch.Generator().manual_seed(0)
    m, k, n = 64, 256, 96
    x = torch.randint(0, 128, (m, k), dtype=torch.uint8, generator=g)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.01 + 1e-3
    bias = torch.randn(n, generator=g) * 3
    packed = kernels.pack_linear_weight(w, scales, torch.zeros(n, dtype=torch.int32))
    ours = kernels.linear(x, 0.02, 40, packed, bias, 0.5, 30, out_quant_max=255)
    tw = torch.ops.quantized.linear_prepack(_torch_weight(w, scales, True), bias)
    theirs = torch.ops.quantized.linear(torch._make_per_tensor_quantized_tensor(x, 0.02, 40), tw, 0.5, 30).int_repr()
    diff = (ours.to(torch.int32) - theirs.to(torch.int32)).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-2
    # and the difference is exactly the bias rounding: torch's formula reproduces torch
    acc = (x.to(torch.int64) - 40) @ w.to(torch.int64).t()
    acc_scale = torch.tensor(0.02, dtype=torch.float32) * scales
    torch_formula = torch.clamp(torch.round((acc.float() * acc_scale + bias) / torch.tensor(0.5)) + 30, 0, 255)
    assert torch.equal(torch_formula.to(torch.uint8), theirs)


@HYP
@given(m=st.integers(1, 30), k=st.integers(1, 200), n=st.integers(1, 30), seed=st.integers(0, 2**31 - 1),
       shift=st.floats(-5, 5), spread=st.floats(1e-2, 1e2), has_bias=st.booleans())
def test_dynamic_linear_close_to_torch(kernels, m, k, n, seed, shift, spread, has_bias):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * spread + shift
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, generator=g) * 0.02 + 1e-3
    bias = torch.randn(n, generator=g) if has_bias else None
    packed = kernels.pack_linear_weight(w, scales, torch.zeros(n, dtype=torch.int32))
    ours = kernels.linear_dynamic(x, packed, bias)
    tw = torch.ops.quantized.linear_prepack(_torch_weight(w, scales, True), bias)
    theirs = torch.ops.quantized.linear_dynamic(x, tw, True)  # reduce_range=True, as fbgemm's default
    x_scale, _ = kernels.choose_qparams(x.min().item(), x.max().item())
    # torch's fbgemm may pick a coarser grid (it widens tiny ranges: e.g. x = [[-0.0034]] gives
    # 6.1e-5 there, 2.7e-5 here); each side rounds within half of its own step
    torch_scale, _ = torch._choose_qparams_per_tensor(x, True)
    step = (x_scale + torch_scale) / 2
    one_step = step * w.to(torch.float32).abs().sum(1) * scales  # every activation one step off
    tol = one_step * 1.01 + ours.abs().max() * 1e-5 + 1e-6
    assert ((ours - theirs).abs() <= tol).all()


def test_dynamic_linear_mostly_identical_to_torch(kernels):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 256, generator=g)
    w = torch.randint(-128, 128, (64, 256), dtype=torch.int8, generator=g)
    scales = torch.rand(64, generator=g) * 0.02 + 1e-3
    bias = torch.randn(64, generator=g)
    packed = kernels.pack_linear_weight(w, scales, torch.zeros(64, dtype=torch.int32))
    ours = kernels.linear_dynamic(x, packed, bias)
    theirs = torch.ops.quantized.linear_dynamic(
        x, torch.ops.quantized.linear_prepack(_torch_weight(w, scales, True), bias), True)
    close = (ours - theirs).abs() <= ours.abs() * 1e-5 + 1e-6
    assert close.float().mean() > 0.99
