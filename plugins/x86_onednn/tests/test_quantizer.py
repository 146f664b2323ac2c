"""The x86 quantizer: numerics of its specs, the conv + add (+ relu) rule, validation, options."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

import quantplug
from quantplug.affine import sqnr
from quantplug.backend_config import validate_annotations
from quantplug.direct_calls import op_of
from quantplug.errors import ConstraintViolationError
from quantplug.ops import is_op
from quantplug.specs import ANNOTATION_KEY, FixedQParamsQuantizationSpec, QuantizationSpec

from quantplug_x86_onednn import (
    X86OneDNNQuantizer,
    get_default_x86_onednn_quantization_config,
    get_symmetric_quantization_config,
    get_x86_onednn_backend_config,
)


class Net(nn.Module):
    """linear, conv2d + relu, a plain add of two conv branches, and a residual conv + add + relu."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(8, 8, 1)
        self.conv_b = nn.Conv2d(8, 8, 1)
        self.conv_res = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.conv1(x))              # conv2d + relu
        z = self.conv_a(y) + self.conv_b(y)        # conv_a claims the add; conv_b is quantized alone
        r = torch.relu(self.conv_res(z) + z)       # residual conv + add + relu (x86 fusion)
        return self.fc(r.mean((2, 3)))


class TwoUsers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y + x, y * 2  # conv output used twice: no fusion


def _export(model, *args):
    return torch.export.export(model.eval(), args).module()


def _annotated(model, *args, quantizer=None):
    q = quantizer or X86OneDNNQuantizer()
    gm = q.transform_for_annotation(_export(model, *args))
    q.annotate(gm)
    return q, gm


def _nodes(gm, op):
    return [n for n in gm.graph.nodes if is_op(n, op)]


def _kw(spec):
    ctr, kw = spec.observer_or_fake_quant_ctr, {}
    while isinstance(ctr, functools.partial):
        kw = {**ctr.keywords, **kw}
        ctr = ctr.func
    return ctr, kw


def test_default_config_numerics():
    cfg = get_default_x86_onednn_quantization_config()
    act, w = cfg.input_activation, cfg.weight
    assert (act.dtype, act.range, act.qscheme) == (torch.uint8, (0, 255), torch.per_tensor_affine)
    assert (w.dtype, w.range, w.qscheme, w.ch_axis) == (torch.int8, (-128, 127), torch.per_channel_symmetric, 0)
    assert cfg.output_activation == act and not cfg.is_dynamic
    assert _kw(act)[1]["eps"] == 2**-12 and _kw(w)[1]["eps"] == 2**-12
    assert _kw(act)[0].__name__ == "HistogramObserver"
    alias = get_symmetric_quantization_config()
    for a, b in ((alias.input_activation, act), (alias.weight, w)):
        assert (a.dtype, a.range, a.qscheme, _kw(a)) == (b.dtype, b.range, b.qscheme, _kw(b))
    per_tensor = get_default_x86_onednn_quantization_config(is_per_channel=False).weight
    assert per_tensor.qscheme == torch.per_tensor_symmetric
    assert get_default_x86_onednn_quantization_config(reduce_range=True).input_activation.range == (0, 127)


def test_dynamic_and_qat_configs():
    dyn = get_default_x86_onednn_quantization_config(is_dynamic=True)
    assert dyn.is_dynamic and not dyn.input_activation.per_row and dyn.output_activation is None
    assert dyn.input_activation.range == (0, 255)
    qat = get_default_x86_onednn_quantization_config(is_qat=True)
    assert qat.is_qat and "FakeQuantize" in _kw(qat.input_activation)[0].__name__


@pytest.mark.parametrize("options,name", [({"per_row": True}, "per_row"), ({"weight_symmetric": False}, "weight_symmetric"),
                                          ({"is_dynamic": True, "is_qat": True}, "is_dynamic")])
def test_unsupported_options_raise_value_error_naming_them(options, name):
    with pytest.raises(ValueError, match=name):
        X86OneDNNQuantizer(**options)
    with pytest.raises(ValueError, match=name):
        quantplug.get_quantizer("x86", **options)


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError):
        X86OneDNNQuantizer(no_such_option=1)


def test_annotates_linear_conv_relu_and_add():
    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8))
    conv1, conv_a, conv_b, conv_res = _nodes(gm, "conv2d")
    lin = _nodes(gm, "linear")[0]
    act = q.global_config.input_activation
    # conv2d + relu: output quantized after the relu, not between
    ann = conv1.meta[ANNOTATION_KEY]
    assert ann.pattern == ("conv2d", "relu") and ann.output_qspec is None
    relu = next(iter(conv1.users))
    assert relu.meta[ANNOTATION_KEY].output_qspec == act
    assert ann.input_qspec_map[conv1.args[1]].qscheme == torch.per_channel_symmetric
    # linear
    assert lin.meta[ANNOTATION_KEY].pattern == ("linear",)
    assert lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] == act
    # conv_a + conv_b: conv_a fused with the add, conv_b quantized on its own
    add_ab = next(iter(conv_a.users))
    assert conv_a.meta[ANNOTATION_KEY].pattern == ("conv2d", "add")
    assert conv_a.meta[ANNOTATION_KEY].output_qspec is None
    assert add_ab.meta[ANNOTATION_KEY].input_qspec_map == {conv_b: act}
    assert add_ab.meta[ANNOTATION_KEY].output_qspec == act
    assert conv_b.meta[ANNOTATION_KEY].pattern == ("conv2d",) and conv_b.meta[ANNOTATION_KEY].output_qspec == act
    # residual conv + add + relu: one pattern, output quantized after the relu only
    add_res = next(iter(conv_res.users))
    relu_res = next(iter(add_res.users))
    for n in (conv_res, add_res, relu_res):
        assert n.meta[ANNOTATION_KEY].pattern == ("conv2d", "add", "relu")
    assert conv_res.meta[ANNOTATION_KEY].output_qspec is None and add_res.meta[ANNOTATION_KEY].output_qspec is None
    assert add_res.meta[ANNOTATION_KEY].input_qspec_map == {add_ab: act}
    assert relu_res.meta[ANNOTATION_KEY].output_qspec == act
    validate_annotations(gm, get_x86_onednn_backend_config())
    q.validate(gm)


def test_conv_with_two_users_is_not_fused():
    _, gm = _annotated(TwoUsers(), torch.randn(1, 4, 5, 5))
    conv = _nodes(gm, "conv2d")[0]
    assert conv.meta[ANNOTATION_KEY].pattern == ("conv2d",)
    add = _nodes(gm, "add")[0]
    assert add.meta[ANNOTATION_KEY].pattern == ("add",)


def test_add_kept_float_by_user_config_is_not_fused():
    q = X86OneDNNQuantizer().set_operator_type("add", None)
    _, gm = _annotated(Net(), torch.randn(2, 3, 8, 8), quantizer=q)
    conv_res = _nodes(gm, "conv2d")[3]
    assert conv_res.meta[ANNOTATION_KEY].pattern == ("conv2d",)


def test_dynamic_annotates_linear_only():
    _, gm = _annotated(Net(), torch.randn(2, 3, 8, 8), quantizer=X86OneDNNQuantizer(is_dynamic=True))
    assert all(ANNOTATION_KEY not in n.meta for n in _nodes(gm, "conv2d"))
    lin = _nodes(gm, "linear")[0]
    assert lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]].is_dynamic
    validate_annotations(gm, get_x86_onednn_backend_config())


def test_fixed_qparams_ops_use_torch_values():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.sigmoid(self.fc(x)), torch.tanh(self.fc(x))

    _, gm = _annotated(M(), torch.randn(2, 4))
    sig = _nodes(gm, "sigmoid")[0].meta[ANNOTATION_KEY].output_qspec
    tanh = _nodes(gm, "tanh")[0].meta[ANNOTATION_KEY].output_qspec
    assert isinstance(sig, FixedQParamsQuantizationSpec) and (sig.scale, sig.zero_point) == (1 / 256, 0)
    assert (tanh.scale, tanh.zero_point, tanh.dtype) == (2 / 256, 128, torch.uint8)
    validate_annotations(gm, get_x86_onednn_backend_config())


# ----------------------------------------------------------- violations --


def _bad_act(dtype=torch.int8, **kw):
    from quantplug.observers import MinMaxObserver

    return QuantizationSpec(dtype=dtype, observer_or_fake_quant_ctr=MinMaxObserver.with_args(dtype=dtype), **kw)


def test_wrong_activation_dtype_rejected_naming_node():
    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8))
    lin = _nodes(gm, "linear")[0]
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] = _bad_act(torch.int8)
    with pytest.raises(ConstraintViolationError, match=f"'{lin.name}'.*uint8"):
        q.validate(gm)


def test_asymmetric_weight_rejected():
    from quantplug.observers import PerChannelMinMaxObserver

    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8))
    conv = _nodes(gm, "conv2d")[0]
    conv.meta[ANNOTATION_KEY].input_qspec_map[conv.args[1]] = QuantizationSpec(
        dtype=torch.int8, qscheme=torch.per_channel_affine, ch_axis=0,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(qscheme=torch.per_channel_affine))
    with pytest.raises(ConstraintViolationError, match=f"'{conv.name}'.*not symmetric"):
        q.validate(gm)


def test_uint8_weight_rejected():
    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8))
    lin = _nodes(gm, "linear")[0]
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[1]] = _bad_act(torch.uint8, qscheme=torch.per_tensor_symmetric)
    with pytest.raises(ConstraintViolationError, match=lin.name):
        q.validate(gm)


def test_fused_add_other_input_checked():
    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8))
    add_res = next(iter(_nodes(gm, "conv2d")[3].users))
    (other,) = add_res.meta[ANNOTATION_KEY].input_qspec_map
    add_res.meta[ANNOTATION_KEY].input_qspec_map[other] = _bad_act(torch.int8)
    with pytest.raises(ConstraintViolationError, match=f"'{add_res.name}'.*conv2d-add-relu"):
        q.validate(gm)


def test_wrong_fixed_qparams_rejected():
    class M(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x + x)

    q, gm = _annotated(M(), torch.randn(2, 4))
    sig = _nodes(gm, "sigmoid")[0]
    sig.meta[ANNOTATION_KEY].output_qspec = FixedQParamsQuantizationSpec(torch.uint8, 1 / 128, 0, 0, 255)
    with pytest.raises(ConstraintViolationError, match=f"'{sig.name}'.*fixed scale"):
        q.validate(gm)


def test_static_spec_on_dynamic_only_position_rejected():
    q, gm = _annotated(Net(), torch.randn(2, 3, 8, 8), quantizer=X86OneDNNQuantizer(is_dynamic=True))
    lin = _nodes(gm, "linear")[0]
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] = QuantizationSpec(
        dtype=torch.uint8, is_dynamic=True, per_row=True, observer_or_fake_quant_ctr=None)
    q.validate(gm)  # per_row is a kernel option, not a dtype constraint: accepted by validation
    lin.meta[ANNOTATION_KEY].input_qspec_map[lin.args[0]] = QuantizationSpec(dtype=torch.int8, is_dynamic=True)
    with pytest.raises(ConstraintViolationError, match=lin.name):
        q.validate(gm)


# ------------------------------------------------------------- end to end --


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        y = torch.relu(self.body(y) + y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.fixture(scope="module")
def residual_flow():
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(4, 3, 12, 12)
    prepared = quantplug.prepare_pt2e(model, quantplug.get_quantizer("x86"), (x,))
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn(4, 3, 12, 12))
        prepared(x)
    reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
    lowered = quantplug.convert_pt2e(prepared)
    return model, x, reference, lowered


def test_conv_add_relu_runs_fused(residual_flow):
    model, x, reference, lowered = residual_flow
    targets = [op_of(n.target) for n in lowered.graph.nodes if n.op == "call_function"]
    assert torch.ops.quantplug_x86_onednn.conv2d_add.default in targets
    assert torch.ops.quantplug.conv2d.default in targets and torch.ops.quantplug.linear.default in targets
    assert not any(is_op(n, "conv2d") or is_op(n, "add") for n in lowered.graph.nodes)
    fused = next(n for n in lowered.graph.nodes if op_of(n.target) == torch.ops.quantplug_x86_onednn.conv2d_add.default)
    assert fused.args[10] is True  # relu
    assert lowered.meta["quantplug"]["x86_onednn_fused_conv_add"] == 1
    with torch.no_grad():
        assert sqnr(model(x), lowered(x)) > 30.0
        # the fused kernel rounds once where the reference rounds the float conv: within 2 output steps
        step = float(next(n for n in reference.graph.nodes if n.op == "output").args[0][0].args[1])
        assert float((lowered(x) - reference(x)).abs().max()) <= 2 * step * 1.001
        assert lowered(torch.randn(1, 3, 12, 12)).shape == (1, 10)


def test_fused_model_save_load_and_export(residual_flow, tmp_path):
    from quantplug.serialization import load, load_exported, save

    _, x, _, lowered = residual_flow
    save(lowered, tmp_path / "m.safetensors")
    loaded = load(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), lowered(x))
        ep = torch.export.export(lowered, (x,))
        torch.export.save(ep, tmp_path / "m.pt2")
        assert torch.equal(load_exported(tmp_path / "m.pt2").module()(x), lowered(x))


def test_pickled_lowered_model_runs_in_a_new_process(residual_flow, tmp_path):
    # The converted graph calls the ops' direct-call functions (quantplug.direct_calls), the
    # fused conv + add one included; a new process that unpickles the model must find them
    # before anything imported this plugin.
    import subprocess
    import sys

    _, x, _, lowered = residual_flow
    torch.save(lowered, tmp_path / "m.pt")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(lowered(x), tmp_path / "y.pt")
    code = ("import torch; d = {!r}\n"
            "m = torch.load(d + '/m.pt', weights_only=False); x = torch.load(d + '/x.pt')\n"
            "with torch.no_grad(): assert torch.equal(m(x), torch.load(d + '/y.pt'))\n"
            "print(sorted({{str(n.target.__name__) for n in m.graph.nodes if n.op == 'call_function'}}))").format(
        str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "quantplug_x86_onednn__conv2d_add__default" in out.stdout


def test_reduce_range_keeps_every_kernel_output_inside_0_127():
    # The kernels clamp to 0..255; with reduce_range each quantize node asks for 0..127, so the
    # lowering follows the kernels (conv + add fused included) with an integer clamp. Inputs far
    # beyond the calibrated range saturate and show any value above 127.
    torch.manual_seed(0)
    model = Residual().eval()
    quantizer = X86OneDNNQuantizer().set_global(get_default_x86_onednn_quantization_config(reduce_range=True))
    prepared = quantplug.prepare_pt2e(model, quantizer, (torch.randn(4, 3, 12, 12),))
    with torch.no_grad():
        for _ in range(4):
            prepared(torch.randn(4, 3, 12, 12))
    reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
    lowered = quantplug.convert_pt2e(prepared)
    targets = [op_of(n.target) for n in lowered.graph.nodes if n.op == "call_function"]
    assert torch.ops.quantplug_x86_onednn.conv2d_add.default in targets
    clamps = [n for n in lowered.graph.nodes if n.target == torch.ops.aten.clamp.default]
    # stem conv, fused conv + add, global average pool, linear
    assert len(clamps) == 4 and all(tuple(n.args[1:]) == (0, 127) for n in clamps)
    step = float(next(n for n in reference.graph.nodes if n.op == "output").args[0][0].args[1])
    x = torch.randn(4, 3, 12, 12) * 8
    with torch.no_grad():
        assert float((lowered(x) - reference(x)).abs().max()) <= 2 * step * 1.001


def test_dynamic_flow_runs_dynamic_kernel():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(6, 32)
    prepared = quantplug.prepare_pt2e(model, quantplug.get_quantizer("onednn", is_dynamic=True), (x,))
    prepared(x)
    converted = quantplug.convert_pt2e(prepared)
    assert sum(op_of(n.target) == torch.ops.quantplug.linear_dynamic.default for n in converted.graph.nodes) == 2
    with torch.no_grad():
        assert sqnr(model(x), converted(x)) > 30.0
