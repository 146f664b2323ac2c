"""QAT on exported graphs: train/eval switching, conv-bn simulated folding, convert matches fake quant."""

import torch

import quantplug
from quantplug.builtin_plugin import ReferenceQuantizer
from quantplug.direct_calls import op_of
from tests.models import ConvBNDrop, qat_train_and_convert

torch.manual_seed(0)


def _dropout_and_bn_args(gm):
    drops = [n.args for n in gm.graph.nodes if n.target == torch.ops.aten.dropout.default]
    bns = [n.args[5:8] for n in gm.graph.nodes if n.target == torch.ops.aten.batch_norm.default]
    return drops, bns


def _prepared():
    model = ConvBNDrop().train()
    return quantplug.prepare_qat_pt2e(model, ReferenceQuantizer(is_qat=True), (torch.randn(4, 3, 8, 8),))


def test_train_eval_switch_keeps_each_modules_settings():
    gm = _prepared()
    # each module keeps its own p / momentum / eps through every switch (the PT2E bug reset them)
    def settings(training):
        drops, bns = _dropout_and_bn_args(gm)
        assert sorted(d[1:] for d in drops) == [(0.25, training), (0.6, training)]
        assert sorted(bns) == sorted([(training, 0.2, 1e-3), (training, 0.05, 1e-5)])

    settings(True)
    quantplug.move_exported_model_to_eval(gm)
    settings(False)
    quantplug.move_exported_model_to_train(gm)
    settings(True)
    quantplug.allow_exported_model_train_eval(gm)
    gm.eval()
    settings(False)
    gm.train()
    settings(True)
    gm.eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), gm(x))  # eval: dropout off, BN uses running stats


def test_conv_bn_is_trained_in_folded_form():
    gm = _prepared()
    targets = [op_of(n.target) for n in gm.graph.nodes]
    # the weight fake-quant sees w * gamma / sqrt(var + eps), and the conv output is un-scaled after
    assert torch.ops.aten.sqrt.default in targets and torch.ops.aten.div.Tensor in targets


def test_qat_training_then_convert_matches_fake_quant_model():
    fake, real, converted = qat_train_and_convert(_prepared(), steps=8, lower=False)
    assert not any(n.target == torch.ops.aten.batch_norm.default for n in converted.graph.nodes)
    # The converted model computes the same folded, quantized graph; differences come from
    # fake-quant's float rounding vs integer quantization of the folded weight: allow 2 output steps.
    q_out = [n for n in converted.graph.nodes if op_of(n.target) == torch.ops.quantplug.quantize_per_tensor.default]
    out_scale = q_out[-1].args[1]
    assert (fake - real).abs().max() <= 2 * out_scale + 1e-6
