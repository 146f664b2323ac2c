"""BackendConfig tables and the validation of annotations against them."""

import pytest
import torch
from torch import nn

from quantplug import (
    BackendConfig,
    BackendPatternConfig,
    ConstraintViolationError,
    DTypeConfig,
    DTypeWithConstraints,
    FixedQParamsQuantizationSpec,
)
from quantplug.annotators import PatternQuantizer, make_quantization_config
from quantplug.builtin_plugin import ReferenceQuantizer, reference_backend_config


class LinearReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class Sig(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


def _exported(model, *shape):
    return torch.export.export(model.eval(), (torch.randn(*shape),)).module()


def _uint8_table(**weight_constraints):
    act = DTypeWithConstraints(torch.uint8, quant_min_lower_bound=0, quant_max_upper_bound=127)
    w = DTypeWithConstraints(torch.int8, symmetric_only=True, **weight_constraints)
    dc = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=w)
    return BackendConfig("tiny", [BackendPatternConfig(("linear", "relu"), dtype_configs=[dc], kernel="tiny.linear_relu")])


def test_table_lookup():
    cfg = reference_backend_config()
    assert cfg.get(("linear", "relu")).pattern == ("linear", "relu")
    assert cfg.get("linear").root == "linear"
    assert {"linear", "conv2d", "add", "relu"} <= cfg.supported_ops()
    assert any(c.pattern == ("conv2d", "batch_norm", "relu") for c in cfg.configs_for_root("conv2d"))


def test_reference_quantizer_annotations_validate():
    gm = _exported(LinearReLU(), 2, 8)
    q = ReferenceQuantizer()
    q.annotate(gm)
    q.validate(gm)  # no error
    patterns = {n.meta["quantization_annotation"].pattern for n in gm.graph.nodes if "quantization_annotation" in n.meta}
    assert ("linear", "relu") in patterns


def test_dtype_mismatch_names_node_and_constraint():
    gm = _exported(LinearReLU(), 2, 8)
    q = PatternQuantizer(make_quantization_config(act_dtype=torch.int8, weight_dtype=torch.int8), _uint8_table())
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match=r"node 'linear' \(linear-relu\).*'tiny'.*dtype is torch.int8, the kernel needs torch.uint8"):
        q.validate(gm)


def test_range_above_upper_bound():
    gm = _exported(LinearReLU(), 2, 8)
    cfg = make_quantization_config(act_dtype=torch.uint8, weight_dtype=torch.int8)  # full 0..255
    q = PatternQuantizer(cfg, _uint8_table())
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match="quant_max=255 is above the kernel's upper bound 127"):
        q.validate(gm)


def test_asymmetric_weight_rejected_when_symmetric_required():
    gm = _exported(LinearReLU(), 2, 8)
    cfg = make_quantization_config(act_dtype=torch.uint8, act_range=(0, 127), weight_dtype=torch.int8,
                                   weight_symmetric=False)
    q = PatternQuantizer(cfg, _uint8_table())
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match="weight .*not symmetric"):
        q.validate(gm)


def test_scale_lower_bound_checked_through_observer_eps():
    act = DTypeWithConstraints(torch.uint8, scale_min_lower_bound=2**-12)
    dc = DTypeConfig(input_dtype=act, output_dtype=act, weight_dtype=DTypeWithConstraints(torch.int8))
    table = BackendConfig("q", [BackendPatternConfig(("linear", "relu"), dtype_configs=[dc])])
    gm = _exported(LinearReLU(), 2, 8)
    q = PatternQuantizer(make_quantization_config(act_dtype=torch.uint8, weight_dtype=torch.int8), table)
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match="scales below the kernel's minimum 0.000244"):
        q.validate(gm)
    gm = _exported(LinearReLU(), 2, 8)
    q = PatternQuantizer(make_quantization_config(act_dtype=torch.uint8, weight_dtype=torch.int8, scale_min=2**-12), table)
    q.annotate(gm)
    q.validate(gm)


def test_fixed_qparams_exact_match():
    act = DTypeWithConstraints(torch.uint8)
    out = DTypeWithConstraints(torch.uint8, scale_exact_match=1 / 256, zero_point_exact_match=0)
    table = BackendConfig("q", [BackendPatternConfig(("sigmoid",), dtype_configs=[DTypeConfig(input_dtype=act, output_dtype=out)])])

    class Q(PatternQuantizer):
        fixed_qparams = {"sigmoid": FixedQParamsQuantizationSpec(torch.uint8, scale=1 / 128, zero_point=0)}

    gm = _exported(Sig(), 4)
    q = Q(make_quantization_config(act_dtype=torch.uint8, weight_dtype=torch.int8), table)
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match=r"fixed scale 0.0078125 != required 0.00390625"):
        q.validate(gm)


def test_pattern_missing_from_table():
    table = BackendConfig("convonly", [BackendPatternConfig(("conv2d",), dtype_configs=[DTypeConfig(torch.int8, torch.int8, torch.int8)])])
    gm = _exported(LinearReLU(), 2, 8)
    q = PatternQuantizer(make_quantization_config(act_dtype=torch.int8, weight_dtype=torch.int8), table)
    q.annotate(gm)
    with pytest.raises(ConstraintViolationError, match="has no kernel pattern for linear-relu"):
        q.validate(gm)
