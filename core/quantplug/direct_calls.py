"""Graph-node targets that run a lowered op's CPU implementation without the torch dispatcher.

Why: an op implemented in Python through ``torch.library`` pays the dispatcher's argument
boxing on every call. ``python benchmarks/bench_lowered_linear_overhead.py`` measured on this
machine (1x768x768 ``quantplug::linear``, one thread): the op costs 8.2-9.4 us more than the raw
kernel call (itself 12-19 us), the direct call 1.9-2.1 us more. A converted model is a plain
``GraphModule`` run by Python, so its nodes can call the implementation directly.

How:

- A library registers each op's CPU implementation with :func:`impl_cpu` instead of
  ``Library.impl``: same registration, plus a record of the implementation.
- After lowering, :func:`use_direct_calls` points every node whose target is such an op at a
  small function of this module, named after the op (``quantplug__linear__default``). The
  function runs the implementation directly when its first argument is a plain tensor (eager
  execution) and calls the op itself whenever torch traces (``torch.export``,
  ``torch.compile``, fake tensors, FX proxies), so exported programs and compiled graphs hold
  the registered custom op exactly as before.
- :func:`op_of` maps a node target back to its op: ``explain``, ``quantplug.save`` and graph
  queries read targets through it.

The functions are attributes of this module so a pickled ``GraphModule`` imports them again
by name; :func:`__getattr__` loads the installed plugins when unpickling asks for a plugin's
function before the plugin was imported, and :class:`DirectCallTracer` keeps them as they are
when unpickling re-traces the graph.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.fx import GraphModule

__all__ = ["impl_cpu", "use_direct_calls", "op_of", "direct_call", "DirectCallTracer"]

_CALLS: dict[Any, Callable[..., Any]] = {}  # op overload -> its direct-call function
_OPS: dict[Callable[..., Any], Any] = {}  # direct-call function -> op overload


def _call_name(op: Any) -> str:
    namespace, name = op._schema.name.split("::", 1)
    return f"{namespace}__{name}__{op._overloadname}"


def _eager(x: Any) -> bool:
    # Dynamo sets is_compiling(); non-strict export and fake-tensor propagation pass tensor
    # subclasses (FakeTensor, FunctionalTensor) and FX symbolic tracing passes Proxies.
    return type(x) is torch.Tensor and not torch.compiler.is_compiling()


def impl_cpu(lib: torch.library.Library, name: str, impl: Callable[..., Any]) -> None:
    """``lib.impl(name, impl, "CPU")``, and make ``impl`` callable directly from lowered graphs.

    :param lib: the ``torch.library.Library`` that defined the op (``"DEF"`` kind).
    :param name: the op's name in ``lib``'s namespace (overload ``default``).
    :param impl: the CPU implementation; its first parameter must be a ``Tensor`` (it tells
        eager execution from tracing).
    """
    lib.impl(name, impl, "CPU")
    op = getattr(getattr(torch.ops, lib.ns), name).default
    first = op._schema.arguments[0].type if op._schema.arguments else None
    if str(first) != "Tensor":
        return  # no tensor to tell tracing from eager execution: nodes keep calling the op

    def call(*args: Any, **kwargs: Any) -> Any:
        if _eager(args[0] if args else next(iter(kwargs.values()), None)):
            return impl(*args, **kwargs)
        return op(*args, **kwargs)

    call.__name__ = call.__qualname__ = _call_name(op)
    call.__module__ = __name__
    call.__doc__ = f"``{op}``, without the dispatcher in eager execution (see :mod:`quantplug.direct_calls`)."
    globals()[call.__name__] = call
    _CALLS[op] = call
    _OPS[call] = op


def direct_call(op: Any) -> Callable[..., Any]:
    """The direct-call function of ``op`` (``op`` itself when it has none)."""
    return _CALLS.get(op, op)


def op_of(target: Any) -> Any:
    """The op behind a node target: the op of a direct-call function, else ``target``."""
    try:
        return _OPS.get(target, target)
    except TypeError:  # an unhashable target is no direct call
        return target


def use_direct_calls(gm: GraphModule) -> int:
    """Point ``gm``'s nodes that call an op registered with :func:`impl_cpu` at its direct-call
    function, in place; returns how many nodes changed (``gm`` is recompiled if any did)."""
    changed = 0
    for n in gm.graph.nodes:
        call = _CALLS.get(n.target) if n.op == "call_function" else None
        if call is not None:
            n.target = call
            changed += 1
    if changed:
        gm.recompile()
    return changed


class DirectCallTracer(torch.fx.Tracer):
    """The tracer a converted model records for unpickling.

    ``pickle`` stores a ``GraphModule`` as Python code and rebuilds the graph by tracing that
    code. A plain tracer would step into each direct-call function, see proxies instead of
    tensors and record the op, so an unpickled model would pay the dispatcher again; this one
    keeps every registered direct call as one node (``autowrap_functions``).
    """

    def __init__(self, autowrap_modules: tuple = (math,), autowrap_functions: tuple = ()) -> None:
        super().__init__(autowrap_modules, tuple(autowrap_functions) + tuple(_CALLS.values()))


def __getattr__(name: str) -> Callable[..., Any]:
    """A plugin's direct-call function asked for before the plugin was imported (unpickling a
    lowered model in a new process): import the installed plugins, then look again."""
    if name.startswith("__") or "__" not in name:
        raise AttributeError(name)
    from .registry import list_backends

    list_backends()  # loads every installed plugin, which registers its ops
    if name in globals():
        return globals()[name]
    namespace = name.split("__", 1)[0]
    raise AttributeError(
        f"quantplug.direct_calls has no {name!r}: the op's plugin (namespace {namespace!r}) is not installed "
        f"or failed to load; install the backend plugin the model was converted with")
