"""Module-swap QAT on the core alone (reference backend and a fake uint8 backend).

What must hold: fake quantization uses the backend's numbers; the converted
int8 model computes what the QAT model computed in eval mode (within one
output LSB); LSQ scales learn and are what convert uses; the digits CNN
trains with QAT.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import quantplug
from quantplug.errors import CalibrationError
from quantplug.fake_quant import FakeQuantize, LearnableFakeQuantize
from quantplug.nn import DynamicFakeQuantize, GroupwiseFakeQuantize, QATConv2d, QATEmbedding, QATLinear

from test_eager_flow import FakePlugin  # noqa: E402  (same directory; pytest puts it on sys.path)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_backend(fresh_registry):
    quantplug.register_plugin(FakePlugin(), name="fakeu8-plugin", distribution="fake-u8")
    yield quantplug.get_backend("fakeu8")


def convnet():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5))


def _train_steps(model, steps=6, lr=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x = torch.randn(16, 1, 8, 8, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_prepare_qat_swaps_fuses_and_shares_parameters():
    model = convnet()
    params_before = {id(p) for p in model.parameters()}
    info = quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
    assert ["0", "1", "2"] in info.fused and ["6", "7"] in info.fused
    assert isinstance(model[0], QATConv2d) and model[0].bn is not None and model[0].relu
    assert isinstance(model[3], QATConv2d) and model[3].relu and isinstance(model[6], QATLinear) and model[6].relu
    # the original Parameter objects: an optimizer built before prepare_qat still trains the model
    assert {id(p) for p in model.parameters()} == params_before
    assert info.stage == "qat"


def test_fake_quant_uses_the_backend_numerics(fake_backend):
    model = convnet()
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend="fakeu8")
    fq_in = model[6].input_fake_quant
    assert isinstance(fq_in, FakeQuantize) and (fq_in.quant_min, fq_in.quant_max) == (0, 127)  # reduce_range u8
    assert fq_in.dtype == torch.uint8
    w = model[6].weight_fake_quant
    assert (w.quant_min, w.quant_max) == (-128, 127) and w.is_per_channel
    ref = convnet()
    quantplug.prepare_qat(ref, quantplug.QATConfig(), backend="reference")
    assert (ref[6].weight_fake_quant.quant_min, ref[6].weight_fake_quant.quant_max) == (-127, 127)  # narrow


@pytest.mark.parametrize("backend", ["reference", "fakeu8"])
def test_converted_static_model_computes_what_qat_eval_computed(backend, request):
    if backend == "fakeu8":
        request.getfixturevalue("fake_backend")
    model = convnet()
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend=backend)
    _train_steps(model)
    model.eval()
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        qat_out = model(x)
    out_scale = model[8].output_fake_quant.calculate_qparams()[0].item()
    quantplug.convert(model)
    assert type(model[0]).__name__ == "QuantizedConv2d" and type(model[8]).__name__ == "QuantizedLinear"
    diff = (model(x) - qat_out).abs().max().item()
    assert diff <= out_scale * 1.01  # at most one output LSB (float vs integer accumulation order)


@pytest.mark.parametrize("backend", ["reference", "fakeu8"])
def test_dynamic_target_matches_converted_dynamic_linear(backend, request):
    """fakeu8's kernel is per tensor only: the converted module equalizes rows, and so does the fake quant."""
    if backend == "fakeu8":
        request.getfixturevalue("fake_backend")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 8))
    quantplug.prepare_qat(model, quantplug.QATConfig(target="dynamic"), backend=backend)
    assert isinstance(model[0].input_fake_quant, DynamicFakeQuantize) and model[0].output_fake_quant is None
    assert model[0].input_fake_quant.row_equalize == (backend == "fakeu8")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        loss = model(torch.randn(10, 24)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.randn(5, 24) * torch.logspace(-1, 1, 5).reshape(-1, 1)
    with torch.no_grad():
        h = model[1](model[0](x))
        qat_out = (model[0](x), model[2](h))
    quantplug.convert(model)
    assert type(model[0]).__name__ == "DynamicLinear" and model[0].row_equalize == (backend == "fakeu8")
    # layer by layer on the same inputs (chained, a 1e-7 float difference can cross a rounding boundary)
    assert torch.allclose(model[0](x), qat_out[0], atol=1e-4, rtol=1e-4)
    assert torch.allclose(model[2](h), qat_out[1], atol=1e-4, rtol=1e-4)


def test_lsq_scales_learn_and_convert_uses_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    quantplug.prepare_qat(model, quantplug.QATConfig(learn_ranges=True), backend="reference")
    assert isinstance(model[0].weight_fake_quant, LearnableFakeQuantize)
    assert model[0].weight_fake_quant.scale.numel() == 16  # sized up front (DDP needs fixed shapes)
    _ = model(torch.randn(8, 16))  # first batch initialises the scales from the observers
    # model[0]'s input: raw data (model[2]'s input is already on model[0]'s output grid, where the
    # LSQ scale gradient is exactly zero at initialisation)
    scale_param = model[0].input_fake_quant.scale
    before = scale_param.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        loss = (model(torch.randn(8, 16)) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert scale_param.grad is not None and scale_param.grad.abs().sum() > 0
        opt.step()
    assert not torch.equal(before, scale_param.detach())
    model.eval()
    x = torch.randn(6, 16)
    with torch.no_grad():
        qat_out = model(x)
    learned = float(model[2].input_fake_quant.calculate_qparams()[0])
    quantplug.convert(model)
    assert model[2].input_scale.item() == pytest.approx(learned)
    assert (model(x) - qat_out).abs().max() <= model[2].output_scale.item() * 1.01


def test_int4_weight_only_qat_with_lsq_group_scales():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8))
    quantplug.prepare_qat(model, quantplug.QATConfig(target="weight_only", weight_dtype="int4", group_size=32,
                                                     learn_ranges=True), backend="reference")
    fq = model[0].weight_fake_quant
    assert isinstance(fq, GroupwiseFakeQuantize) and fq.scale.numel() == 16
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(4):
        loss = (model(torch.randn(8, 64)) - 0.5).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fq.scale.grad is not None and fq.scale.grad.abs().sum() > 0
    x = torch.randn(4, 64)
    with torch.no_grad():
        qat_out = model(x)
    learned = fq.calculate_qparams(model[0].weight)
    quantplug.convert(model)
    assert type(model[0]).__name__ == "Int4WeightOnlyLinear"
    assert torch.equal(model[0].weight_scales, learned)
    assert torch.allclose(model(x), qat_out, atol=1e-5)


def test_embedding_qat_converts_exactly():
    model = nn.Sequential(nn.Embedding(20, 6))
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
    assert isinstance(model[0], QATEmbedding)
    idx = torch.tensor([[1, 2, 19], [0, 0, 5]])
    with torch.no_grad():
        qat_out = model(idx)
    quantplug.convert(model)
    assert torch.equal(model(idx), qat_out)


def test_convert_without_training_names_the_observers():
    model = nn.Sequential(nn.Linear(4, 4))
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
    with pytest.raises(CalibrationError, match="0.input_fake_quant"):
        quantplug.convert(model)


def test_qat_config_rejects_what_the_backend_cannot_convert_to(fake_backend):
    model = convnet()
    with pytest.raises(quantplug.BackendCapabilityError, match="weight_only"):
        quantplug.prepare_qat(model, quantplug.QATConfig(target="weight_only"), backend="fakeu8")
    assert type(model[0]) is nn.Conv2d
    with pytest.raises(TypeError, match="expects a QATConfig"):
        quantplug.prepare_qat(model, quantplug.Int8WeightOnlyConfig())


def test_conv_bn_qat_trains_batch_norm_and_folds_running_stats():
    model = convnet()
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
    bn = model[0].bn
    mean0 = bn.running_mean.clone()
    _train_steps(model, steps=3)
    assert not torch.equal(mean0, bn.running_mean)  # BN still learns batch statistics during QAT
    w, b = model[0].folded_weight_bias()
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(w, model[0].weight * factor.reshape(-1, 1, 1, 1))
    assert torch.allclose(b, (model[0].bias - bn.running_mean) * factor + bn.bias)


def _load_example():
    spec = importlib.util.spec_from_file_location("qat_digits", REPO / "examples" / "qat_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_digits_example_fast():
    pytest.importorskip("sklearn")
    ex = _load_example()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: threads only add contention on a shared machine
    try:
        rows = ex.run(["reference"], epochs=3, qat_epochs=1, int4=True)
    finally:
        torch.set_num_threads(threads)
    by_scheme = {r["scheme"]: r for r in rows}
    int8 = by_scheme["int8 static"]
    assert int8["fp32"] > 0.9  # the fp32 CNN learned digits
    assert int8["ptq"] > int8["fp32"] - 0.03 and int8["qat"] > int8["fp32"] - 0.03
    assert by_scheme["int4 weight-only g32"]["qat"] > 0.85


def test_functional_relu_is_not_removed_by_fusion():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return F.relu(self.fc(x)) - 0.1

    model = Net()
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend="reference")
    assert model.fc.relu  # fused (the kernel clamps), and the forward's own relu still runs
    out = model(torch.randn(4, 8))
    assert out.min() >= -0.1 - 1e-6
    copy.deepcopy(model)
