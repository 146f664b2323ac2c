"""The graph flow on every backend: accuracy, int8 weights, kernels used, agreement with reference form."""

import pytest
import torch

import quantplug
from quantplug.affine import sqnr
from tests.models import MLP, SmallCNN, calibrate

torch.manual_seed(0)


def _both(backend, model, x):
    data = [torch.randn_like(x) for _ in range(4)] + [x]
    outs = []
    for lower in (False, True):
        prepared = quantplug.prepare_pt2e(model.eval(), backend.get_quantizer(), (x,))
        calibrate(prepared, data)
        outs.append(quantplug.convert_pt2e(prepared, lower=lower))
    return outs


def _out_scale(reference_model):
    qs = [n for n in reference_model.graph.nodes if n.target == torch.ops.quantplug.quantize_per_tensor.default]
    return qs[-1].args[1] if qs else 0.0


@pytest.mark.parametrize("model_fn,shape", [(MLP, (8, 32)), (SmallCNN, (2, 3, 16, 16))])
def test_lowered_vs_reference_and_float(backend, model_fn, shape):
    model = model_fn().eval()
    x = torch.randn(*shape)
    ref_form, lowered = _both(backend, model, x)
    report = quantplug.explain(lowered)
    assert report.kernels, f"{backend.name}: nothing was lowered to kernels:\n{report}"
    with torch.no_grad():
        y_float, y_ref, y_low = model(x), ref_form(x), lowered(x)
    # Lowered kernels and the reference representation compute the same integer arithmetic;
    # a final linear without a quantized output may differ by float summation order only.
    assert (y_low - y_ref).abs().max() <= _out_scale(ref_form) + 1e-5
    # 8-bit activations: > 25 dB for these small random-init models on every backend
    # (fbgemm's 7-bit activations cost ~6 dB against the others).
    assert sqnr(y_float, y_low) > 25
