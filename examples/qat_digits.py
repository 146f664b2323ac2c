"""QAT recovers accuracy: a small CNN on scikit-learn's digits, fp32 vs PTQ vs QAT per backend.

    python examples/qat_digits.py                 # every installed backend with static + qat modes
    python examples/qat_digits.py --backends fbgemm xnnpack --epochs 30

For each backend it trains one fp32 model (shared), then

* PTQ: ``quantize_(Int8StaticActivationInt8WeightConfig())`` + calibration
  on training images + ``convert``;
* QAT: ``prepare_qat(QATConfig())`` from the fp32 weights, a few epochs of
  fine-tuning with the backend's fake quantization, ``convert``;

and prints a markdown table of test accuracy (the int8 models run the
backend's kernels). Digits is easy: int8 PTQ is already within a fraction of a
point of fp32, so a second table does the same with int4 group-wise weights
(``Int4WeightOnlyConfig`` vs ``QATConfig(target="weight_only",
weight_dtype="int4")``) on the backends that have int4 kernels, where PTQ
loses more and QAT wins it back.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import quantplug


def load_digits_tensors(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``: 8x8 images as float tensors ``[N, 1, 8, 8]``, 25% held out."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_test = len(y) // 4
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


class DigitsCNN(nn.Module):
    """conv-relu, conv-bn-relu, pool, linear-relu, linear (every fusion pattern of the eager flow)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 16, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        y = self.relu1(self.conv1(x))
        y = self.pool(self.relu2(self.bn2(self.conv2(y))))
        return self.fc2(self.relu3(self.fc1(y.flatten(1))))


def train(model: nn.Module, x, y, *, epochs: int, lr: float, batch: int = 64, seed: int = 0) -> nn.Module:
    """Adam + cross-entropy, shuffled mini-batches (deterministic for a seed)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    """Top-1 accuracy in [0, 1]."""
    model.eval()
    return (model(x).argmax(1) == y).float().mean().item()


def ptq(fp32: nn.Module, backend: str, x_cal) -> nn.Module:
    """Static int8 PTQ with calibration on ``x_cal``."""
    model = copy.deepcopy(fp32).eval()
    quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend=backend)
    with torch.no_grad():
        for i in range(0, len(x_cal), 256):
            model(x_cal[i:i + 256])
    return quantplug.convert(model)


def qat(fp32: nn.Module, backend: str, x, y, *, epochs: int, lr: float, learn_ranges: bool = False) -> nn.Module:
    """QAT fine-tuning from the fp32 weights, then convert."""
    model = copy.deepcopy(fp32)
    quantplug.prepare_qat(model, quantplug.QATConfig(learn_ranges=learn_ranges), backend=backend)
    train(model, x, y, epochs=epochs, lr=lr, seed=1)
    return quantplug.convert(model.eval())


def ptq_int4(fp32: nn.Module, backend: str, group_size: int = 32) -> nn.Module:
    """int4 group-wise weight-only PTQ of the Linear layers (no calibration needed)."""
    model = copy.deepcopy(fp32).eval()
    quantplug.quantize_(model, quantplug.Int4WeightOnlyConfig(group_size=group_size), backend=backend)
    return model


def qat_int4(fp32: nn.Module, backend: str, x, y, *, epochs: int, lr: float, group_size: int = 32,
             learn_ranges: bool = True) -> nn.Module:
    """int4 weight-only QAT of the Linear layers (LSQ scales by default), then convert."""
    model = copy.deepcopy(fp32)
    quantplug.prepare_qat(model, quantplug.QATConfig(target="weight_only", weight_dtype="int4", group_size=group_size,
                                                     learn_ranges=learn_ranges), backend=backend)
    train(model, x, y, epochs=epochs, lr=lr, seed=1)
    return quantplug.convert(model.eval())


def run(backends, *, epochs: int = 20, qat_epochs: int = 4, seed: int = 0, int4: bool = True) -> list[dict]:
    """Train once, then PTQ and QAT per backend; returns one row per backend and scheme.

    This is the function ``examples/demo.py`` (and the tests) call. Row keys:
    ``backend, scheme, fp32, fp32_ft, ptq, qat, seconds`` (accuracies in
    [0, 1]); a backend that cannot run the scheme gets ``ptq = qat = None``
    and a ``note`` with the reason.
    """
    torch.manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_digits_tensors(seed)
    fp32 = train(DigitsCNN(), x_tr, y_tr, epochs=epochs, lr=2e-3, seed=seed)
    acc32 = accuracy(fp32, x_te, y_te)
    # Control: the same extra fine-tuning QAT gets, in fp32, so QAT's gain is not mistaken for
    # the benefit of more epochs.
    acc32_ft = accuracy(train(copy.deepcopy(fp32), x_tr, y_tr, epochs=qat_epochs, lr=5e-4, seed=1), x_te, y_te)
    rows = []
    for b in backends:
        t = time.perf_counter()
        try:
            a_ptq = accuracy(ptq(fp32, b, x_tr), x_te, y_te)
        except quantplug.BackendCapabilityError as exc:  # e.g. no int8 conv kernel: say so, do not fake a number
            rows.append(dict(backend=b, scheme="int8 static", fp32=acc32, fp32_ft=acc32_ft, ptq=None, qat=None,
                             seconds=0.0, note=str(exc).split(". ")[0]))
            continue
        a_qat = accuracy(qat(fp32, b, x_tr, y_tr, epochs=qat_epochs, lr=5e-4), x_te, y_te)
        rows.append(dict(backend=b, scheme="int8 static", fp32=acc32, fp32_ft=acc32_ft, ptq=a_ptq, qat=a_qat,
                         seconds=time.perf_counter() - t))
    for b in backends if int4 else ():
        try:
            quantplug.select_backend(quantplug.Int4WeightOnlyConfig(), b)
        except quantplug.BackendCapabilityError:
            continue  # no int4 kernel on this backend
        t = time.perf_counter()
        a_ptq = accuracy(ptq_int4(fp32, b), x_te, y_te)
        a_qat = accuracy(qat_int4(fp32, b, x_tr, y_tr, epochs=qat_epochs, lr=5e-4), x_te, y_te)
        rows.append(dict(backend=b, scheme="int4 weight-only g32", fp32=acc32, fp32_ft=acc32_ft, ptq=a_ptq, qat=a_qat,
                         seconds=time.perf_counter() - t))
    return rows


def _default_backends() -> list[str]:
    return [b.name for b in quantplug.list_backends() if {"static", "qat"} <= set(b.modes)]


def main(argv=None) -> None:
    """Command-line entry: print the accuracy table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="*", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--qat-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = run(args.backends or _default_backends(), epochs=args.epochs, qat_epochs=args.qat_epochs, seed=args.seed)
    print(f"\nscikit-learn digits, {len(load_digits_tensors(args.seed)[3])} test images, DigitsCNN "
          f"(fp32 {args.epochs} epochs, QAT {args.qat_epochs} epochs from fp32)\n")
    print(format_table(rows))


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`run` as a markdown table (backends that cannot run a scheme say why)."""
    out = ["| backend | scheme | fp32 | fp32 + same fine-tuning | PTQ | QAT | QAT - PTQ |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ptq"] is None:
            out.append(f"| {r['backend']} | {r['scheme']} | {r['fp32']:.2%} | {r['fp32_ft']:.2%} | n/a | n/a | "
                       f"{r['note']} |")
            continue
        out.append(f"| {r['backend']} | {r['scheme']} | {r['fp32']:.2%} | {r['fp32_ft']:.2%} | {r['ptq']:.2%} | "
                   f"{r['qat']:.2%} | {r['qat'] - r['ptq']:+.2%} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
