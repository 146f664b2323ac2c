"""End to end through the core's PT2E flow: prepare, calibrate, convert, lower to this plugin's kernels."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import quantplug

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
def test_int4_weight_only_lowered_and_portable():
    model, x, lowered, reference = _convert({"is_weight_only": True, "group_size": 32})
    report = quantplug.explain(lowered)
    assert [r.op for r in report.kernels] == ["xnnpack_linear_int4"] * 2
    assert any(r.op == "linear" and r.runs_as == "float" for r in report.rows)  # fc3: K=10
    torch.testing.assert_close(lowered(x), reference(x), rtol=1e-5, atol=1e-5)
    buffer = io.BytesIO()
    pickle.dump(lowered, buffer)
    buffer.seek(0)
    assert torch.equal(pickle.load(buffer)(x), lowered(x))
    torch.export.export(lowered, (x,))  # fake kernels: the lowered model still exports
