"""QNNPACKQuantizer: annotations with QNNPACK's numerics, validated against the qnnpack BackendConfig."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from torch import nn

import quantplug
from quantplug import ConstraintViolationError
from quantplug.affine import sqnr
from quantplug.direct_calls import op_of
from quantplug.observers import HistogramObserver, MinMaxObserver
from quantplug.specs import ANNOTATION_KEY, FixedQParamsQuantizationSpec, QuantizationSpec

from quantplug_qnnpack import (
    ACT_SCALE_MIN,
    QNNPACKQuantizer,
    get_qnnpack_backend_config,
    get_symmetric_quantization_config,
)


class Net(nn.Module):
    """linear, conv2d+relu, add, sigmoid / tanh / hardsigmoid, pooling, flatten, cat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 4 * 4, 8)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + self.conv2(y)
        y = torch.nn.functional.max_pool2d(y, 2)
        y = self.fc(torch.flatten(y, 1))
        return torch.cat([torch.sigmoid(y), torch.tanh(y), torch.nn.functional.hardsigmoid(y)], dim=1)


def _exported(model=None, x=None):
    model = (model or Net()).eval()
    x = torch.randn(2, 3, 8, 8) if x is None else x
    return torch.export.export(model, (x,)).module(), x


def _annotated(quantizer=None, model=None, x=None):
    gm, x = _exported(model, x)
    quantizer = quantizer or QNNPACKQuantizer()
    quantizer.annotate(gm)
    return quantizer, gm


def _nodes(gm, target_name):
    return [n for n in gm.graph.nodes if n.op == "call_function" and target_name in str(op_of(n.target))]


def test_annotates_linear_conv_relu_add_with_qnnpack_numerics():
    q, gm = _annotated()
    conv = _nodes(gm, "conv2d")[0]
    ann = conv.meta[ANNOTATION_KEY]
    assert ann.pattern == ("conv2d", "relu")
    act_spec = ann.input_qspec_map[conv.args[0]]
    w_spec = ann.input_qspec_map[conv.args[1]]
    assert act_spec.dtype == torch.uint8 and act_spec.range == (0, 255) and not act_spec.is_symmetric
    assert w_spec.dtype == torch.int8 and w_spec.range == (-128, 127) and w_spec.is_per_channel
    relu = _nodes(gm, "relu")[0]
    assert relu.meta[ANNOTATION_KEY].output_qspec == act_spec
    add = _nodes(gm, "add")[0]
    assert add.meta[ANNOTATION_KEY].pattern == ("add",)
    lin = _nodes(gm, "linear")[0]
    assert lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[1]].dtype == torch.int8
    # every observer carries QNNPACK's 2**-12 scale floor
    obs = act_spec.observer_or_fake_quant_ctr
    assert isinstance(obs, functools.partial) and obs.keywords["eps"] == ACT_SCALE_MIN
    assert obs.func is HistogramObserver
    q.validate(gm)


@pytest.mark.parametrize("op,scale,zp", [("sigmoid", 1 / 256, 0), ("tanh", 2 / 256, 128), ("hardsigmoid", 1 / 256, 0)])
def test_fixed_qparams(op, scale, zp):
    spec = QNNPACKQuantizer.fixed_qparams[op]
    assert isinstance(spec, FixedQParamsQuantizationSpec)
    assert (spec.dtype, spec.scale, spec.zero_point, spec.range) == (torch.uint8, scale, zp, (0, 255))
    cfg = get_qnnpack_backend_config().get(op)
    out = cfg.dtype_configs[0].output_dtype
    assert (out.scale_exact_match, out.zero_point_exact_match) == (scale, zp)
    q, gm = _annotated()
    node = _nodes(gm, op)[0]
    assert node.meta[ANNOTATION_KEY].output_qspec == spec


def test_wrong_fixed_qparams_rejected_naming_node():
    q, gm = _annotated()
    node = _nodes(gm, "sigmoid")[0]
    node.meta[ANNOTATION_KEY].output_qspec = FixedQParamsQuantizationSpec(torch.uint8, 1 / 128, 0, 0, 255)
    with pytest.raises(ConstraintViolationError, match=re.escape(node.name) + ".*fixed scale"):
        q.validate(gm)


def test_wrong_activation_dtype_rejected_naming_node():
    q, gm = _annotated()
    lin = _nodes(gm, "linear")[0]
    int8 = QuantizationSpec(torch.int8, MinMaxObserver.with_args(dtype=torch.int8, eps=ACT_SCALE_MIN))
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] = int8
    with pytest.raises(ConstraintViolationError, match=re.escape(lin.name) + ".*torch.uint8"):
        q.validate(gm)


def test_scale_below_qnnpack_minimum_rejected_naming_node():
    q, gm = _annotated()
    conv = _nodes(gm, "conv2d")[0]
    default_eps = QuantizationSpec(torch.uint8, MinMaxObserver.with_args(dtype=torch.uint8), quant_min=0,
                                   quant_max=255)
    conv.meta[ANNOTATION_KEY].input_qspec_map[conv.args[0]] = default_eps
    with pytest.raises(ConstraintViolationError, match=re.escape(conv.name) + ".*minimum 0.000244"):
        q.validate(gm)


def test_weight_dtype_violation_rejected():
    q, gm = _annotated()
    lin = _nodes(gm, "linear")[0]
    uint8_w = QuantizationSpec(torch.uint8, MinMaxObserver.with_args(dtype=torch.uint8, eps=ACT_SCALE_MIN))
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[1]] = uint8_w
    with pytest.raises(ConstraintViolationError, match=re.escape(lin.name) + ".*weight"):
        q.validate(gm)


@pytest.mark.parametrize("options", [
    dict(is_per_channel=False), dict(is_dynamic=True), dict(is_qat=True), dict(weight_symmetric=False),
    dict(act_observer="minmax"),
])
def test_modes_annotate_and_validate(options):
    q = QNNPACKQuantizer(**options)
    gm, _ = _exported()
    q.annotate(gm)
    q.validate(gm)
    lin = _nodes(gm, "linear")[0]
    w = lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[1]]
    assert w.is_per_channel == options.get("is_per_channel", True)
    assert w.is_symmetric == options.get("weight_symmetric", True)
    act = lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]]
    assert act.dtype == torch.uint8 and act.is_dynamic == options.get("is_dynamic", False)


@pytest.mark.parametrize("option,value", [("per_row", True), ("reduce_range", True), ("weight_group_size", 32),
                                          ("weight_only", True), ("act_observer", "entropy")])
def test_unsupported_options_raise_value_error_naming_them(option, value):
    with pytest.raises(ValueError, match=option):
        QNNPACKQuantizer(**{option: value})
    with pytest.raises(ValueError, match=option):
        get_symmetric_quantization_config(**{option: value})


def test_registry_builds_quantizer():
    q = quantplug.get_quantizer("qnnpack", is_dynamic=True)
    assert isinstance(q, QNNPACKQuantizer) and q.backend_name == "qnnpack"


def test_static_flow_lowers_linear_to_qnnpack_kernels():
    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(32, 64), nn.Linear(64, 16)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model, x = MLP().eval(), torch.randn(16, 32)
    prepared = quantplug.prepare_pt2e(model, QNNPACKQuantizer(), (x,))
    for _ in range(4):
        prepared(torch.randn(16, 32))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared, lower=True)
    ops = [op_of(n.target) for n in lowered.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.quantplug.linear.default) == 2
    assert sqnr(model(x), lowered(x)) > 30
    # every activation scale respects QNNPACK's floor
    for n in lowered.graph.nodes:
        if op_of(n.target) == torch.ops.quantplug.linear.default:
            assert n.args[1] >= ACT_SCALE_MIN and n.args[5] >= ACT_SCALE_MIN


def test_tiny_activations_get_the_scale_floor():
    """Activations spanning less than 255 * 2**-12 still get scale 2**-12 (QNNPACK's minimum)."""
    model = nn.Sequential(nn.Linear(8, 4)).eval()
    x = torch.randn(4, 8) * 1e-4
    prepared = quantplug.prepare_pt2e(model, QNNPACKQuantizer(act_observer="minmax"), (x,))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared, lower=True)
    lin = [n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear.default][0]
    assert lin.args[1] == pytest.approx(ACT_SCALE_MIN)


def test_dynamic_flow_lowers_to_qnnpack_dynamic_linear():
    torch.manual_seed(1)
    model, x = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8)).eval(), torch.randn(4, 32)
    prepared = quantplug.prepare_pt2e(model, QNNPACKQuantizer(is_dynamic=True), (x,))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared, lower=True)
    ops = [op_of(n.target) for n in lowered.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.quantplug.linear_dynamic.default) == 2
    assert sqnr(model(x), lowered(x)) > 25
