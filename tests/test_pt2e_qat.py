"""QAT on exported graphs: train/eval switching, conv-bn simulated folding, convert matches fake quant."""

import torch
from torch import nn

import quantplug
from quantplug.builtin_plugin import ReferenceQuantizer

torch.manual_seed(0)


class ConvBNDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3, momentum=0.2)
        self.drop = nn.Dropout(p=0.25)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(torch.flatten(y, 1)))


def _dropout_and_bn_args(gm):
    drops = [n.args for n in gm.graph.nodes if n.target == torch.ops.aten.dropout.default]
    bns = [n.args[5:8] for n in gm.graph.nodes if n.target == torch.ops.aten.batch_norm.default]
    return drops, bns


def _prepared():
    model = ConvBNDrop().train()
    return quantplug.prepare_qat_pt2e(model, ReferenceQuantizer(is_qat=True), (torch.randn(4, 3, 8, 8),))


def test_train_eval_switch_keeps_each_modules_settings():
    gm = _prepared()
    drops, bns = _dropout_and_bn_args(gm)
    assert drops[0][1:] == (0.25, True) and bns[0] == (True, 0.2, 1e-3)
    quantplug.move_exported_model_to_eval(gm)
    drops, bns = _dropout_and_bn_args(gm)
    assert drops[0][1:] == (0.25, False) and bns[0] == (False, 0.2, 1e-3)
    quantplug.allow_exported_model_train_eval(gm)
    gm.train()
    drops, bns = _dropout_and_bn_args(gm)
    assert drops[0][1:] == (0.25, True) and bns[0] == (True, 0.2, 1e-3)
    gm.eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), gm(x))  # eval: dropout off, BN uses running stats


def test_conv_bn_is_trained_in_folded_form():
    gm = _prepared()
    targets = [n.target for n in gm.graph.nodes]
    # the weight fake-quant sees w * gamma / sqrt(var + eps), and the conv output is un-scaled after
    assert torch.ops.aten.sqrt.default in targets and torch.ops.aten.div.Tensor in targets


def test_qat_training_then_convert_matches_fake_quant_model():
    gm = _prepared()
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    for _ in range(8):
        x = torch.randn(8, 3, 8, 8)
        loss = gm(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    quantplug.move_exported_model_to_eval(gm)
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        fake = gm(x)
        converted = quantplug.convert_pt2e(gm, lower=False)
        real = converted(x)
    assert not any(n.target == torch.ops.aten.batch_norm.default for n in converted.graph.nodes)
    # The converted model computes the same folded, quantized graph; differences come from
    # fake-quant's float rounding vs integer quantization of the folded weight: allow 2 output steps.
    q_out = [n for n in converted.graph.nodes if n.target == torch.ops.quantplug.quantize_per_tensor.default]
    out_scale = q_out[-1].args[1]
    assert (fake - real).abs().max() <= 2 * out_scale + 1e-6
