"""Small models the conformance suite quantizes (written here: no torchvision)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SingleLinear", "MLP", "ConvNet", "calibrate"]


class SingleLinear(nn.Module):
    """One linear (+ optional relu): lowered and reference forms round exactly once."""

    def __init__(self, d_in: int = 24, d_out: int = 12, relu: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.relu = relu

    def forward(self, x):
        y = self.fc(x)
        return torch.relu(y) if self.relu else y


class MLP(nn.Module):
    """linear-relu-linear plus a residual add of two linear branches."""

    def __init__(self, d_in: int = 32, d_hidden: int = 48, d_out: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.skip = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) + self.skip(x)


class ConvNet(nn.Module):
    """conv-bn-relu, conv, residual add, pooling, flatten, linear."""

    def __init__(self, classes: int = 10) -> None:
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


def calibrate(model, batches) -> None:
    """Run ``batches`` through ``model`` without gradients."""
    with torch.no_grad():
        for x in batches:
            model(x)
