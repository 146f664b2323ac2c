"""Small models used across tests (written here: no torchvision)."""

import torch
from torch import nn


class MLP(nn.Module):
    """linear-relu-linear."""

    def __init__(self, d_in=32, d_hidden=64, d_out=16):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class SmallCNN(nn.Module):
    """conv-bn-relu, residual add, pooling, flatten, linear."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


class CatModel(nn.Module):
    """Two branches concatenated: cat's inputs and output must share qparams."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 8)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=-1))


class ConvBNDrop(nn.Module):
    """Two conv-bn-relu blocks with their own BN eps/momentum and dropout p, then a linear (QAT tests)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, eps=1e-3, momentum=0.2)
        self.drop = nn.Dropout(p=0.25)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8, eps=1e-5, momentum=0.05)
        self.drop2 = nn.Dropout(p=0.6)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.drop2(torch.relu(self.bn2(self.conv2(y))))
        return self.fc(self.drop(torch.flatten(y, 1)))


def qat_train_and_convert(gm, steps=4, lower=True):
    """Train a QAT-prepared ``ConvBNDrop`` a few SGD steps, then return (fake-quant output,
    converted output, converted model) on the same eval batch."""
    import quantplug

    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    for _ in range(steps):
        loss = gm(torch.randn(8, 3, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    quantplug.move_exported_model_to_eval(gm)
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        fake = gm(x)
        converted = quantplug.convert_pt2e(gm, lower=lower)
        return fake, converted(x), converted


def calibrate(model, inputs):
    with torch.no_grad():
        for x in inputs:
            model(x)


class OpsCNN(nn.Module):
    """Every pattern the backends annotate: conv1d, depthwise conv, conv-bn-relu6, add(+relu), mul,
    cat, max / avg / adaptive-avg pools, flatten / reshape / permute, linear."""

    def __init__(self, classes=10, size=16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU6()
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.branch = nn.Conv2d(16, 8, 1)
        self.gate = nn.Conv2d(16, 16, 1)
        self.conv1d = nn.Conv1d(16, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.adapt = nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(24 * 4 + 8 * (size // 2) ** 2, classes)  # input size x size

    def forward(self, x):
        y = self.act1(self.bn1(self.conv1(x)))                 # conv-bn-relu6
        y = self.pool(y)                                         # size/2
        z = torch.relu(self.pw(self.dw(y)) + y)                  # depthwise, add-relu
        g = self.gate(z) * z                                     # mul of two activations
        c = torch.cat([self.branch(g), self.branch(z)], dim=1)   # cat (shared qparams), 16 channels
        c = torch.cat([c, self.branch(g)], dim=1)                # 24 channels
        a = self.adapt(self.avg(c))                              # avg pool 4x4, adaptive 2x2
        seq = z.flatten(2)                                       # [N, 16, 64]
        s = self.conv1d(seq).permute(0, 2, 1).reshape(x.shape[0], -1)  # conv1d, permute, reshape
        return self.fc(torch.cat([torch.flatten(a, 1), s], dim=1))


class AttentionBlock(nn.Module):
    """Single-head self-attention with an MLP: linear projections, two activation matmuls, softmax."""

    def __init__(self, d=32, hidden=64):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.scale = d ** -0.5

    def forward(self, x):
        att = torch.softmax(torch.matmul(self.q(x), self.k(x).transpose(-2, -1)) * self.scale, dim=-1)
        h = self.o(torch.matmul(att, self.v(x))) + x
        return self.fc2(torch.relu(self.fc1(h))) + h
