"""Per-call cost of a lowered ``quantplug::linear`` node vs the plugin's raw kernel call vs torch's int8 linear.

Shape 1x768x768 (one token through a BERT-base projection), one thread. The node is taken from
a model converted by ``convert_pt2e`` (its buffers, its arguments). "lowered" is what the
converted model calls in eager execution: the op's direct-call function
(``quantplug.direct_calls``), i.e. the packed-object lookup and the plugin's Python wrapper
without the dispatcher. "op" is the ``torch.library`` op through the dispatcher (what an
exported program or ``torch.compile`` graph calls). "op, no cache" is the op with the cached
packed object dropped before each call, i.e. rebuilding the plugin's packed dataclass on every
call (what lowering did before the cache). Calls are interleaved (A, B, C, A, B, C...) and the median of
several rounds is reported, because the machine is shared.

    python benchmarks/bench_lowered_linear_overhead.py
"""

import statistics
import time
import warnings

import torch

import quantplug
from quantplug.direct_calls import op_of
from quantplug.kernels import _HOLDER_ATTR
from quantplug.lowering import _packed_object

warnings.filterwarnings("ignore")
K = N = 768
TORCH_ENGINE = {"x86_onednn": "x86", "fbgemm": "fbgemm", "qnnpack": "qnnpack"}


def lowered_linear(backend: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(K, N)).eval()
    x = torch.randn(4, K)
    prepared = quantplug.prepare_pt2e(model, quantplug.get_quantizer(backend), (x,))
    prepared(x)
    gm = quantplug.convert_pt2e(prepared)
    node = next(n for n in gm.graph.nodes if op_of(n.target) == torch.ops.quantplug.linear.default)
    assert node.target is not torch.ops.quantplug.linear.default, "the converted model should use the direct call"
    fetch = lambda a: getattr(gm, a.target) if isinstance(a, torch.fx.Node) and a.op == "get_attr" else a  # noqa: E731
    args = [([fetch(t) for t in a] if isinstance(a, list) else fetch(a)) for a in node.args]
    quantize = (torch.ops.quantplug.quantize_per_tensor.default, torch.ops.quantplug.quantize_per_tensor_kernel.default)
    q_in = next(n for n in gm.graph.nodes if op_of(n.target) in quantize)
    args[0] = q_in.target(torch.randn(1, K), *q_in.args[1:])
    return model, args, node.target


def timed(fns, n=400, rounds=9):
    per = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(20):
                fn()
            t = time.perf_counter()
            for _ in range(n):
                fn()
            per[k].append((time.perf_counter() - t) / n * 1e6)
    return {k: statistics.median(v) for k, v in per.items()}


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'backend':<11} {'lowered':>8} {'op':>6} {'op, no cache':>12} {'raw kernel':>10} {'torch int8':>10} "
          f"{'overhead':>8} {'op overhead':>11}  (us per call, 1x{K}x{N}; overhead = lowered - raw kernel)")
    for backend in ("x86_onednn", "fbgemm", "xnnpack", "qnnpack"):
        model, args, lowered = lowered_linear(backend)
        x_q, xs, xz, packed, bias, os_, oz, relu, n, name = args
        kernels = quantplug.get_backend(backend).kernels
        obj = _packed_object(name, "linear", packed)
        fns = {
            "lowered": lambda: lowered(*args),
            "op": lambda: torch.ops.quantplug.linear.default(*args),
            "raw": lambda: kernels.linear(x_q, xs, xz, obj, bias, os_, oz, relu=relu),
        }
        if backend in TORCH_ENGINE:
            torch.backends.quantized.engine = TORCH_ENGINE[backend]
            w = model[0].weight.detach()
            scales = w.abs().amax(1).double() / 127
            wq = (torch.quantize_per_channel(w, scales, torch.zeros(N, dtype=torch.long), 0, torch.qint8)
                  if backend != "qnnpack" else torch.quantize_per_tensor(w, float(scales.max()), 0, torch.qint8))
            pk = torch.ops.quantized.linear_prepack(wq, model[0].bias.detach())
            tx = torch.quantize_per_tensor(torch.randn(1, K), 0.05, 64, torch.quint8)
            fns["torch"] = lambda: torch.ops.quantized.linear(tx, pk, 0.1, 64)
        fns["op_nocache"] = lambda: (delattr(packed[0], _HOLDER_ATTR),
                                     torch.ops.quantplug.linear.default(*args))
        t = timed(fns)
        print(f"{backend:<11} {t['lowered']:>8.1f} {t['op']:>6.1f} {t['op_nocache']:>12.1f} {t['raw']:>10.1f} "
              f"{t.get('torch', float('nan')):>10.1f} {t['lowered'] - t['raw']:>8.1f} {t['op'] - t['raw']:>11.1f}")


if __name__ == "__main__":
    main()
