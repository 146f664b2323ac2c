"""What the torch dispatcher alone costs a Python-implemented op with ``quantplug::linear``'s schema.

An exported program (or a ``torch.compile`` graph) calls our ops through the dispatcher, which
``bench_kernels.py`` reports as "+7-8 us over the direct kernel" at 1x768x768. This script
measures the part of that no plugin can remove: a scratch op declared with the same schema as
``quantplug::linear`` (``core/quantplug/lowering.py``) whose Python body returns its input
unchanged, registered under several dispatch keys, against calling that body directly. Whatever
the scratch op costs is argument boxing and dispatch, not our kernels or wrappers; only a C++ op
registration would remove it. Two slimmer schemas (``x`` and the packed tensors only; ``x``
alone) show what folding the scalars into fewer arguments could save at most. One thread,
median of interleaved rounds (the machine is shared).

    python benchmarks/bench_dispatch_floor.py
"""

from __future__ import annotations

import statistics
import time

import torch

from common import markdown_table

SCHEMA = ("(Tensor x, float x_scale, int x_zero_point, Tensor[] packed, Tensor? bias, float out_scale, "
          "int out_zero_point, bool relu, int n, str backend) -> Tensor")
KEYS = ("CPU", "CompositeExplicitAutograd", "CompositeImplicitAutograd")


def _identity(x, x_scale, x_zero_point, packed, bias, out_scale, out_zero_point, relu, n, backend):
    """The op body: does no work, so any time measured is the calling convention's."""
    return x


def _define_ops(lib: torch.library.Library) -> dict[str, object]:
    """The scratch ops: ``quantplug::linear``'s schema under each key in ``KEYS``, and the two
    slimmer schemas (CPU key); name -> op overload."""
    ns = torch.ops.quantplug_dispatch_bench
    ops = {}
    for i, key in enumerate(KEYS):
        lib.define(f"op{i}" + SCHEMA)
        lib.impl(f"op{i}", _identity, key)
        ops[key] = getattr(ns, f"op{i}").default
    lib.define("slim_packed(Tensor x, Tensor[] packed) -> Tensor")
    lib.impl("slim_packed", lambda x, packed: x, "CPU")
    lib.define("slim_x(Tensor x) -> Tensor")
    lib.impl("slim_x", lambda x: x, "CPU")
    ops["slim_packed"], ops["slim_x"] = ns.slim_packed.default, ns.slim_x.default
    return ops


def _per_call_us(fn, args, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    torch.set_num_threads(1)
    lib = torch.library.Library("quantplug_dispatch_bench", "DEF")  # alive until main returns
    ops = _define_ops(lib)
    x = torch.randint(0, 255, (1, 768), dtype=torch.uint8)
    packed = [torch.zeros(16) for _ in range(6)]  # as many tensors as a packed linear weight holds
    args = (x, 0.1, 3, packed, torch.zeros(768), 0.2, 4, False, 768, "fbgemm")
    cases = {"Python body called directly": (_identity, args)}  # name -> (callable, its arguments)
    cases.update({f"op via dispatcher, {key}": (ops[key], args) for key in KEYS})
    cases["slimmer schema (Tensor x, Tensor[] packed), CPU"] = (ops["slim_packed"], (x, packed))
    cases["slimmest schema (Tensor x), CPU"] = (ops["slim_x"], (x,))
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(7):  # interleaved rounds
        for name, (fn, fn_args) in cases.items():
            times[name].append(_per_call_us(fn, fn_args, 20000))
    with torch.inference_mode():
        times["op via dispatcher, CPU, under inference_mode"] = [_per_call_us(ops["CPU"], args, 20000)
                                                                 for _ in range(7)]
    base = statistics.median(times["Python body called directly"])
    rows = [[name, f"{statistics.median(t):.2f}", f"{statistics.median(t) - base:+.2f}"] for name, t in times.items()]
    print(f"Per call, quantplug::linear's schema, body does nothing, 1 thread, median of 7 rounds of 20000 calls "
          f"(torch {torch.__version__})\n")
    print(markdown_table(["call", "us per call", "vs the body alone"], rows))


if __name__ == "__main__":
    main()
