"""The graph flow with the core's reference backend: prepare, calibrate, convert, explain."""

import pytest
import torch
from torch import nn

import quantplug
from quantplug import CalibrationError
from quantplug.affine import sqnr
from quantplug.builtin_plugin import ReferenceQuantizer
from quantplug.prepare import OBSERVER_PREFIX
from quantplug.quant_ops import ops as qops
from quantplug.specs import ANNOTATION_KEY, DerivedQuantizationSpec, FixedQParamsQuantizationSpec, SharedQuantizationSpec
from tests.models import MLP, CatModel, SmallCNN, calibrate

torch.manual_seed(0)


def _flow(model, x, quantizer=None, lower=False, batches=4):
    model = model.eval()
    prepared = quantplug.prepare_pt2e(model, quantizer or ReferenceQuantizer(), (x,))
    calibrate(prepared, [torch.randn_like(x) for _ in range(batches)] + [x])
    return quantplug.convert_pt2e(prepared, lower=lower)


@pytest.mark.parametrize("model_fn,shape,min_db", [(MLP, (8, 32), 30.0), (SmallCNN, (2, 3, 16, 16), 25.0)])
def test_reference_flow_accuracy(model_fn, shape, min_db):
    # Thresholds: 8-bit activations give ~40 dB per tensor at best; two to four quantized
    # layers in sequence lose a few dB each, so 30 dB (MLP) / 25 dB (CNN with residual)
    # leaves margin for random init while still catching a wrong scale or zero point (< 10 dB).
    model = model_fn().eval()
    x = torch.randn(*shape)
    ref = model(x)
    converted = _flow(model, x)
    assert sqnr(ref, converted(x)) > min_db


def test_weights_are_stored_int8_and_fp32_weights_dropped():
    model = MLP().eval()
    converted = _flow(model, torch.randn(4, 32))
    tensors = dict(converted.named_buffers()) | dict(converted.named_parameters())
    int8 = [k for k, v in tensors.items() if v.dtype == torch.int8]
    assert len(int8) == 2 and {tensors[k].shape for k in int8} == {torch.Size([64, 32]), torch.Size([16, 64])}
    assert not any(v.dtype == torch.float32 and v.dim() == 2 for v in tensors.values())


def test_dynamic_batch_after_convert():
    converted = _flow(MLP().eval(), torch.randn(4, 32))
    for b in (1, 3, 17):
        assert converted(torch.randn(b, 32)).shape == (b, 16)


def test_uncalibrated_model_names_observers():
    prepared = quantplug.prepare_pt2e(MLP().eval(), ReferenceQuantizer(), (torch.randn(2, 32),))
    with pytest.raises(CalibrationError) as info:
        quantplug.convert_pt2e(prepared)
    msg = str(info.value)
    assert OBSERVER_PREFIX in msg and "'x'" in msg and "Run representative inputs" in msg


def test_calibration_that_records_nothing_is_an_error():
    # an empty batch runs through the model but gives the observers no values
    prepared = quantplug.prepare_pt2e(MLP().eval(), ReferenceQuantizer(), (torch.randn(2, 32),))
    calibrate(prepared, [torch.empty(0, 32)])
    with pytest.raises(CalibrationError, match=r"3 observer\(s\) saw no data") as info:
        quantplug.convert_pt2e(prepared)
    assert "'relu'" in str(info.value) and "'x'" in str(info.value)


def test_convert_rejects_unprepared_and_double_convert():
    gm = torch.export.export(MLP(), (torch.randn(2, 32),)).module()
    with pytest.raises(quantplug.QuantplugError, match="expects the model returned by prepare_pt2e"):
        quantplug.convert_pt2e(gm)
    converted = _flow(MLP(), torch.randn(2, 32))
    with pytest.raises(quantplug.QuantplugError, match="already converted"):
        quantplug.convert_pt2e(converted)


def test_cat_inputs_and_output_share_one_observer():
    prepared = quantplug.prepare_pt2e(CatModel().eval(), ReferenceQuantizer(), (torch.randn(2, 16),))
    cat = next(n for n in prepared.graph.nodes if n.target == torch.ops.aten.cat.default)
    in_modules = {a.target for a in cat.args[0]}
    out_module = {u.target for u in cat.users if u.op == "call_module"}
    assert len(in_modules) == 1 and in_modules == out_module


class _ReverseSharingQuantizer(ReferenceQuantizer):
    """Annotates cat so that the *first* input shares with the *second* (declared later in the graph)
    and the output shares with the first input: sharing must resolve regardless of order."""

    def annotate(self, gm):
        super().annotate(gm)
        cat = next(n for n in gm.graph.nodes if n.target == torch.ops.aten.cat.default)
        a, b = cat.args[0]
        spec = self.global_config.input_activation
        cat.meta[ANNOTATION_KEY].input_qspec_map = {a: SharedQuantizationSpec((b, cat)), b: spec}
        cat.meta[ANNOTATION_KEY].output_qspec = SharedQuantizationSpec((a, cat))
        return gm


def test_sharing_is_order_independent():
    prepared = quantplug.prepare_pt2e(CatModel().eval(), _ReverseSharingQuantizer(), (torch.randn(2, 16),))
    cat = next(n for n in prepared.graph.nodes if n.target == torch.ops.aten.cat.default)
    modules = {a.target for a in cat.args[0]} | {u.target for u in cat.users if u.op == "call_module"}
    assert len(modules) == 1


def _derive_bias(observers):
    act, weight = observers
    return act.calculate_qparams()[0] * weight.calculate_qparams()[0], torch.zeros_like(weight.calculate_qparams()[1])


class _DerivedBiasQuantizer(ReferenceQuantizer):
    def annotate(self, gm):
        super().annotate(gm)
        for n in gm.graph.nodes:
            ann = n.meta.get(ANNOTATION_KEY)
            if n.target == torch.ops.aten.linear.default and ann is not None:
                x, w, b = n.args[0], n.args[1], n.args[2]
                ann.input_qspec_map[b] = DerivedQuantizationSpec(
                    derived_from=((x, n), (w, n)), derive_qparams_fn=_derive_bias, dtype=torch.int32,
                    qscheme=torch.per_channel_symmetric, ch_axis=0)
        return gm


def test_derived_bias_is_int32_with_product_scale():
    model = MLP().eval()
    x = torch.randn(8, 32)
    converted = _flow(model, x, _DerivedBiasQuantizer())
    deq = [n for n in converted.graph.nodes if n.target == qops.dequantize_per_channel.default and n.args[-1] == torch.int32]
    assert len(deq) == 2
    for n in deq:
        q = getattr(converted, n.args[0].target)
        assert q.dtype == torch.int32
    assert sqnr(model(x), converted(x)) > 30


class _FixedSigmoidQuantizer(ReferenceQuantizer):
    fixed_qparams = {"sigmoid": FixedQParamsQuantizationSpec(torch.int8, scale=1 / 256, zero_point=-128)}


def test_fixed_qparams_spec_is_used():
    model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid()).eval()
    converted = _flow(model, torch.randn(4, 8), _FixedSigmoidQuantizer())
    q_after_sigmoid = [n for n in converted.graph.nodes if n.target == qops.quantize_per_tensor.default
                       and n.args[0].target == torch.ops.aten.sigmoid.default]
    assert len(q_after_sigmoid) == 1 and q_after_sigmoid[0].args[1:3] == (1 / 256, -128)


def test_set_module_name_none_keeps_module_float():
    q = ReferenceQuantizer()
    q.set_module_name("fc2", None)
    prepared = quantplug.prepare_pt2e(MLP().eval(), q, (torch.randn(2, 32),))
    fc = {n.meta["nn_module_stack"][next(reversed(n.meta["nn_module_stack"]))][0]: n for n in prepared.graph.nodes
          if n.target == torch.ops.aten.linear.default}
    assert ANNOTATION_KEY in fc["fc1"].meta and ANNOTATION_KEY not in fc["fc2"].meta


def test_set_operator_and_module_type_precedence():
    q = ReferenceQuantizer().set_global(None).set_operator_type("linear", ReferenceQuantizer().global_config)
    q.set_module_type(nn.Conv2d, None)
    prepared = quantplug.prepare_pt2e(SmallCNN().eval(), q, (torch.randn(1, 3, 8, 8),))
    annotated = {n.target for n in prepared.graph.nodes if ANNOTATION_KEY in n.meta}
    assert torch.ops.aten.linear.default in annotated and torch.ops.aten.conv2d.default not in annotated


def test_batch_norm_folded_before_annotation():
    prepared = quantplug.prepare_pt2e(SmallCNN().eval(), ReferenceQuantizer(), (torch.randn(1, 3, 8, 8),))
    assert not any(n.target == torch.ops.aten.batch_norm.default for n in prepared.graph.nodes)


def test_converted_model_exports_again():
    x = torch.randn(4, 32)
    converted = _flow(MLP().eval(), x)
    ep = torch.export.export(converted, (x,))
    torch.testing.assert_close(ep.module()(x), converted(x))


def test_explain_reports_reference_nodes():
    converted = _flow(MLP().eval(), torch.randn(4, 32))
    report = quantplug.explain(converted)
    assert report.backend == "reference"
    assert {r.op for r in report.rows if r.runs_as == "reference"} >= {"linear"}
    assert "not lowered" in str(report)


def test_lowering_reference_backend_keeps_reference_form():
    converted = _flow(MLP().eval(), torch.randn(4, 32), lower=True)
    report = quantplug.explain(converted)
    assert not report.kernels
    assert all("no kernels" in r.detail for r in report.rows if r.op == "linear")
