"""The graph flow end to end: prepare_pt2e -> calibrate -> convert_pt2e lowers to the qnnpack kernels.

Checks that conv, depthwise conv, mul, add, max pool and the lookup-table ops
(the plugin's own ``quantplug_qnnpack::lookup``) are all lowered, that the
lowered model stays within a few quantization steps of the reference
representation, and that it survives ``quantplug.save`` / ``load`` and
``torch.export``.
"""

from __future__ import annotations

import copy

import pytest
import torch

import quantplug
from quantplug import convert_pt2e, get_quantizer, prepare_pt2e
from quantplug.direct_calls import op_of
from quantplug.specs import EXPLAIN_KEY


class Block(torch.nn.Module):
    """conv+relu, depthwise conv, sigmoid / tanh / hardsigmoid, mul, add, max pool."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        z = self.dw(y)
        gate = torch.sigmoid(z)
        p = torch.nn.functional.max_pool2d(y * z + gate, 2)
        return p, torch.tanh(z), torch.nn.functional.hardsigmoid(z)


@pytest.fixture(scope="module")
def converted():
    torch.manual_seed(0)
    model = Block().eval()
    example = torch.randn(2, 3, 16, 16)
    prepared = prepare_pt2e(model, get_quantizer("qnnpack"), (example,))
    for _ in range(4):
        prepared(torch.randn(2, 3, 16, 16))
    reference = convert_pt2e(copy.deepcopy(prepared), lower=False)
    return reference, convert_pt2e(prepared), example


def _targets(gm):
    return [str(op_of(n.target)) for n in gm.graph.nodes if n.op == "call_function"]


def test_every_pattern_is_lowered(converted):
    _, lowered, _ = converted
    targets = _targets(lowered)
    assert targets.count("quantplug_qnnpack.lookup.default") == 3, targets
    for op in ("conv2d", "mul", "add", "max_pool2d"):
        assert f"quantplug.{op}.default" in targets, (op, targets)
    assert not any(t.startswith("aten.sigmoid") or t.startswith("aten.tanh") for t in targets)
    notes = [n.meta.get(EXPLAIN_KEY, "") for n in lowered.graph.nodes if "lookup" in str(op_of(n.target))]
    assert all("lookup-table" in note for note in notes), notes
    assert "not lowered: 0" in str(quantplug.explain(lowered))


def test_lowered_close_to_reference(converted):
    reference, lowered, example = converted
    for want, got, step in zip(reference(example), lowered(example), (None, 2 / 256, 1 / 256)):
        # the integer conv rounds once where the reference rounds in float: a step or two apart,
        # and the fixed-qparams outputs inherit at most that
        tol = 3 * (step or float(want.abs().max()) / 64)
        assert float((want - got).abs().max()) <= tol


def test_lookup_op_is_bit_exact_with_its_chain(kernels):
    # dq -> sigmoid -> q against the lowered op on the same integers
    x = torch.arange(256, dtype=torch.int32).to(torch.uint8).reshape(4, 64)
    table = kernels.lut_table("sigmoid", 0.07, 90)
    got = torch.ops.quantplug_qnnpack.lookup(x, table)
    deq = torch.ops.quantplug.dequantize_per_tensor(x, 0.07, 90, 0, 255, torch.uint8)
    want = torch.ops.quantplug.quantize_per_tensor(torch.sigmoid(deq), 1 / 256, 0, 0, 255, torch.uint8)
    assert torch.equal(got, want)


def test_save_load_and_export_keep_the_plugin_ops(converted, tmp_path):
    _, lowered, example = converted
    path = quantplug.save(lowered, tmp_path / "block.qp")
    loaded = quantplug.load(path)
    for a, b in zip(lowered(example), loaded(example)):
        assert torch.equal(a, b)
    exported = torch.export.export(lowered, (example,))
    assert any("quantplug_qnnpack.lookup" in str(n.target) for n in exported.graph.nodes)
