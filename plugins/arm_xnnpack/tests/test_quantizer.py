"""XNNPACKQuantizer: annotation of exported models, validation against the backend's constraints, options."""

import functools
import inspect

import pytest
import torch
from torch import nn

import quantplug
from quantplug.annotators import make_quantization_config
from quantplug.errors import ConstraintViolationError
from quantplug.ops import op_name
from quantplug.specs import ANNOTATION_KEY, INT4, FixedQParamsQuantizationSpec, QuantizationSpec

from quantplug_arm_xnnpack import (
    XNNPACKQuantizer,
    get_arm_xnnpack_backend_config,
    get_int4_weight_only_quantization_config,
    get_symmetric_quantization_config,
)


class Small(nn.Module):
    """conv2d+relu, a second conv, add, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.skip = nn.Conv2d(3, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        y = self.relu(self.conv(x)) + self.skip(x)
        return self.fc(y.flatten(1))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 16)

    def forward(self, x):
        return torch.sigmoid(self.fc2(torch.tanh(self.fc1(x))))


def _export(model, *args):
    return torch.export.export(model.eval(), args).module()


def _nodes(gm, name):
    return [n for n in gm.graph.nodes if op_name(n) == name]


def _ann(node):
    return node.meta.get(ANNOTATION_KEY)


def _observer_kwargs(spec):
    ctr, kwargs = spec.observer_or_fake_quant_ctr, {}
    while isinstance(ctr, functools.partial):
        kwargs = {**ctr.keywords, **kwargs}
        ctr = ctr.func
    inner = kwargs.get("observer")
    if isinstance(inner, functools.partial):
        kwargs = {**inner.keywords, **kwargs}
    return kwargs


def test_signature_of_get_symmetric_quantization_config():
    params = list(inspect.signature(get_symmetric_quantization_config).parameters.values())
    assert [(p.name, p.default) for p in params[:3]] == [("is_per_channel", True), ("is_dynamic", False),
                                                          ("is_qat", False)]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[3:])
    ctor = inspect.signature(XNNPACKQuantizer).parameters
    assert all(ctor[n].kind is inspect.Parameter.KEYWORD_ONLY for n in ("is_per_channel", "is_dynamic", "is_qat"))


def test_config_numerics_are_xnnpack():
    cfg = get_symmetric_quantization_config()
    act, w = cfg.input_activation, cfg.weight
    assert act.dtype == torch.int8 and act.range == (-128, 127) and act.qscheme == torch.per_tensor_affine
    assert w.dtype == torch.int8 and w.range == (-127, 127) and w.qscheme == torch.per_channel_symmetric
    assert w.ch_axis == 0 and cfg.output_activation == act and not cfg.is_qat
    assert _observer_kwargs(act)["eps"] == 2**-12 and _observer_kwargs(w)["eps"] == 2**-12
    per_tensor = get_symmetric_quantization_config(is_per_channel=False).weight
    assert per_tensor.qscheme == torch.per_tensor_symmetric
    dyn = get_symmetric_quantization_config(is_dynamic=True, per_row=True)
    assert dyn.is_dynamic and dyn.input_activation.per_row and dyn.output_activation is None
    qat = get_symmetric_quantization_config(is_qat=True)
    assert qat.is_qat and "observer" in _observer_kwargs(qat.weight)
    w4 = get_int4_weight_only_quantization_config(64).weight
    assert w4.dtype == INT4 and w4.range == (-8, 7) and w4.group_size == 64 and w4.is_symmetric


@pytest.mark.parametrize("kwargs, option", [
    (dict(weight_qmin=-128), "weight_qmin=-128"),
    (dict(weight_qmax=128), "weight_qmax=128"),
    (dict(act_qmin=-129), "act_qmin=-129"),
    (dict(act_qmax=255), "act_qmax=255"),
    (dict(per_row=True), "per_row=True"),
    (dict(act_observer="kl"), "act_observer='kl'"),
    (dict(is_dynamic="yes"), "is_dynamic must be a bool"),
])
def test_config_options_it_cannot_run(kwargs, option):
    with pytest.raises(ValueError, match=option):
        get_symmetric_quantization_config(**kwargs)


@pytest.mark.parametrize("kwargs, option", [
    (dict(is_weight_only=True, group_size=16), "group_size=16"),
    (dict(is_weight_only=True, is_dynamic=True), "is_dynamic=True"),
    (dict(is_weight_only=True, is_qat=True), "is_qat=True"),
    (dict(per_row=True), "per_row=True"),
])
def test_quantizer_options_it_cannot_run(kwargs, option):
    with pytest.raises(ValueError, match=option):
        XNNPACKQuantizer(**kwargs)


def test_registry_builds_the_quantizer():
    for name in ("xnnpack", "arm_xnnpack"):
        q = quantplug.get_quantizer(name, is_dynamic=True)
        assert isinstance(q, XNNPACKQuantizer) and q.global_config.is_dynamic and q.backend_name == "xnnpack"


def test_annotates_linear_conv_relu_add():
    gm = _export(Small(), torch.randn(2, 3, 4, 4))
    q = XNNPACKQuantizer()
    q.annotate(gm)
    q.validate(gm)
    conv_relu, skip = _nodes(gm, "conv2d")
    assert _ann(conv_relu).pattern == ("conv2d", "relu") and _ann(conv_relu).output_qspec is None
    relu = _nodes(gm, "relu")[0]
    assert _ann(relu).pattern == ("conv2d", "relu") and _ann(relu).output_qspec.dtype == torch.int8
    assert _ann(skip).pattern == ("conv2d",)
    add = _nodes(gm, "add")[0]
    assert _ann(add).pattern == ("add",) and len(_ann(add).input_qspec_map) == 2
    lin = _nodes(gm, "linear")[0]
    ann = _ann(lin)
    weight_spec = ann.input_qspec_map[lin.args[1]]
    assert weight_spec.range == (-127, 127) and weight_spec.is_symmetric and weight_spec.is_per_channel
    act_spec = ann.input_qspec_map[lin.args[0]]
    assert act_spec.dtype == torch.int8 and not act_spec.is_symmetric
    flatten = [n for n in gm.graph.nodes if op_name(n) in ("flatten", "reshape")]
    assert flatten and all(_ann(n) is not None for n in flatten)  # shares the add's qparams


def test_fixed_qparams_for_sigmoid_and_tanh():
    gm = _export(Head(), torch.randn(2, 64))
    q = XNNPACKQuantizer()
    q.annotate(gm)
    q.validate(gm)
    sig = _ann(_nodes(gm, "sigmoid")[0]).output_qspec
    tanh = _ann(_nodes(gm, "tanh")[0]).output_qspec
    assert isinstance(sig, FixedQParamsQuantizationSpec) and (sig.scale, sig.zero_point) == (1 / 256, -128)
    assert isinstance(tanh, FixedQParamsQuantizationSpec) and (tanh.scale, tanh.zero_point) == (1 / 128, 0)


def test_dynamic_and_weight_only_annotations_validate():
    gm = _export(Head(), torch.randn(2, 64))
    q = XNNPACKQuantizer(is_dynamic=True, per_row=True)
    q.annotate(gm)
    q.validate(gm)
    lin = _nodes(gm, "linear")[0]
    spec = _ann(lin).input_qspec_map[lin.args[0]]
    assert spec.is_dynamic and spec.per_row and _ann(lin).output_qspec is None
    assert _ann(_nodes(gm, "sigmoid")[0]) is None  # dynamic mode quantizes linear only

    gm = _export(Head(), torch.randn(2, 64))
    q = XNNPACKQuantizer(is_weight_only=True, group_size=32)
    q.annotate(gm)
    q.validate(gm)
    lin = _nodes(gm, "linear")[0]
    assert list(_ann(lin).input_qspec_map) == [lin.args[1]]
    assert _ann(lin).input_qspec_map[lin.args[1]].dtype == INT4


def _violating(**overrides):
    base = dict(act_dtype=torch.int8, weight_dtype=torch.int8, act_range=(-128, 127), weight_range=(-127, 127),
                scale_min=2**-12)
    base.update(overrides)
    return make_quantization_config(**base)


@pytest.mark.parametrize("config, problem", [
    (_violating(act_dtype=torch.uint8, act_range=(0, 255)), "dtype is torch.uint8, the kernel needs torch.int8"),
    (_violating(weight_range=(-128, 127)), "quant_min=-128 is below the kernel's lower bound -127"),
    (_violating(weight_symmetric=False), "not symmetric"),
    (_violating(scale_min=None), "below the kernel's minimum 0.000244"),
    (_violating(weight_dtype=INT4, weight_range=(-8, 7), weight_group_size=32), "dtype is int4"),
], ids=["wrong-dtype", "range-over-bound", "asymmetric-weights", "scale-below-minimum", "int4-in-static"])
def test_validate_rejects_specs_the_kernels_cannot_run(config, problem):
    gm = _export(Small(), torch.randn(2, 3, 4, 4))
    q = XNNPACKQuantizer().set_global(config)
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match=problem) as info:
        q.validate(gm)
    message = str(info.value)
    assert "node '" in message and "'xnnpack'" in message


def test_validate_names_the_violating_node():
    gm = _export(Small(), torch.randn(2, 3, 4, 4))
    q = XNNPACKQuantizer()
    q.annotate(gm)
    lin = _nodes(gm, "linear")[0]
    ann = _ann(lin)
    bad = QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=ann.input_qspec_map[lin.args[1]]
                           .observer_or_fake_quant_ctr, quant_min=-128, quant_max=127,
                           qscheme=torch.per_channel_symmetric, ch_axis=0)
    ann.input_qspec_map[lin.args[1]] = bad
    with pytest.raises(ConstraintViolationError, match=f"node '{lin.name}' \\(linear\\).*weight"):
        q.validate(gm)


def test_fixed_qparams_other_than_xnnpack_are_rejected():
    gm = _export(Head(), torch.randn(2, 64))
    q = XNNPACKQuantizer()
    q.annotate(gm)
    sig = _nodes(gm, "sigmoid")[0]
    _ann(sig).output_qspec = FixedQParamsQuantizationSpec(torch.int8, 1 / 255, -128, -128, 127)
    with pytest.raises(ConstraintViolationError, match="fixed scale"):
        q.validate(gm)


def test_backend_config_table():
    cfg = get_arm_xnnpack_backend_config()
    patterns = {c.pattern for c in cfg.configs}
    required = {("linear",), ("linear", "relu"), ("conv1d",), ("conv2d",), ("conv2d", "relu"),
                ("conv2d", "batch_norm"), ("conv2d", "batch_norm", "relu"), ("add",), ("add", "relu"), ("mul",),
                ("cat",), ("max_pool2d",), ("avg_pool2d",), ("adaptive_avg_pool2d",), ("flatten",), ("reshape",),
                ("permute",), ("sigmoid",), ("tanh",), ("linear", "hardtanh"), ("conv2d", "hardtanh")}
    assert required <= patterns
    assert all(c.kernel and c.kernel.startswith("xnnpack.") for c in cfg.configs)
    w = cfg.get(("linear",)).dtype_configs[0].weight_dtype
    assert (w.quant_min_lower_bound, w.quant_max_upper_bound, w.symmetric_only, w.scale_min_lower_bound) == \
        (-127, 127, True, 2**-12)
    linear = cfg.get(("linear",)).dtype_configs  # static, dynamic, int4 weight-only, int8 weight-only
    assert [dc.is_dynamic for dc in linear] == [False, True, False, False]
    assert linear[2].weight_dtype.group_sizes == (32, 64, 128)
    assert linear[3].input_dtype is None and linear[3].weight_dtype.quant_min_lower_bound == -127
