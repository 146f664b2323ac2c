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


def calibrate(model, inputs):
    with torch.no_grad():
        for x in inputs:
            model(x)
