"""The eager flow under ``torch.distributed``: 2 gloo processes on this machine.

One ``torch.multiprocessing.spawn`` (file:// rendezvous) runs every scenario
in both ranks and writes the results to disk; the tests compare them with a
single-process run of the same computation:

* QAT under ``DistributedDataParallel``: each rank trains on its half of every
  global batch. Observers all-reduce their statistics on every step
  (``prepare_qat`` turns that on), DDP averages the gradients, so both ranks
  hold the same model as one process trained on the whole batch, up to float
  summation order in the gradient all-reduce. Stated tolerance: the
  converted models of the two ranks are bit-identical; against the single
  process, activation qparams agree to 1e-5 relative, int8 weights differ by at
  most 1 LSB in at most 0.5% of the entries, and the converted outputs agree
  within 2 output quantization steps (2 * output scale).
* calibration: each rank calibrates on half of the data; after
  ``sync_observers`` min/max observers hold exactly the qparams of one process
  that saw all of it; histogram observers (re-binned merge) agree to 1%
  relative in scale and 1 step in zero point.
* FSDP: see :func:`_fsdp_qat` and ``test_fsdp_qat``.

The backend is the one ``quantize_`` picks on this machine (``reference``
without plugins, or when the pick has no int8 conv kernel), so the same test
checks a plugin's kernels where installed.
"""

from __future__ import annotations

import os
import pickle
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import quantplug
from quantplug.distributed import observers, sync_observers

WORLD = 2
STEPS = 4
GLOBAL_BATCH = 16


def _net() -> nn.Module:
    """conv-relu, conv-relu, linear-relu, linear (no batch norm: its statistics are per rank under DDP)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5))


def _batches(n: int, rows: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(rows, 1, 8, 8, generator=g) * (1 + i % 3), torch.randint(0, 5, (rows,), generator=g))
            for i in range(n)]


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    per = t.shape[0] // world
    return t[rank * per:(rank + 1) * per]


def _qat_train(model: nn.Module, rank: int, world: int) -> nn.Module:
    """The QAT loop every scenario runs: SGD on each rank's shard of the same global batches."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for x, y in _batches(STEPS, GLOBAL_BATCH, seed=1):
        loss = nn.functional.cross_entropy(model(_shard(x, rank, world)), _shard(y, rank, world))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _converted_summary(model: nn.Module) -> dict:
    """What the converted model computes and holds: outputs on fixed inputs, qparams, int8 weights."""
    x = _batches(1, 8, seed=7)[0][0]
    with torch.no_grad():
        out = model(x)
    return {"out": out, "state": {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)},
            "types": [type(m).__name__ for m in model.modules()]}


def _ddp_qat(rank: int, world: int, backend: str) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _net()
    quantplug.prepare_qat(model, quantplug.QATConfig(), backend=backend)
    _qat_train(DDP(model), rank, world)
    model.eval()
    quantplug.convert(model)
    return _converted_summary(model)


def _calibration(rank: int, world: int, backend: str) -> dict:
    """Each rank calibrates on its half of the data; qparams of every observer after the sync."""
    data = _batches(2, 16, seed=3)
    result = {}
    for obs_kind in ("minmax", "histogram"):
        model = _net().eval()
        quantplug.quantize_(model, quantplug.Int8StaticActivationInt8WeightConfig(act_observer=obs_kind),
                            backend=backend)
        with quantplug.distributed.distributed_calibration(model):
            for x, _ in data:
                model(_shard(x, rank, world))
        result[obs_kind] = {n: tuple(t.clone() for t in o.calculate_qparams()) for n, o in observers(model)}
        result[obs_kind + "_synced"] = sync_observers(model)
    return result


def _fsdp_qat(rank: int, world: int, backend: str) -> dict:
    """QAT with FSDP2 ``fully_shard`` on CPU / gloo; records the exception text if this torch cannot."""
    try:
        from torch.distributed.fsdp import fully_shard

        model = _net()
        quantplug.prepare_qat(model, quantplug.QATConfig(), backend=backend)
        for layer in model:
            if any(p.requires_grad for p in layer.parameters(recurse=False)):
                fully_shard(layer)
        fully_shard(model)
        _qat_train(model, rank, world)
        model.eval()
        # gather the full parameters back into ordinary tensors before convert
        model.unshard()
        full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v) for k, v in model.state_dict().items()}
        plain = _net()
        quantplug.prepare_qat(plain, quantplug.QATConfig(), backend=backend)
        plain.load_state_dict(full)
        plain.eval()
        quantplug.convert(plain)
        return {"ok": True, "summary": _converted_summary(plain)}
    except Exception as exc:  # noqa: BLE001 - the test reports it verbatim
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "trace": traceback.format_exc()[-3000:]}


def _worker(rank: int, world: int, init_file: str, out_dir: str, backend: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = {"ddp": _ddp_qat(rank, world, backend), "calib": _calibration(rank, world, backend),
                  "fsdp": _fsdp_qat(rank, world, backend)}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)


def _backend() -> str:
    """The backend quantize_ picks here, unless it has no int8 conv kernel (the nets have convs): reference."""
    from quantplug.nn._common import missing_kernel_ops
    from quantplug.nn.static import CONV_OPS

    b = quantplug.select_backend(quantplug.QATConfig())[0]
    return "reference" if missing_kernel_ops(b, CONV_OPS) else b.name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both ranks' results (one spawn for every scenario) and the single-process reference."""
    out = tmp_path_factory.mktemp("dist")
    backend = _backend()
    threads = torch.get_num_threads()
    # join=False: the single-process reference below is computed while the two ranks run
    ctx = torch.multiprocessing.spawn(_worker, args=(WORLD, str(out / "rendezvous"), str(out), backend),
                                      nprocs=WORLD, join=False)
    torch.set_num_threads(1)
    try:
        single = _net()
        quantplug.prepare_qat(single, quantplug.QATConfig(), backend=backend)
        _qat_train(single, 0, 1)
        single.eval()
        quantplug.convert(single)
        single_calib = {}
        data = _batches(2, 16, seed=3)
        for kind in ("minmax", "histogram"):
            m = _net().eval()
            quantplug.quantize_(m, quantplug.Int8StaticActivationInt8WeightConfig(act_observer=kind), backend=backend)
            with torch.no_grad():
                for x, _ in data:
                    m(x)
            single_calib[kind] = {n: o.calculate_qparams() for n, o in observers(m)}
    finally:
        torch.set_num_threads(threads)
        while not ctx.join():  # raises if a rank failed, with its traceback
            pass
    ranks = [pickle.loads(Path(out, f"rank{r}.pkl").read_bytes()) for r in range(WORLD)]
    return {"ranks": ranks, "single": _converted_summary(single), "single_calib": single_calib, "backend": backend}


def _assert_close_to_single(got: dict, single: dict) -> None:
    assert got["types"] == single["types"]
    for k, ref in single["state"].items():
        v = got["state"][k]
        if v.dtype == torch.int8:  # int8 weights: rounding may flip where a float sum order differs
            diff = (v.to(torch.int16) - ref.to(torch.int16)).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005, k
        elif v.is_floating_point():
            assert torch.allclose(v, ref, rtol=1e-5, atol=1e-6), k
        else:
            assert torch.equal(v, ref), k
    out_scale = [v for k, v in single["state"].items() if k.endswith("output_scale")][-1]
    assert (got["out"] - single["out"]).abs().max() <= 2 * float(out_scale) + 1e-6


def test_ddp_qat_ranks_identical_and_match_single_process(runs):
    r0, r1 = runs["ranks"][0]["ddp"], runs["ranks"][1]["ddp"]
    assert r0["types"] == r1["types"] and "QuantizedLinear" in r0["types"] and "QuantizedConv2d" in r0["types"]
    assert torch.equal(r0["out"], r1["out"])
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    _assert_close_to_single(r0, runs["single"])


@pytest.mark.parametrize("kind", ["minmax", "histogram"])
def test_distributed_calibration_equals_one_process_on_all_data(runs, kind):
    single = runs["single_calib"][kind]
    r0, r1 = runs["ranks"][0]["calib"], runs["ranks"][1]["calib"]
    assert r0[kind + "_synced"] == len(single) > 0
    for name, (scale, zp) in single.items():
        s0, z0 = r0[kind][name]
        s1, z1 = r1[kind][name]
        assert torch.equal(s0, s1) and torch.equal(z0, z1), name  # ranks agree exactly
        if kind == "minmax":
            assert torch.equal(s0, scale) and torch.equal(z0, zp), name
        else:
            assert torch.allclose(s0, scale, rtol=0.01), (name, s0, scale)
            assert (z0.to(torch.int32) - zp.to(torch.int32)).abs().max() <= 1, name


def test_fsdp_qat(runs):
    """FSDP2 (``fully_shard``) on CPU with gloo: QAT trains and converts like DDP."""
    f0, f1 = runs["ranks"][0]["fsdp"], runs["ranks"][1]["fsdp"]
    if not f0["ok"]:
        pytest.fail(f"FSDP on CPU/gloo failed: {f0['error']}\n{f0['trace']}")
    assert f1["ok"]
    assert torch.equal(f0["summary"]["out"], f1["summary"]["out"])
    _assert_close_to_single(f0["summary"], runs["single"])
