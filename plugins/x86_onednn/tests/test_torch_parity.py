"""Parity with torch's own quantized engines ``x86`` and ``onednn`` (same numerics family).

Measured on AVX-512 VNNI (Zen 4): static linear, linear_relu, conv2d, conv2d_relu and
add are bit-identical to both engines, including full-range uint8 x int8 extremes at
K = 4096; onednn's fused conv2d_add(_relu) differs by 1 LSB on rare outputs when a
bias is present. The allowed difference is 1 LSB, for these reasons:

* torch/oneDNN add the bias in float after scaling the accumulator
  (``acc * x_scale * w_scale + bias``); quantplug (and the core's reference kernels)
  quantize the bias to int32 first (``round(bias / (x_scale * w_scale))``), which
  can move a value that sits near a rounding boundary by one step;
* oneDNN's sum post-op scales and adds in its own order.

Dynamic linear returns fp32: same activation qparams, so the outputs agree to float32
rounding of the dequantization (relative 1e-5).

Each engine runs in a subprocess (tests/_helpers/torch_engine_parity.py): torch's
onednn engine has crashed in a process that used the x86 engine before.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "_helpers" / "torch_engine_parity.py"


@pytest.fixture(scope="module", params=["x86", "onednn"])
def parity(request):
    engine = request.param
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this torch build has no {engine!r} quantized engine")
    proc = subprocess.run([sys.executable, str(SCRIPT), engine], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"parity run for engine {engine!r} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_static_kernels_within_one_lsb_of_torch(parity):
    static = [c for c in parity["cases"] if "max_lsb" in c]
    assert {c["kind"] for c in static} >= {"linear", "linear_extreme", "conv2d", "add"}
    worst = max(static, key=lambda c: c["max_lsb"])
    assert worst["max_lsb"] <= 1, f"{parity['engine']}: {worst}"
    total, differ = sum(c["n"] for c in static), sum(c["n_diff"] for c in static)
    assert differ <= 0.005 * total, f"{parity['engine']}: {differ} of {total} outputs differ by 1 LSB"


def test_full_range_extremes_identical_to_torch(parity):
    """uint8 0..255 without reduce_range at K=4096: no saturation on either side."""
    extremes = [c for c in parity["cases"] if c["kind"] == "linear_extreme"]
    assert extremes and all(c["max_lsb"] == 0 for c in extremes), extremes


def test_conv_add_fusion_matches_onednn(parity):
    if parity["engine"] != "onednn":
        pytest.skip("torch has quantized::conv2d_add only on the onednn engine")
    fused = [c for c in parity["cases"] if c["kind"] == "conv2d_add"]
    assert len(fused) == 16 and all(c["max_lsb"] <= 1 for c in fused), fused
    assert all(c["max_lsb"] == 0 for c in fused if not c["bias"]), "without bias the fusion must be exact"


def test_dynamic_linear_matches_torch(parity):
    dyn = [c for c in parity["cases"] if c["kind"] == "linear_dynamic"]
    assert dyn
    for c in dyn:
        assert c["max_abs"] <= 1e-5 * max(1.0, c["out_scale"]), c
