"""End to end through the core's PT2E flow: prepare, calibrate, convert, lower to this plugin's kernels."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import quantplug
from quantplug.direct_calls import op_of

from quantplug_arm_xnnpack import XNNPACKQuantizer


class MLP(nn.Module):
    def __init__(self, k=64, hidden=96, out=10):
        super().__init__()
        self.fc1 = nn.Linear(k, hidden)
        self.fc2 = nn.Linear(hidden, out)
        self.fc3 = nn.Linear(out, 5)  # K=10: no int4 group size divides it

    def forward(self, x):
        return self.fc3(self.fc2(torch.relu(self.fc1(x))))


def _convert(options, seed=0):
    torch.manual_seed(seed)
    model, x = MLP().eval(), torch.randn(8, 64)
    prepared = quantplug.prepare_pt2e(model, XNNPACKQuantizer(**options), (x,))
    for _ in range(3):
        prepared(torch.randn(8, 64))
    reference = quantplug.convert_pt2e(copy.deepcopy(prepared), lower=False)
    return model, x, quantplug.convert_pt2e(prepared), reference


def _kernel_rows(model):
    return [r.detail for r in quantplug.explain(model).kernels]


@torch.no_grad()
def test_static_lowered_equals_reference_representation():
    model, x, lowered, reference = _convert({})
    rows = _kernel_rows(lowered)
    assert len(rows) == 3 and all("xnnpack int8 linear" in r for r in rows)
    assert "linear+relu" in rows[0]
    # integer kernels vs dequantize -> fp32 linear -> quantize: identical int8 outputs here
    assert torch.equal(lowered(x), reference(x))
    assert (lowered(x) - model(x)).abs().max() < 0.1


@torch.no_grad()
@pytest.mark.parametrize("per_row", [False, True])
def test_dynamic_lowered_close_to_reference(per_row):
    model, x, lowered, reference = _convert({"is_dynamic": True, "per_row": per_row})
    assert len(_kernel_rows(lowered)) == 3 and all("dynamic int8 linear" in r for r in _kernel_rows(lowered))
    # the reference form runs an fp32 GEMM on dequantized values: same math, other summation order
    torch.testing.assert_close(lowered(x), reference(x), rtol=1e-5, atol=1e-5)
    assert (lowered(x) - model(x)).abs().max() < 0.1


@torch.no_grad()
def test_int4_weight_only_lowered_and_portable(tmp_path):
    model, x, lowered, reference = _convert({"is_weight_only": True, "group_size": 32})
    report = quantplug.explain(lowered)
    assert [r.op for r in report.kernels] == ["linear_int4"] * 2
    # the plugin's op lives in its own namespace, never in the core's "quantplug"
    int4_nodes = [n for n in lowered.graph.nodes if n.op == "call_function" and "linear_int4" in str(op_of(n.target))]
    assert [op_of(n.target).namespace for n in int4_nodes] == ["quantplug_arm_xnnpack"] * 2
    assert not hasattr(torch.ops.quantplug, "xnnpack_linear_int4")
    assert any(r.op == "linear" and r.runs_as == "float" for r in report.rows)  # fc3: K=10
    torch.testing.assert_close(lowered(x), reference(x), rtol=1e-5, atol=1e-5)
    buffer = io.BytesIO()
    pickle.dump(lowered, buffer)
    buffer.seek(0)
    assert torch.equal(pickle.load(buffer)(x), lowered(x))
    torch.export.export(lowered, (x,))  # fake kernels: the lowered model still exports
    path = tmp_path / "int4.safetensors"
    quantplug.save(lowered, str(path))
    assert torch.equal(quantplug.load(str(path))(x), lowered(x))


@torch.no_grad()
@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_weight_only_lowered_and_portable(tmp_path, per_channel):
    model, x, lowered, reference = _convert({"is_weight_only": True, "weight_only_dtype": "int8",
                                             "is_per_channel": per_channel})
    report = quantplug.explain(lowered)
    assert [r.op for r in report.kernels] == ["linear_weight_only"] * 3  # every linear, K=10 included
    assert all("f32_qc8w" in r.detail for r in report.kernels)
    # four FMA chains over k mod 4 vs the reference's fp32 GEMM of dequantized weights: rounding only
    torch.testing.assert_close(lowered(x), reference(x), rtol=1e-5, atol=1e-5)
    assert (lowered(x) - model(x)).abs().max() < 0.05
    path = tmp_path / "int8wo.safetensors"
    quantplug.save(lowered, str(path))
    assert torch.equal(quantplug.load(str(path))(x), lowered(x))
    torch.export.export(lowered, (x,))


def test_weight_only_dtype_option_is_checked():
    with pytest.raises(ValueError, match="weight_only_dtype"):
        XNNPACKQuantizer(is_weight_only=True, weight_only_dtype="int2")
