"""FbgemmQuantizer annotates exported models with FBGEMM's numerics; validation enforces them."""

import dataclasses

import pytest
import torch
from torch import nn

import quantplug
from quantplug import ConstraintViolationError
from quantplug.direct_calls import op_of
from quantplug.observers import HistogramObserver, PerChannelMinMaxObserver
from quantplug.specs import ANNOTATION_KEY, FixedQParamsQuantizationSpec, QuantizationSpec
from quantplug_fbgemm import FbgemmQuantizer, get_fbgemm_backend_config, get_fbgemm_quantization_config


class Net(nn.Module):
    """linear, conv2d + relu, add (and a sigmoid with fixed qparams)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + y
        y = self.fc(torch.flatten(y, 2))
        return torch.sigmoid(y)


def _exported():
    model = Net().eval()
    x = torch.randn(2, 3, 4, 4)
    return torch.export.export(model, (x,)).module(), x


def _node(gm, op):
    return next(n for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target) == op)


@pytest.fixture
def annotated():
    gm, x = _exported()
    q = FbgemmQuantizer()
    q.annotate(gm)
    return gm, q


def test_annotations_carry_fbgemm_numerics(annotated):
    gm, q = annotated
    aten = torch.ops.aten
    lin = _node(gm, aten.linear.default)
    ann = lin.meta[ANNOTATION_KEY]
    act_spec = ann.input_qspec_map[lin.args[0]]
    w_spec = ann.input_qspec_map[lin.args[1]]
    assert act_spec.dtype == torch.uint8 and act_spec.range == (0, 127) and act_spec.qscheme == torch.per_tensor_affine
    assert w_spec.dtype == torch.int8 and w_spec.range == (-128, 127)
    assert w_spec.qscheme == torch.per_channel_symmetric and w_spec.ch_axis == 0
    conv = _node(gm, aten.conv2d.default)
    assert conv.meta[ANNOTATION_KEY].pattern == ("conv2d", "relu")
    relu = _node(gm, aten.relu.default)
    assert relu.meta[ANNOTATION_KEY].output_qspec.range == (0, 127)
    add = _node(gm, aten.add.Tensor)
    assert add.meta[ANNOTATION_KEY].pattern == ("add",)
    sig = _node(gm, aten.sigmoid.default)
    out = sig.meta[ANNOTATION_KEY].output_qspec
    assert isinstance(out, FixedQParamsQuantizationSpec) and (out.scale, out.zero_point) == (1 / 256, 0)
    q.validate(gm)  # its own config passes


def _replace_input_spec(gm, op, which, **changes):
    node = _node(gm, op)
    ann = node.meta[ANNOTATION_KEY]
    key = node.args[which]
    ann.input_qspec_map[key] = dataclasses.replace(ann.input_qspec_map[key], **changes)
    return node


@pytest.mark.parametrize("which,changes,match", [
    (0, dict(dtype=torch.int8, quant_min=-128, quant_max=127), "dtype is torch.int8, the kernel needs torch.uint8"),
    (0, dict(quant_max=255), "quant_max=255 is above the kernel's upper bound 127"),
    (1, dict(qscheme=torch.per_channel_affine), "is not symmetric"),
    (1, dict(observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(
        dtype=torch.int8, qscheme=torch.per_channel_symmetric, ch_axis=0, eps=1e-12)), "below the kernel's minimum"),
    (0, dict(observer_or_fake_quant_ctr=HistogramObserver.with_args(dtype=torch.uint8, quant_min=0, quant_max=127)),
     "below the kernel's minimum"),  # no eps given: the observer may produce any scale
])
def test_validate_rejects_specs_fbgemm_cannot_run(annotated, which, changes, match):
    gm, q = annotated
    node = _replace_input_spec(gm, torch.ops.aten.linear.default, which, **changes)
    with pytest.raises(ConstraintViolationError, match=match) as info:
        q.validate(gm)
    assert repr(node.name) in str(info.value) and "'fbgemm'" in str(info.value)


def test_validate_rejects_wrong_fixed_qparams(annotated):
    gm, q = annotated
    sig = _node(gm, torch.ops.aten.sigmoid.default)
    sig.meta[ANNOTATION_KEY].output_qspec = FixedQParamsQuantizationSpec(dtype=torch.uint8, scale=1 / 128, zero_point=0)
    with pytest.raises(ConstraintViolationError, match=r"fixed scale 0\.0078125 != required 0\.00390625"):
        q.validate(gm)


def test_validate_rejects_output_over_the_bound(annotated):
    gm, q = annotated
    relu = _node(gm, torch.ops.aten.relu.default)
    ann = relu.meta[ANNOTATION_KEY]
    ann.output_qspec = dataclasses.replace(ann.output_qspec, quant_max=255)
    with pytest.raises(ConstraintViolationError, match="output of node 'conv2d'.*quant_max=255"):
        q.validate(gm)


@pytest.mark.parametrize("option,value", [("reduce_range", False), ("per_row", True), ("weight_only", True),
                                          ("act_observer", "entropy")])
def test_options_fbgemm_cannot_run_raise_value_error(option, value):
    with pytest.raises(ValueError, match=f"{option}={value!r}"):
        FbgemmQuantizer(**{option: value})
    with pytest.raises(ValueError, match=option):
        get_fbgemm_quantization_config(**{option: value})


def test_dynamic_and_per_tensor_and_qat_configs():
    dyn = get_fbgemm_quantization_config(is_dynamic=True)
    assert dyn.input_activation.is_dynamic and not dyn.input_activation.per_row
    assert dyn.input_activation.range == (0, 127) and dyn.output_activation is None
    pt = get_fbgemm_quantization_config(is_per_channel=False)
    assert pt.weight.qscheme == torch.per_tensor_symmetric
    qat = get_fbgemm_quantization_config(is_qat=True)
    assert qat.is_qat
    gm, _ = _exported()
    q = FbgemmQuantizer(is_dynamic=True)
    q.annotate(gm)
    q.validate(gm)
    annotated_ops = {op_of(n.target) for n in gm.graph.nodes if ANNOTATION_KEY in n.meta}
    assert annotated_ops == {torch.ops.aten.linear.default}  # dynamic kernels exist for linear only


def test_backend_config_patterns_and_kernels():
    cfg = get_fbgemm_backend_config()
    patterns = {c.pattern for c in cfg.configs}
    for p in [("linear",), ("linear", "relu"), ("conv1d",), ("conv2d",), ("conv2d", "relu"),
              ("conv2d", "batch_norm"), ("conv2d", "batch_norm", "relu"), ("add",), ("add", "relu"), ("mul",),
              ("cat",), ("max_pool2d",), ("avg_pool2d",), ("adaptive_avg_pool2d",), ("flatten",), ("reshape",),
              ("permute",), ("sigmoid",), ("tanh",), ("hardsigmoid",)]:
        assert p in patterns, p
    kernels = quantplug.get_backend("fbgemm").kernels
    for c in cfg.configs:  # every kernel named in the table exists in the kernel library
        if c.kernel is not None:
            assert c.kernel.startswith("fbgemm.") and callable(getattr(kernels, c.kernel.split(".", 1)[1])), c.kernel
    lin = cfg.get(("linear",))
    assert {dc.is_dynamic for dc in lin.dtype_configs} == {False, True}
    w = lin.dtype_configs[0].weight_dtype
    assert (w.dtype, w.quant_min_lower_bound, w.quant_max_upper_bound, w.symmetric_only) == (torch.int8, -128, 127, True)
    a = lin.dtype_configs[0].input_dtype
    assert (a.dtype, a.quant_min_lower_bound, a.quant_max_upper_bound) == (torch.uint8, 0, 127)


def test_end_to_end_lowered_model():
    from quantplug.affine import sqnr

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    x = torch.randn(8, 32)
    prepared = quantplug.prepare_pt2e(model, FbgemmQuantizer(), (x,))
    for _ in range(4):
        prepared(torch.randn(8, 32))
    prepared(x)
    lowered = quantplug.convert_pt2e(prepared, lower=True)
    kernels = [n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear.default]
    assert len(kernels) == 2
    out = lowered(x)
    # Thresholds: 7-bit activations (reduce_range) cost ~6 dB against 8-bit ones; two layers with
    # per-tensor activations land around 32-36 dB here, a wrong scale or zero point gives < 10 dB.
    assert sqnr(model(x), out) > 28
    dyn = quantplug.convert_pt2e(quantplug.prepare_pt2e(model, FbgemmQuantizer(is_dynamic=True), (x,)), lower=True)
    assert sum(op_of(n.target) == torch.ops.quantplug.linear_dynamic.default for n in dyn.graph.nodes) == 2
    assert sqnr(model(x), dyn(x)) > 28
