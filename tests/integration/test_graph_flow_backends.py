"""The graph flow on every backend: accuracy, kernels used, agreement with the reference form and torch's engine.

SQNR thresholds. 8-bit per-tensor activations give about 40 dB on one well-scaled tensor; each
quantized layer in sequence costs a few dB, and fbgemm's 7-bit activations (reduce_range) cost
about 6 dB against the others. Measured here on these random-init models: 30-39 dB (fbgemm
lowest). 25 dB keeps ~5 dB of margin while still catching a wrong scale, zero point or
requantization (those give < 15 dB).
"""

import copy
import dataclasses
import warnings

import pytest
import torch

import quantplug
from quantplug.affine import sqnr
from quantplug.direct_calls import op_of
from quantplug.lowering import QDQ_KERNEL_OPS
from quantplug.backend_config import _observer_kwargs
from quantplug.observers import MinMaxObserver
from quantplug.quant_ops import ops as qops
from tests.models import MLP, AttentionBlock, ConvBNDrop, OpsCNN, SmallCNN, calibrate, qat_train_and_convert

torch.manual_seed(0)

MODELS = {"MLP": (MLP, (8, 32)), "OpsCNN": (OpsCNN, (2, 3, 16, 16)), "Attention": (AttentionBlock, (2, 6, 32))}
#: patterns every backend must run in its kernels (beyond these, explain gives the reason)
MUST_LOWER = {"linear", "conv2d"}
#: a dequantize node before and after lowering (then it runs the backend's kernel)
_DEQUANTIZE = (qops.dequantize_per_tensor.default, QDQ_KERNEL_OPS[qops.dequantize_per_tensor.default])


def _convert(backend, model, x, quantizer=None, modes=(False, True)):
    data = [torch.randn_like(x) for _ in range(3)] + [x]
    outs = []
    for lower in modes:
        prepared = quantplug.prepare_pt2e(model.eval(), quantizer or backend.get_quantizer(), (x,))
        calibrate(prepared, data)
        outs.append(quantplug.convert_pt2e(prepared, lower=lower))
    return outs


def _out_step(reference_model):
    qs = [n for n in reference_model.graph.nodes if op_of(n.target) == qops.quantize_per_tensor.default]
    return qs[-1].args[1]


@pytest.mark.parametrize("model_name", list(MODELS))
def test_lowered_vs_reference_and_float(backend, model_name):
    model_fn, shape = MODELS[model_name]
    model = model_fn().eval()
    x = torch.randn(*shape)
    ref_form, lowered = _convert(backend, model, x)
    report = quantplug.explain(lowered)
    stuck = [r for r in report.not_lowered if r.op in MUST_LOWER]
    assert not stuck, f"{backend.name}: linear/conv left out of the kernels:\n{report}"
    assert all(r.reason is not None for r in report.not_lowered)
    with torch.no_grad():
        y_float, y_ref, y_low = model(x), ref_form(x), lowered(x)
    # the lowered kernels compute the reference representation's integer arithmetic: within one
    # output step (a rounding tie can go the other way after float32 requantization)
    assert (y_low - y_ref).abs().max() <= _out_step(ref_form) * 1.0001 + 1e-6
    assert sqnr(y_float, y_low) > 25


def test_weights_stored_int8_after_lowering(backend):
    x = torch.randn(4, 32)
    (lowered,) = _convert(backend, MLP(), x, modes=(True,))
    tensors = lowered.state_dict()
    assert not [k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 2], "fp32 weight matrices kept"
    assert any(v.dtype in (torch.int8, torch.uint8) and v.numel() >= 64 * 32 for v in tensors.values())


def test_dynamic_batch_export_and_compile(backend):
    x = torch.randn(4, 32)
    (lowered,) = _convert(backend, MLP(), x, modes=(True,))
    ep = torch.export.export(lowered, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    compiled = torch.compile(lowered, backend="aot_eager", dynamic=True)
    for b in (1, 5, 33):
        y = torch.randn(b, 32)
        expected = lowered(y)
        assert expected.shape == (b, 16)
        torch.testing.assert_close(ep.module()(y), expected, rtol=0, atol=0)
        torch.testing.assert_close(compiled(y), expected, rtol=0, atol=0)


def test_inductor_compiles_a_lowered_model():
    # One inductor run (slow to compile): the custom ops stay extern calls in the generated code.
    backend = quantplug.get_backend("x86_onednn")
    x = torch.randn(4, 32)
    (lowered,) = _convert(backend, MLP(), x, modes=(True,))
    compiled = torch.compile(lowered)
    torch.testing.assert_close(compiled(x), lowered(x), rtol=0, atol=0)


# ------------------------------------------------------- torch's own engine --

TORCH_ENGINE = {"fbgemm": "fbgemm", "x86_onednn": "x86", "qnnpack": "qnnpack"}


def _minmax(quantizer):
    """The backend's own config with min/max activation observers (torch FX gets the same)."""
    c = quantizer.global_config
    act_kw = _observer_kwargs(c.input_activation)
    act = dataclasses.replace(c.input_activation, observer_or_fake_quant_ctr=MinMaxObserver.with_args(**act_kw))
    return dataclasses.replace(c, input_activation=act, output_activation=act), act_kw, _observer_kwargs(c.weight)


def _torch_fx(model, x, data, act_kw, w_kw):
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization import observer as tob
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    qdtype = {torch.uint8: torch.quint8, torch.int8: torch.qint8}
    qconfig = QConfig(
        activation=tob.MinMaxObserver.with_args(dtype=qdtype[act_kw["dtype"]], qscheme=act_kw["qscheme"],
                                                quant_min=act_kw["quant_min"], quant_max=act_kw["quant_max"],
                                                eps=act_kw["eps"]),
        weight=tob.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=w_kw["qscheme"], ch_axis=0,
                                                      quant_min=w_kw["quant_min"], quant_max=w_kw["quant_max"],
                                                      eps=w_kw["eps"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model), QConfigMapping().set_global(qconfig), (x,))
        calibrate(prepared, data)
        return convert_fx(prepared)


@pytest.mark.parametrize("name", list(TORCH_ENGINE))
@pytest.mark.parametrize("model_name", ["MLP", "SmallCNN"])
def test_agrees_with_torch_quantized_engine(name, model_name, monkeypatch):
    # Same weights, same calibration data, min/max observers with the backend's numbers on both
    # sides. SmallCNN agrees bit for bit here. In the MLP, torch FX observes linear+relu's output
    # before the relu (range [-2.4, 1.9] instead of [0, 1.9]), so its fc1 output is coarser: we
    # allow one output step and require our SQNR vs float to be at least torch's.
    model_fn, shape = {"MLP": (MLP, (8, 32)), "SmallCNN": (SmallCNN, (2, 3, 16, 16))}[model_name]
    model = model_fn().eval()
    x = torch.randn(*shape)
    data = [torch.randn_like(x) for _ in range(3)] + [x]
    quantizer = quantplug.get_quantizer(name)
    config, act_kw, w_kw = _minmax(quantizer)
    prepared = quantplug.prepare_pt2e(model, quantizer.set_global(config), (x,))
    calibrate(prepared, data)
    ours = quantplug.convert_pt2e(prepared)
    monkeypatch.setattr(torch.backends.quantized, "engine", TORCH_ENGINE[name])
    theirs = _torch_fx(model, x, data, act_kw, w_kw)
    with torch.no_grad():
        y_ours, y_torch, y_float = ours(x), theirs(x), model(x)
    step = [n for n in ours.graph.nodes if op_of(n.target) in _DEQUANTIZE][-1].args[1]
    assert (y_ours - y_torch).abs().max() <= step * 1.0001
    assert sqnr(y_float, y_ours) >= sqnr(y_float, y_torch) - 0.5


# ------------------------------------------------------- per-backend rules --


def _reference_q_args(model):
    return [n.args for n in model.graph.nodes if op_of(n.target) == qops.quantize_per_tensor.default]


def test_fbgemm_reduce_range_activations():
    backend = quantplug.get_backend("fbgemm")
    (ref,) = _convert(backend, SmallCNN(), torch.randn(2, 3, 8, 8), modes=(False,))
    assert {(a[3], a[4], a[5]) for a in _reference_q_args(ref)} == {(0, 127, torch.uint8)}


def test_x86_full_range_uint8_and_conv_add_relu_fusion():
    backend = quantplug.get_backend("x86_onednn")
    ref, lowered = _convert(backend, SmallCNN(), torch.randn(2, 3, 8, 8))
    assert {(a[3], a[4], a[5]) for a in _reference_q_args(ref)} == {(0, 255, torch.uint8)}
    fused = [r for r in quantplug.explain(lowered).kernels if "conv2d+add+relu" in r.detail]
    assert len(fused) == 1, quantplug.explain(lowered)


def test_xnnpack_symmetric_per_channel_weights_and_dynamic_per_row():
    backend = quantplug.get_backend("xnnpack")
    (ref,) = _convert(backend, MLP(), torch.randn(4, 32), modes=(False,))
    w_dq = [n for n in ref.graph.nodes if op_of(n.target) == qops.dequantize_per_channel.default]
    assert len(w_dq) == 2
    for n in w_dq:
        assert not getattr(ref, n.args[2].target).any()  # zero points 0: symmetric
        assert n.args[4:6] == (-127, 127)
    x = torch.randn(6, 32)
    quantizer = backend.get_quantizer(is_dynamic=True, per_row=True)
    ref, lowered = _convert(backend, MLP(), x, quantizer=quantizer)
    kernels = [n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear_dynamic.default]
    assert len(kernels) == 2 and all(n.args[3] is True for n in kernels)  # per_row
    assert sqnr(ref(x), lowered(x)) > 35


class _Gates(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        y = self.fc(x) * 1e-3  # tiny activations: the observer would pick a scale below 2^-12
        return torch.sigmoid(y) + torch.tanh(y)


def test_qnnpack_fixed_qparams_and_scale_bound():
    backend = quantplug.get_backend("qnnpack")
    (ref,) = _convert(backend, _Gates(), torch.randn(4, 16), modes=(False,))
    by_input = {n.args[0].target: n.args[1:3] for n in ref.graph.nodes if op_of(n.target) == qops.quantize_per_tensor.default}
    assert by_input[torch.ops.aten.sigmoid.default] == (1 / 256, 0)
    assert by_input[torch.ops.aten.tanh.default] == (2 / 256, 128)
    assert min(a[1] for a in _reference_q_args(ref)) >= 2 ** -12


def test_qat_conv_bn_lowered_matches_fake_quant(backend):
    gm = quantplug.prepare_qat_pt2e(ConvBNDrop().train(), backend.get_quantizer(is_qat=True), (torch.randn(4, 3, 8, 8),))
    fake, real, converted = qat_train_and_convert(gm, steps=4, lower=True)
    assert not [r for r in quantplug.explain(converted).not_lowered if r.op in MUST_LOWER]
    out_scale = [n for n in converted.graph.nodes if op_of(n.target) in _DEQUANTIZE][-1].args[1]
    # fake quant rounds in float on the folded weight; the kernels compute in integers: <= 2 steps
    assert (fake - real).abs().max() <= 2 * out_scale + 1e-6
