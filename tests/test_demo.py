"""The demo's bookkeeping (``examples/demo.py``), on the core's reference backend.

What must hold: a case with further flows gives one row per backend and flow, each scored,
timed and compared with the torch.ao engine; the table prints every row. ``make demo`` runs
the real models; this test only checks the rows it builds, on a tiny model.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import torch
from torch import nn

import quantplug

REPO = Path(__file__).resolve().parents[1]


def _demo():
    # The demo puts benchmarks/ and examples/ first on sys.path when imported; undo that so
    # their modules (benchmarks/models.py) cannot shadow the tests' own afterwards.
    path, modules = list(sys.path), set(sys.modules)
    spec = importlib.util.spec_from_file_location("quantplug_demo", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if name in ("common", "models", spec.name):
                del sys.modules[name]
    return module


def _eager_static(x: torch.Tensor):
    def run(fp32: nn.Module, backend: str) -> nn.Module:
        model = copy.deepcopy(fp32).eval()
        quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(), backend=backend)
        with torch.no_grad():
            model(x)
        return quantplug.convert(model)

    return run


def test_more_flows_give_a_row_per_backend_and_flow(tmp_path, monkeypatch):
    demo = _demo()
    monkeypatch.setattr(demo, "timed", lambda model, args: 1e-3)  # timing is the benchmarks' job
    torch.manual_seed(0)
    fp32 = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(8, 16)
    def score(m: nn.Module) -> float:
        with torch.no_grad():
            return demo.cosine(fp32(x), m(x))

    case = demo.Case("tiny", "eager", "cosine", lambda: fp32, (x,), _eager_static(x), None, score, "batch 8",
                     more_flows={"graph": demo.graph_static([(x,)])})
    rows = demo.run_case(case, [quantplug.get_backend("reference")], tmp_path)

    assert [(r["backend"], r["flow"]) for r in rows] == [("fp32", "-"), ("reference", "eager"),
                                                          ("reference", "graph")]
    for r in rows[1:]:
        assert "error" not in r, r
        assert 0.99 < r["quality"] <= 1.0 + 1e-9  # int8 of a tiny MLP stays close to fp32
        assert r["bytes"] > 0 and not math.isnan(r["bytes"])  # measured (a tiny model's recipe outweighs it)
    table = demo.format_table(rows)
    assert "| tiny | reference | eager |" in table and "| tiny | reference | graph |" in table
