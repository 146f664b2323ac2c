"""The main demo: quantize a small model with every installed backend and compare.

Run: ``make demo`` (sets everything up), or ``python examples/demo.py`` in an
environment with quantplug and its plugins installed.

For each backend it runs the graph flow (prepare -> calibrate -> convert,
lowered to the backend's kernels) on a small MLP and CNN and prints one table:
backend, model, weight bytes vs fp32, output SQNR vs fp32, and how many ops
run as backend kernels (``quantplug.explain``).
"""

from __future__ import annotations

import sys
import time

import torch
from torch import nn

import quantplug
from quantplug.affine import sqnr

torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.bn2 = nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.c2(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (quantized models keep int8 / packed buffers)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def run(backend: quantplug.Backend, name: str, model: nn.Module, data: list[torch.Tensor]) -> dict:
    model = model.eval()
    prepared = quantplug.prepare_pt2e(model, backend.get_quantizer(), (data[0],))
    with torch.no_grad():
        for x in data[:-1]:
            prepared(x)
        converted = quantplug.convert_pt2e(prepared)
        x = data[-1]
        ref, out = model(x), converted(x)
    report = quantplug.explain(converted)
    return dict(backend=backend.name, model=name, isa=backend.kernel_isa(),
                bytes=weight_bytes(converted) / weight_bytes(model), sqnr=sqnr(ref, out),
                kernels=len(report.kernels), total=len(report.rows))


def main() -> int:
    backends = quantplug.list_backends()
    print(f"quantplug {quantplug.__version__}: backends installed: {', '.join(b.name for b in backends)}")
    models = {"mlp": (MLP(), [torch.randn(16, 256) for _ in range(9)]),
              "cnn": (CNN(), [torch.randn(4, 3, 32, 32) for _ in range(9)])}
    rows = []
    for b in backends:
        for name, (model, data) in models.items():
            t0 = time.perf_counter()
            print(f"  quantizing {name} with {b.name} ...", file=sys.stderr, flush=True)
            try:
                rows.append(run(b, name, model, data))
            except Exception as exc:  # report and continue: one backend must not hide the others
                rows.append(dict(backend=b.name, model=name, isa=b.kernel_isa(), error=f"{type(exc).__name__}: {exc}"))
            rows[-1]["seconds"] = time.perf_counter() - t0
    print()
    print("| backend | model | kernel isa | weight bytes vs fp32 | SQNR vs fp32 (dB) | ops on backend kernels |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['backend']} | {r['model']} | {r['isa']} | - | - | error: {r['error'][:80]} |")
        else:
            print(f"| {r['backend']} | {r['model']} | {r['isa']} | {r['bytes']:.3f} | {r['sqnr']:.1f} | {r['kernels']}/{r['total']} |")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
