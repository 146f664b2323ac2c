"""quantplug.compare: per-layer SQNR tables for graph-flow (converted, prepared, QAT) and eager models."""

import copy
import math

import pytest
import torch
from torch import nn

import quantplug
import quantplug.registry as registry
from quantplug.builtin_plugin import ReferenceQuantizer
from tests import refkernels_backend as refk
from tests.models import MLP, SmallCNN, calibrate


@pytest.fixture
def with_refk():
    registry.reset()
    refk.register()
    yield
    registry.reset()


def _convert(model, quantizer, x, lower=True):
    prepared = quantplug.prepare_pt2e(model.eval(), quantizer, (x,))
    calibrate(prepared, [torch.randn_like(x) for _ in range(4)] + [x])
    return quantplug.convert_pt2e(prepared, lower=lower)


def test_lowered_mlp_rows_name_layers_and_kernels(with_refk):
    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(16, 32)
    report = quantplug.compare(model, _convert(model, refk.RefkQuantizer(), x), [x, torch.randn(4, 32)])
    assert [r.layer for r in report.rows] != [] and {r.layer for r in report.rows} == {"fc1", "fc2"}
    assert report["fc1"].op == "linear-relu" and report["fc2"].op == "linear"  # relu fused in the kernel
    assert all("refk int8 linear" in r.kernel for r in report.rows)
    assert [r.sqnr for r in report.rows] == sorted(r.sqnr for r in report.rows)
    assert all(25 < r.sqnr < 60 and r.max_abs_error > 0 for r in report.rows)
    assert report["fc2"].numel == 20 * 16 and not report.unmatched
    assert report.output_sqnr == pytest.approx(report["fc2"].sqnr)
    text = str(report)
    assert "SQNR dB" in text and "worst first" in text and text.index("fc") > 0


def test_the_sabotaged_layer_is_the_worst(with_refk):
    torch.manual_seed(1)
    model, x = MLP().eval(), torch.randn(16, 32)
    converted = _convert(model, refk.RefkQuantizer(), x)
    report_ok = quantplug.compare(model, converted, x)
    # Scramble fc2's packed int8 weight: only fc2 (the last layer) may get worse.
    weight = next(b for name, b in converted.named_buffers() if name.endswith("_packed_0") and b.shape == (16, 64))
    weight.copy_(torch.randint(-127, 128, weight.shape, dtype=torch.int8))
    report = quantplug.compare(model, converted, x)
    assert report.worst().layer == "fc2" and report["fc2"].sqnr < 5
    assert report["fc1"].sqnr == pytest.approx(report_ok["fc1"].sqnr)


def test_reference_cnn_follows_folded_batch_norm_and_fused_relu():
    torch.manual_seed(2)
    model, x = SmallCNN().eval(), torch.randn(2, 3, 12, 12)
    with torch.no_grad():  # non-trivial BN statistics, so an unfolded comparison would be way off
        model.bn1.running_mean.uniform_(-1, 1)
        model.bn1.running_var.uniform_(0.5, 2)
    report = quantplug.compare(model, _convert(model, ReferenceQuantizer(), x, lower=False), x)
    ops = {r.layer: r.op for r in report.rows}
    assert ops["conv1"] == "conv2d-relu" and ops["fc"] == "linear"
    assert any(r.op.startswith("add") for r in report.rows)
    assert all(r.sqnr > 20 for r in report.rows), str(report)
    assert all(r.kernel.startswith("reference") for r in report.rows)


def test_lowered_cnn_matches_every_kernel_node(with_refk):
    torch.manual_seed(3)
    model, x = SmallCNN().eval(), torch.randn(2, 3, 12, 12)
    converted = _convert(model, refk.RefkQuantizer(), x)
    report = quantplug.compare(model, converted, x)
    lowered = [r for r in quantplug.explain(converted).rows if r.runs_as == "kernel"]
    assert len(lowered) >= 3 and not report.unmatched
    assert {r.node for r in report.rows} >= {r.node for r in lowered}
    assert all(r.sqnr > 20 for r in report.rows), str(report)


def test_prepared_and_qat_models_against_float():
    torch.manual_seed(4)
    model, x = MLP().eval(), torch.randn(8, 32)
    prepared = quantplug.prepare_pt2e(copy.deepcopy(model), ReferenceQuantizer(), (x,))
    report = quantplug.compare(model, prepared, x)
    assert report.flow == "prepared" and math.isinf(report.output_sqnr)  # observers do not change values
    qat = quantplug.prepare_qat_pt2e(copy.deepcopy(model), ReferenceQuantizer(is_qat=True), (x,))
    calibrate(qat, [x])
    quantplug.move_exported_model_to_eval(qat)
    report = quantplug.compare(model, qat, x)
    assert {r.layer for r in report.rows} == {"fc1", "fc2"}
    assert all(r.kernel == "fake-quant" and 20 < r.sqnr < 80 for r in report.rows), str(report)


def test_calibrated_prepared_model_predicts_the_converted_one_without_calibrating():
    """Observers fake-quantize with their current qparams: the table before convert_pt2e
    matches the converted model's, and comparing does not change the calibration."""
    torch.manual_seed(6)
    model, x = SmallCNN().eval(), torch.randn(2, 3, 12, 12)
    prepared = quantplug.prepare_pt2e(copy.deepcopy(model), ReferenceQuantizer(), (x,))
    calibrate(prepared, [torch.randn(2, 3, 12, 12) for _ in range(3)])
    stats = {k: v.clone() for k, v in prepared.state_dict().items()}
    before = quantplug.compare(model, prepared, [x, x * 3])  # x * 3 would widen un-frozen observers
    assert all(torch.equal(stats[k], v) for k, v in prepared.state_dict().items()), "compare calibrated the model"
    converted = quantplug.compare(model, quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False), [x, x * 3])
    assert before.flow == "prepared" and before.output_sqnr < 60
    assert abs(before.output_sqnr - converted.output_sqnr) < 0.5, f"{before}\n{converted}"
    assert [r.layer for r in before.rows] == [r.layer for r in converted.rows]


def test_eager_model_rows_by_module_name():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16)).eval()
    quantized = copy.deepcopy(model)
    quantplug.quantize_(quantized, quantplug.Int8DynamicActivationInt8WeightConfig(), backend="reference")
    report = quantplug.compare(model, quantized, (torch.randn(8, 32),))
    assert report.flow == "eager" and {r.layer for r in report.rows} == {"0", "2"}
    assert all(r.node is None and "reference" in r.kernel and r.sqnr > 30 for r in report.rows)
    assert report.to_dicts()[0]["layer"] == report.worst().layer
    assert len(report.worst(2)) == 2


def test_bad_inputs_are_explained():
    model = MLP().eval()
    with pytest.raises(TypeError, match="tensor, a tuple"):
        quantplug.compare(model, model, {"x": torch.randn(2, 32)})
    with pytest.raises(ValueError, match="at least one"):
        quantplug.compare(model, model, [])
    with pytest.raises(KeyError, match="no compared layer"):
        quantplug.compare(model, copy.deepcopy(model), torch.randn(2, 32))["fc1"]
