"""``quantplug.save`` / ``quantplug.load``: quantized models as data, never as pickles.

A saved model is **safetensors tensors plus a JSON recipe**. Loading reads
JSON and raw tensor bytes only: no ``pickle``, no ``torch.load``, no import of
a name found in the file. Graph ops are looked up in ``torch.ops`` under the
namespaces ``aten`` and ``quantplug`` (plus ``quantplug_*`` namespaces that
backend plugins define) and a short whitelist of Python operators; anything
else is rejected with :class:`UnsafeGraphError`.

Layout (format version 1)
-------------------------

``save(model, "model.safetensors")`` (path ends in ``.safetensors``): one
file; the recipe is stored in the safetensors header metadata under the key
``"quantplug.recipe"``.

``save(model, "model_dir")`` (any other path): a directory holding
``recipe.json`` and ``tensors.safetensors``.

The recipe (``json.loads`` of it) has these keys:

``format`` / ``format_version``
    ``"quantplug"`` and ``1``. A newer format version is rejected with the
    quantplug version to install.
``quantplug_version``, ``torch_version``
    The versions that wrote the file (informational; ops are checked below).
``flow``
    ``"graph"`` (a ``GraphModule`` from ``convert_pt2e``) or ``"eager"`` (an
    ``nn.Module`` whose layers were swapped by ``quantplug.quantize_``).
``backend``
    ``{"name", "distribution", "version", "kernel_isa", "needs_kernels"}``.
    When ``needs_kernels`` is true (the model calls backend kernels), loading
    requires that distribution at a compatible version: same ``major.minor``
    (packed weight layouts may change between minor versions).
``graph`` (graph flow)
    ``nodes``: every FX node as ``{"name", "op", "target", "args", "kwargs",
    "meta"}``; targets are qualified op names such as
    ``"aten.linear.default"`` or ``"quantplug.linear.default"``; arguments
    refer to other nodes as ``{"node": name}`` and encode non-JSON constants
    as one-key objects (``{"float": hex}``, ``{"tuple": [...]}``,
    ``{"dtype": "int8"}``, ...). ``in_spec`` / ``out_spec``: the pytree specs
    of the inputs and outputs (``torch.utils._pytree.treespec_dumps``).
    ``op_schemas``: the schema of every non-ATen op used, compared on load.
    ``packed``: per packed-weight kind (``linear``, ``conv2d``), the class and
    field names of the backend's packed-weight dataclass, compared on load.
``model`` (eager flow)
    ``config`` (``BaseConfig.to_dict``), ``stage``, ``swapped`` (qualified
    name -> quantized class), ``fused``, ``modules`` (class and repr of each
    swapped module), ``extra_state`` (the non-tensor entries of the state
    dict, JSON-encoded); the tensors are the state dict.
``meta``
    The model's ``gm.meta["quantplug"]`` (backend, lowered, ...), made JSON.
``qparams``
    Every quantize / dequantize / lowered-kernel node's scales and zero
    points (per-channel ones longer than 16 as ``{"tensor": name}``), for
    people and tools reading the file (the graph holds the same numbers and
    is what loading uses).
``tensors``
    For each stored tensor: ``kind`` (``parameter`` / ``buffer`` /
    ``constant``, ``state``, ``inline``), ``dtype``, ``shape``, ``encoding``
    (``raw``, or ``int4``/``uint4``: integer tensors whose values all fit in
    4 bits are stored two per byte, low nibble first, losslessly) and the
    ``sha256`` of the stored bytes.
``recipe_sha256``
    SHA-256 of the canonical JSON of the recipe without this key.

The checksums detect truncated, corrupted or edited files (integrity, not
authenticity: whoever can edit the file can recompute them). Every check runs
before the model is built, so a bad file raises :class:`CorruptModelFileError`
and nothing is half-loaded.

Eager-flow models are restored onto an fp32 skeleton the caller passes:
``load(path, model=MyModel())`` re-applies the saved config through
``quantplug.quantize_`` (which swaps the same layers on the same backend) and
then loads the saved state dict strictly. A config that cannot be re-created
from its saved fields, or a skeleton whose layers differ, raises
:class:`SerializationError` naming the difference.

Exported programs: ``torch.export.save`` / ``torch.export.load`` work for the
lowered graph; the ``quantplug::`` ops must be defined before
``torch.export.load`` runs, which ``import quantplug`` does
(:func:`load_exported` does it for you).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import operator
import os
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.fx import Graph, GraphModule, Node

from ._version import __version__
from .direct_calls import op_of, use_direct_calls
from .errors import QuantplugError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "save",
    "load",
    "read_recipe",
    "load_exported",
    "serialized_size",
    "SerializationError",
    "CorruptModelFileError",
    "UnsafeGraphError",
    "MissingBackendError",
    "IncompatibleBackendError",
]

FORMAT_NAME = "quantplug"
#: Bumped whenever a reader of the previous version could misread a new file.
FORMAT_VERSION = 1
RECIPE_KEY = "quantplug.recipe"
RECIPE_FILE = "recipe.json"
TENSORS_FILE = "tensors.safetensors"


class SerializationError(QuantplugError, ValueError):
    """A model cannot be saved or a file cannot be loaded as a quantplug model."""


class CorruptModelFileError(SerializationError):
    """The file is truncated, corrupted or was edited after saving (checksum mismatch)."""


class UnsafeGraphError(SerializationError):
    """A saved graph refers to a callable outside the allowed op namespaces."""


class MissingBackendError(SerializationError, ImportError):
    """The model runs a backend's kernels and that backend plugin is not installed."""


class IncompatibleBackendError(SerializationError, ImportError):
    """The installed backend plugin or quantplug version cannot run the saved model."""


# ------------------------------------------------------------ whitelists --

#: torch.ops namespaces a saved graph may call. Plugins that define their own
#: ops use a namespace starting with ``quantplug_`` (e.g. ``quantplug_fbgemm``).
ALLOWED_NAMESPACES = ("aten", "quantplug")
_PLUGIN_NAMESPACE = re.compile(r"^quantplug_[a-z0-9_]+$")

#: Plain Python callables exported graphs use (tuple indexing, symbolic-shape arithmetic).
ALLOWED_CALLABLES: dict[str, Callable[..., Any]] = {
    f"operator.{name}": getattr(operator, name)
    for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow",
                 "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")
}
ALLOWED_CALLABLES.update({
    "torch.sym_int": torch.sym_int, "torch.sym_float": torch.sym_float, "torch.sym_max": torch.sym_max,
    "torch.sym_min": torch.sym_min, "torch.sym_not": torch.sym_not, "math.ceil": math.ceil,
    "math.floor": math.floor,
})
_CALLABLE_NAMES = {id(fn): name for name, fn in ALLOWED_CALLABLES.items()}

#: Submodule calls dropped on save: ``torch.export`` input guards (they only
#: re-check the example input shapes and hold compiled Python code).
_DROPPED_MODULES = ("_guards_fn",)

_META_KEYS = ("nn_module_stack", "quantplug_explain")


# --------------------------------------------------------------- helpers --


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise CorruptModelFileError(f"unknown dtype {name!r} in the recipe")
    return dtype


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _compatible(saved: str, installed: str) -> bool:
    """Same ``major.minor``: the rule for packed layouts and op schemas."""
    return _version_tuple(saved)[:2] == _version_tuple(installed)[:2]


def _type_name(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


# ------------------------------------------------------ int4 nibble codec --


_NIBBLE_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _nibble_encoding(t: torch.Tensor) -> str | None:
    """``"int4"`` / ``"uint4"`` when every value of an integer tensor fits in 4 bits.

    Lossless: int4 weights kept in int8 storage, and zero points that are all
    0, are stored two per byte (this is what makes int4 files ~1/8 of fp32).
    """
    if t.numel() < 2 or t.dtype not in _NIBBLE_DTYPES:
        return None
    lo, hi = int(t.min()), int(t.max())
    if t.dtype != torch.uint8 and -8 <= lo and hi <= 7:
        return "int4"
    if 0 <= lo and hi <= 15:
        return "uint4"
    return None


def _pack_nibbles(t: torch.Tensor) -> torch.Tensor:
    flat = t.reshape(-1).to(torch.int16) & 0xF
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.reshape(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def _unpack_nibbles(packed: torch.Tensor, encoding: str, shape: list[int]) -> torch.Tensor:
    numel = math.prod(shape)
    p = packed.to(torch.int16)
    flat = torch.stack([p & 0xF, p >> 4], dim=1).reshape(-1)[:numel]
    if encoding == "int4":
        flat = torch.where(flat >= 8, flat - 16, flat).to(torch.int8)
    else:
        flat = flat.to(torch.uint8)
    return flat.reshape(shape)


# ------------------------------------------------------------ arg codec --


class _Encoder:
    """Encodes FX node arguments as JSON (see the module docstring)."""

    def __init__(self, node_name: str, tensors: dict[str, torch.Tensor]) -> None:
        self.node_name = node_name
        self.tensors = tensors

    def __call__(self, a: Any) -> Any:
        if a is None or isinstance(a, (bool, str)):
            return a
        if isinstance(a, int):
            return a
        if isinstance(a, float):
            return {"float": a.hex()}
        if isinstance(a, Node):
            return {"node": a.name}
        if isinstance(a, list):
            return [self(x) for x in a]
        if isinstance(a, tuple):
            return {"tuple": [self(x) for x in a]}
        if isinstance(a, dict):
            return {"dict": [[self(k), self(v)] for k, v in a.items()]}
        if isinstance(a, torch.dtype):
            return {"dtype": _dtype_name(a)}
        if isinstance(a, torch.device):
            return {"device": str(a)}
        if isinstance(a, torch.layout):
            return {"layout": str(a).removeprefix("torch.")}
        if isinstance(a, torch.memory_format):
            return {"memory_format": str(a).removeprefix("torch.")}
        if isinstance(a, slice):
            return {"slice": [self(a.start), self(a.stop), self(a.step)]}
        if a is Ellipsis:
            return {"ellipsis": True}
        if isinstance(a, torch.Tensor):
            key = f"_inline_constant_{len(self.tensors)}"
            self.tensors[key] = a
            return {"tensor": key}
        raise SerializationError(
            f"node {self.node_name!r}: cannot serialize an argument of type {type(a).__name__} ({a!r}); "
            f"quantplug.save supports tensors, numbers, strings, dtypes, devices and containers of them"
        )


_LAYOUTS = {"strided": torch.strided, "sparse_coo": torch.sparse_coo}
_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last,
                   "channels_last_3d": torch.channels_last_3d, "preserve_format": torch.preserve_format}


class _Decoder:
    """Inverse of :class:`_Encoder`; refuses anything it does not know."""

    def __init__(self, nodes: dict[str, Node], tensors: dict[str, torch.Tensor], node_name: str = "") -> None:
        self.nodes, self.tensors, self.node_name = nodes, tensors, node_name

    def __call__(self, a: Any) -> Any:
        if a is None or isinstance(a, (bool, int, str)):
            return a
        if isinstance(a, list):
            return [self(x) for x in a]
        if not isinstance(a, dict) or len(a) != 1:
            raise CorruptModelFileError(f"node {self.node_name!r}: malformed argument {a!r}")
        (kind, v), = a.items()
        try:
            if kind == "float":
                return float.fromhex(v)
            if kind == "node":
                return self.nodes[v]
            if kind == "tuple":
                return tuple(self(x) for x in v)
            if kind == "dict":
                return {self(k): self(x) for k, x in v}
            if kind == "dtype":
                return _dtype_from_name(v)
            if kind == "device":
                return torch.device(v)
            if kind == "layout":
                return _LAYOUTS[v]
            if kind == "memory_format":
                return _MEMORY_FORMATS[v]
            if kind == "slice":
                return slice(*(self(x) for x in v))
            if kind == "ellipsis":
                return Ellipsis
            if kind == "tensor":
                return self.tensors[v]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptModelFileError(f"node {self.node_name!r}: bad {kind!r} argument {v!r} ({exc})") from None
        raise CorruptModelFileError(f"node {self.node_name!r}: unknown argument kind {kind!r}")


# --------------------------------------------------------- op resolution --


def _target_name(node: Node) -> str:
    t = op_of(node.target)  # files name the op, never the direct-call function
    if isinstance(t, torch._ops.OpOverload):
        return f"{t.namespace}.{t._schema.name.split('::', 1)[1]}.{t._overloadname}"
    name = _CALLABLE_NAMES.get(id(t))
    if name is not None:
        return name
    raise UnsafeGraphError(
        f"node {node.name!r} calls {getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', t)!s}, which "
        f"quantplug.save cannot store as data: saved graphs may only call torch.ops in the namespaces "
        f"{', '.join(ALLOWED_NAMESPACES)} (or quantplug_* plugin namespaces) and the operators "
        f"{', '.join(sorted(ALLOWED_CALLABLES))}"
    )


def _namespace_allowed(ns: str) -> bool:
    return ns in ALLOWED_NAMESPACES or bool(_PLUGIN_NAMESPACE.match(ns))


def _resolve_target(name: str, node_name: str) -> Any:
    if name in ALLOWED_CALLABLES:
        return ALLOWED_CALLABLES[name]
    parts = name.split(".")
    if len(parts) != 3 or not _namespace_allowed(parts[0]):
        raise UnsafeGraphError(
            f"node {node_name!r} refers to {name!r}; a saved graph may only call ops in the torch.ops "
            f"namespaces {', '.join(ALLOWED_NAMESPACES)} (or quantplug_* plugin namespaces) and "
            f"{', '.join(sorted(ALLOWED_CALLABLES))}. The file was not written by quantplug.save or was edited."
        )
    ns, op, overload = parts
    try:
        packet = getattr(getattr(torch.ops, ns), op)
        return getattr(packet, overload)
    except (AttributeError, RuntimeError):
        hint = ("import the plugin that defines it (its backend plugin must be installed)"
                if ns != "aten" else f"this torch ({torch.__version__}) has no such op")
        raise IncompatibleBackendError(f"node {node_name!r} calls the op {ns}::{op}.{overload}, which is not "
                                       f"registered; {hint}") from None


# --------------------------------------------------------------- saving --


def _collect_tensors(gm: nn.Module) -> dict[str, tuple[torch.Tensor, str, dict]]:
    """name -> (tensor, kind, extra) for every parameter, buffer and tensor constant."""
    out: dict[str, tuple[torch.Tensor, str, dict]] = {}
    for name, p in gm.named_parameters(remove_duplicate=False):
        out[name] = (p, "parameter", {"requires_grad": bool(p.requires_grad)})
    for mod_name, mod in gm.named_modules(remove_duplicate=False):
        for b_name, b in mod._buffers.items():
            if b is None:
                continue
            full = f"{mod_name}.{b_name}" if mod_name else b_name
            out.setdefault(full, (b, "buffer", {"persistent": b_name not in mod._non_persistent_buffers_set}))
    if isinstance(gm, GraphModule):
        for n in gm.graph.nodes:
            if n.op == "get_attr" and str(n.target) not in out:
                value = _get_attr(gm, str(n.target))
                if isinstance(value, torch.Tensor):
                    out[str(n.target)] = (value, "constant", {})
                elif not isinstance(value, nn.Module):
                    raise SerializationError(
                        f"get_attr node {n.name!r} reads {n.target!r} of type {type(value).__name__}; "
                        f"only tensors can be saved")
    return out


def _get_attr(root: nn.Module, target: str) -> Any:
    value: Any = root
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON rendering of metadata (specs become summaries, callables their names)."""
    if depth > 8:
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (torch.dtype, torch.qscheme)):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.numel() <= 64 else f"<tensor {tuple(value.shape)} {value.dtype}>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        summary = {"type": type(value).__name__}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if callable(v) and not isinstance(v, type):
                summary[f.name] = getattr(v, "__qualname__", None) or getattr(getattr(v, "func", None), "__qualname__", repr(v))
            elif isinstance(v, Node):
                summary[f.name] = v.name
            else:
                summary[f.name] = _jsonable(v, depth + 1)
        return summary
    if isinstance(value, Node):
        return value.name
    if isinstance(value, type):
        return _type_name(value)
    return repr(value)


def _encode_meta(node: Node) -> dict:
    meta = {}
    stack = node.meta.get("nn_module_stack")
    if stack:
        meta["nn_module_stack"] = [[str(k), str(v[0]), _type_name(v[1])] for k, v in stack.items()]
    for key in _META_KEYS[1:]:
        if isinstance(node.meta.get(key), str):
            meta[key] = node.meta[key]
    return meta


def _decode_meta(meta: dict) -> dict:
    out = {}
    if "nn_module_stack" in meta:
        out["nn_module_stack"] = {k: (name, tname) for k, name, tname in meta["nn_module_stack"]}
    for key in _META_KEYS[1:]:
        if key in meta:
            out[key] = meta[key]
    return out


def _qparams_summary(gm: GraphModule) -> list[dict]:
    """Scales and zero points of quantize/dequantize and lowered nodes (for readers of the file)."""
    rows = []
    for n in gm.graph.nodes:
        op = op_of(n.target)
        if n.op != "call_function" or not isinstance(op, torch._ops.OpOverload):
            continue
        if op.namespace == "aten":
            continue
        schema = op._schema
        entry: dict[str, Any] = {"node": n.name, "op": _target_name(n)}
        for arg, value in zip(schema.arguments, n.args):
            if any(word in arg.name for word in ("scale", "zero_point", "quant_min", "quant_max", "dtype", "axis")):
                if isinstance(value, Node):
                    if value.op == "get_attr":  # small ones inline; larger ones name their stored tensor
                        t = _get_attr(gm, str(value.target))
                        entry[arg.name] = t.tolist() if t.numel() <= 16 else {"tensor": str(value.target)}
                    else:
                        entry[arg.name] = f"node {value.name}"
                else:
                    entry[arg.name] = _jsonable(value)
        if len(entry) > 2:
            rows.append(entry)
    return rows


def _backend_entry(info: dict, needs_kernels: bool) -> dict | None:
    name = info.get("backend")
    if name is None:
        return None
    entry: dict[str, Any] = {"name": name, "needs_kernels": needs_kernels}
    try:
        from .registry import get_backend

        b = get_backend(name)
        entry.update(name=b.name, distribution=b.distribution, version=b.version, kernel_isa=b.kernel_isa())
    except KeyError:
        if needs_kernels:
            raise
        entry.update(distribution=None, version=None, kernel_isa="none")
    return entry


def _uses_backend_kernels(gm: GraphModule) -> bool:
    """True when some node dispatches to a backend by name (a ``str backend`` argument)."""
    for n in gm.graph.nodes:
        op = op_of(n.target)
        if n.op == "call_function" and isinstance(op, torch._ops.OpOverload) and op.namespace != "aten":
            if any(a.name == "backend" for a in op._schema.arguments):
                return True
    return False


def _packed_kinds(gm: GraphModule) -> set[str]:
    """Kinds of packed weights the lowered ops use: ``"linear"`` (also dynamic), ``"conv2d"``..."""
    kinds = set()
    for n in gm.graph.nodes:
        op = op_of(n.target)
        if n.op == "call_function" and isinstance(op, torch._ops.OpOverload) and op.namespace != "aten":
            if any(a.name == "packed" for a in op._schema.arguments):
                kinds.add(op._schema.name.split("::", 1)[1].removesuffix("_dynamic"))
    return kinds


def _packed_description(backend_name: str, kind: str) -> dict | None:
    """Class and field names of a backend's packed-weight dataclass for ``kind``."""
    from . import lowering
    from .registry import get_backend

    cls = getattr(get_backend(backend_name).kernels, f"packed_{kind}_type", None)
    if cls is None:
        try:
            cls = lowering._packed_type(backend_name, kind)
        except Exception:  # the backend cannot tell: nothing to compare on load
            return None
    if not dataclasses.is_dataclass(cls):
        return None
    return {"type": _type_name(cls), "fields": [f.name for f in dataclasses.fields(cls)]}


def _graph_recipe(gm: GraphModule, tensors_out: dict[str, torch.Tensor]) -> dict:
    from torch.utils import _pytree as pytree

    nodes = []
    op_schemas = {}
    dropped = set()
    for n in gm.graph.nodes:
        if n.op == "call_module":
            if str(n.target) in _DROPPED_MODULES and not n.users:
                dropped.add(n.name)
                continue
            raise SerializationError(
                f"node {n.name!r} calls the submodule {n.target!r}; quantplug.save stores graphs made of ops "
                f"only. Save the model returned by convert_pt2e (observers and fake-quant modules are gone "
                f"after convert)")
        if n.op == "call_method":
            raise UnsafeGraphError(f"node {n.name!r} calls the method {n.target!r}; saved graphs hold ops only")
        enc = _Encoder(n.name, tensors_out)
        entry = {"name": n.name, "op": n.op, "args": enc(list(n.args)), "kwargs": enc(dict(n.kwargs))["dict"]}
        if n.op == "call_function":
            entry["target"] = _target_name(n)
            op = op_of(n.target)
            if isinstance(op, torch._ops.OpOverload) and op.namespace != "aten":
                op_schemas[entry["target"]] = str(op._schema)
        elif n.op in ("placeholder", "get_attr"):
            entry["target"] = str(n.target)
        else:
            entry["target"] = "output"
        meta = _encode_meta(n)
        if meta:
            entry["meta"] = meta
        nodes.append(entry)
    if any(n["op"] == "output" for n in nodes) is False:
        raise SerializationError("the graph has no output node")
    recipe: dict[str, Any] = {"nodes": nodes, "op_schemas": op_schemas, "dropped_nodes": sorted(dropped)}
    codegen = gm.graph._codegen
    info = getattr(codegen, "pytree_info", None)
    if info is not None:
        recipe["orig_args"] = list(info.orig_args)
        recipe["in_spec"] = pytree.treespec_dumps(info.in_spec) if info.in_spec is not None else None
        recipe["out_spec"] = pytree.treespec_dumps(info.out_spec) if info.out_spec is not None else None
    return recipe


_EAGER_INFO_ATTR = "quantplug_info"  # where quantplug.eager records what quantize_ / convert did


def _eager_info(model: nn.Module) -> Any:
    info = getattr(model, _EAGER_INFO_ATTR, None)
    return info if info is not None and hasattr(info, "config") and hasattr(info, "swapped") else None


def _eager_recipe(model: nn.Module, tensors_out: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(model description, backend info, tensor state) of an eager-flow model."""
    info = _eager_info(model)
    state = model.state_dict()
    extra, tensors = {}, {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        else:  # e.g. quantized modules' extra state: backend name, packed-weight metadata
            extra[key] = _Encoder(key, tensors_out)(value)
    modules = {name: {"class": _type_name(m), "repr": m.extra_repr()[:300]}
               for name, m in model.named_modules() if name in info.swapped}
    description = {
        "root_class": _type_name(model), "config": info.config, "stage": info.stage,
        "swapped": dict(info.swapped), "fused": [list(g) for g in info.fused],
        "backend_reason": info.backend_reason, "modules": modules, "extra_state": extra,
    }
    return description, {"backend": info.backend, "stage": info.stage}, tensors


def _encode_tensors(raw: dict[str, tuple[torch.Tensor, str, dict]]) -> tuple[dict[str, torch.Tensor], dict]:
    stored: dict[str, torch.Tensor] = {}
    index: dict[str, dict] = {}
    seen_storage: dict[tuple[int, int, tuple, tuple], str] = {}
    for name, (t, kind, extra) in raw.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_quantized or t.layout != torch.strided:
            raise SerializationError(f"tensor {name!r} is a {t.layout}/{'quantized' if t.is_quantized else ''} "
                                     f"tensor; quantplug.save stores dense tensors")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride())) if t.numel() else None
        entry: dict[str, Any] = {"kind": kind, "dtype": _dtype_name(t.dtype), "shape": list(t.shape), **extra}
        if key is not None and key in seen_storage and raw[seen_storage[key]][0].dtype == t.dtype:
            entry["alias_of"] = seen_storage[key]  # tied weights: stored once, restored as one tensor
            index[name] = entry
            continue
        if key is not None:
            seen_storage[key] = name
        encoding = _nibble_encoding(t)
        data = _pack_nibbles(t) if encoding else t.contiguous().clone()
        entry["encoding"] = encoding or "raw"
        entry["sha256"] = _sha256(_tensor_bytes(data))
        stored[name] = data
        index[name] = entry
    return stored, index


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a quantized model as safetensors tensors plus a JSON recipe.

    :param model: a ``GraphModule`` returned by :func:`quantplug.convert_pt2e`
        (lowered or reference form), or an eager-flow model quantized with
        ``quantplug.quantize_``.
    :param path: ``"*.safetensors"`` writes one file; any other path is a
        directory (created) with ``recipe.json`` and ``tensors.safetensors``.
    :returns: the path written.

    Example::

        quantplug.save(converted, "mlp_int8.safetensors")
        model = quantplug.load("mlp_int8.safetensors")
    """
    from safetensors.torch import save_file

    path = Path(path)
    if isinstance(model, GraphModule):
        flow = "graph"
        info = dict(model.meta.get("quantplug", {}))
        if info and not info.get("converted", False):
            raise SerializationError("this model is prepared but not converted; call quantplug.convert_pt2e "
                                     "before saving (observer modules cannot be stored as data)")
        inline: dict[str, torch.Tensor] = {}
        graph = _graph_recipe(model, inline)
        raw = _collect_tensors(model)
        for key, t in inline.items():
            raw[key] = (t, "inline", {})
        needs_kernels = _uses_backend_kernels(model)
        backend = _backend_entry(info, needs_kernels)
        if backend is not None and needs_kernels:
            graph["packed"] = {kind: _packed_description(backend["name"], kind) for kind in sorted(_packed_kinds(model))}
        body: dict[str, Any] = {"graph": graph, "qparams": _qparams_summary(model), "meta": _jsonable(info)}
    elif isinstance(model, nn.Module) and _eager_info(model) is not None:
        flow = "eager"
        inline = {}
        description, info, state = _eager_recipe(model, inline)
        raw = {k: (v, "state", {}) for k, v in state.items()}
        raw.update({k: (t, "inline", {}) for k, t in inline.items()})
        backend = _backend_entry(info, True)
        body = {"model": description, "meta": _jsonable(info)}
    else:
        raise SerializationError(
            f"quantplug.save takes a model converted by quantplug.convert_pt2e or quantized by "
            f"quantplug.quantize_; got {type(model).__name__} with no quantplug metadata")
    stored, index = _encode_tensors(raw)
    recipe: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "quantplug_version": __version__,
        "torch_version": torch.__version__.split("+")[0], "flow": flow, "backend": backend,
        **body, "tensors": index,
    }
    recipe["recipe_sha256"] = _sha256(_canonical(recipe).encode())
    text = _canonical(recipe)
    if path.suffix == ".safetensors":
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(stored, str(path), metadata={"format": "pt", RECIPE_KEY: text})
    else:
        path.mkdir(parents=True, exist_ok=True)
        save_file(stored, str(path / TENSORS_FILE), metadata={"format": "pt", "quantplug.format_version": str(FORMAT_VERSION)})
        (path / RECIPE_FILE).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    return path


# -------------------------------------------------------------- loading --


def _open(path: Path) -> tuple[dict, Path]:
    """(recipe, tensors file) after checking the recipe's own checksum."""
    from safetensors import SafetensorError, safe_open

    if path.is_dir():
        recipe_file, tensor_file = path / RECIPE_FILE, path / TENSORS_FILE
        if not recipe_file.is_file() or not tensor_file.is_file():
            raise SerializationError(f"{path} is not a quantplug model directory (needs {RECIPE_FILE} and {TENSORS_FILE})")
        try:
            recipe = json.loads(recipe_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptModelFileError(f"{recipe_file}: not valid JSON ({exc}); the file is truncated or corrupted") from None
    elif path.is_file():
        tensor_file = path
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CorruptModelFileError(f"{path}: not a readable safetensors file ({exc}); it is truncated, "
                                        f"corrupted or not a quantplug model") from None
        if RECIPE_KEY not in header:
            raise SerializationError(f"{path}: a safetensors file without a quantplug recipe; it was not written "
                                     f"by quantplug.save")
        try:
            recipe = json.loads(header[RECIPE_KEY])
        except json.JSONDecodeError as exc:
            raise CorruptModelFileError(f"{path}: the recipe is not valid JSON ({exc})") from None
    else:
        raise FileNotFoundError(f"no quantplug model at {path}")
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT_NAME:
        raise SerializationError(f"{path}: not a quantplug model (format {recipe.get('format') if isinstance(recipe, dict) else None!r})")
    version = recipe.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IncompatibleBackendError(
            f"{path} uses quantplug format version {version}, newer than this quantplug ({__version__}) reads "
            f"(version {FORMAT_VERSION}); it was written by quantplug {recipe.get('quantplug_version')}: "
            f"pip install 'quantplug>={recipe.get('quantplug_version')}'")
    claimed = recipe.get("recipe_sha256")
    body = {k: v for k, v in recipe.items() if k != "recipe_sha256"}
    if claimed != _sha256(_canonical(body).encode()):
        raise CorruptModelFileError(f"{path}: the recipe does not match its checksum; the file was edited or corrupted")
    return recipe, tensor_file


def read_recipe(path: str | os.PathLike[str]) -> dict:
    """The JSON recipe of a saved model, checked against its checksum (tensors are not read)."""
    return _open(Path(path))[0]


def _read_tensors(recipe: dict, tensor_file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        stored = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptModelFileError(f"{tensor_file}: cannot read the tensors ({exc}); the file is truncated or "
                                    f"corrupted") from None
    index = recipe.get("tensors")
    if not isinstance(index, dict):
        raise CorruptModelFileError("the recipe has no tensor index")
    expected = {k for k, v in index.items() if "alias_of" not in v}
    if expected != set(stored):
        missing, extra = sorted(expected - set(stored)), sorted(set(stored) - expected)
        raise CorruptModelFileError(f"{tensor_file}: tensors do not match the recipe (missing {missing[:5]}, "
                                    f"unexpected {extra[:5]})")
    out: dict[str, torch.Tensor] = {}
    for name in sorted(expected):
        entry, data = index[name], stored[name]
        if _sha256(_tensor_bytes(data)) != entry.get("sha256"):
            raise CorruptModelFileError(f"{tensor_file}: tensor {name!r} does not match its checksum; the file was "
                                        f"corrupted or edited after saving")
        encoding, shape, dtype = entry.get("encoding"), list(entry["shape"]), _dtype_from_name(entry["dtype"])
        if encoding in ("int4", "uint4"):
            if data.dtype != torch.uint8 or data.numel() != (math.prod(shape) + 1) // 2:
                raise CorruptModelFileError(f"tensor {name!r}: packed nibbles do not match the shape {shape}")
            t = _unpack_nibbles(data, encoding, shape).to(dtype)
        elif encoding == "raw":
            t = data
        else:
            raise CorruptModelFileError(f"tensor {name!r}: unknown encoding {encoding!r}")
        if t.dtype != dtype or list(t.shape) != shape:
            raise CorruptModelFileError(f"tensor {name!r} is {t.dtype} {list(t.shape)}, the recipe says {dtype} {shape}")
        out[name] = t
    for name, entry in index.items():
        if "alias_of" in entry:
            if entry["alias_of"] not in out:
                raise CorruptModelFileError(f"tensor {name!r} aliases the unknown tensor {entry['alias_of']!r}")
            out[name] = out[entry["alias_of"]]
    return out


def _check_backend(recipe: dict) -> None:
    backend = recipe.get("backend")
    if not backend or not backend.get("needs_kernels"):
        return
    from .registry import get_backend

    name, dist, version = backend["name"], backend.get("distribution"), backend.get("version")
    pin = f"{dist}=={'.'.join(map(str, _version_tuple(version)[:2]))}.*" if version else dist
    try:
        installed = get_backend(name)
    except KeyError:
        raise MissingBackendError(
            f"this model runs the {name!r} backend's kernels, from the distribution {dist} {version}, which is "
            f"not installed (or failed to load). Install it: pip install '{pin}'") from None
    if installed.distribution != dist:
        raise IncompatibleBackendError(
            f"this model was saved with backend {name!r} from {dist} {version}, but {name!r} is now provided by "
            f"{installed.distribution} {installed.version}. Install the original: pip install '{pin}'")
    if version and not _compatible(version, installed.version):
        raise IncompatibleBackendError(
            f"this model was saved with {dist} {version}; the installed {installed.version} may pack weights "
            f"differently (versions must agree on major.minor). Install a compatible version: pip install '{pin}'")


def _check_schemas(recipe: dict) -> None:
    saved_by = recipe.get("quantplug_version")
    for name, schema in recipe["graph"].get("op_schemas", {}).items():
        op = _resolve_target(name, name)
        if str(op._schema) != schema:
            raise IncompatibleBackendError(
                f"the saved graph calls {name} with schema {schema!r}, but the installed op is "
                f"{str(op._schema)!r} (saved by quantplug {saved_by}, installed {__version__}). Install the "
                f"version that wrote it: pip install 'quantplug=={saved_by}'")


def _check_packed(recipe: dict) -> None:
    backend = recipe.get("backend") or {}
    if not backend.get("needs_kernels"):
        return
    for kind, want in (recipe["graph"].get("packed") or {}).items():
        have = _packed_description(backend["name"], kind) if want else None
        if want and have is not None and have["fields"] != want["fields"]:
            raise IncompatibleBackendError(
                f"the saved {kind} weights were packed as {want['type']} with fields {want['fields']}; the "
                f"installed {backend.get('distribution')} packs {have['type']} with fields {have['fields']}. "
                f"Install the version that wrote the file: pip install "
                f"'{backend.get('distribution')}=={backend.get('version')}'")


def _set_tensor(root: nn.Module, name: str, t: torch.Tensor, entry: dict) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = root
    for part in owner_path.split(".") if owner_path else ():
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    for store in (owner._parameters, owner._buffers):
        store.pop(attr, None)
    owner._non_persistent_buffers_set.discard(attr)
    if attr in owner.__dict__:
        del owner.__dict__[attr]
    kind = entry["kind"]
    if kind == "parameter":
        owner.register_parameter(attr, nn.Parameter(t, requires_grad=bool(entry.get("requires_grad", False))
                                                    and t.is_floating_point()))
    elif kind == "buffer":
        owner.register_buffer(attr, t, persistent=bool(entry.get("persistent", True)))
    else:
        setattr(owner, attr, t)


def _build_graph_module(recipe: dict, tensors: dict[str, torch.Tensor]) -> GraphModule:
    from torch.utils import _pytree as pytree

    g = recipe["graph"]
    graph = Graph()
    nodes: dict[str, Node] = {}
    inline = {k: v for k, v in tensors.items() if recipe["tensors"][k]["kind"] == "inline"}
    for entry in g["nodes"]:
        name, op = entry.get("name"), entry.get("op")
        dec = _Decoder(nodes, inline, str(name))
        args = tuple(dec(entry.get("args", [])))
        kwargs = {k: v for k, v in dec({"dict": entry.get("kwargs", [])}).items()}
        if op == "placeholder":
            target = entry["target"]
        elif op == "get_attr":
            target = entry["target"]
            if target not in tensors:
                raise CorruptModelFileError(f"get_attr node {name!r} reads {target!r}, which the file does not hold")
        elif op == "call_function":
            target = _resolve_target(entry.get("target", ""), str(name))
        elif op == "output":
            target = "output"
        else:
            raise UnsafeGraphError(f"node {name!r} has op {op!r}; saved graphs hold placeholder, get_attr, "
                                   f"call_function and output nodes only")
        node = graph.create_node(op, target, args, kwargs, name=name)
        if node.name != name:
            raise CorruptModelFileError(f"duplicate or invalid node name {name!r} in the saved graph")
        node.meta.update(_decode_meta(entry.get("meta", {})))
        nodes[name] = node
    if g.get("in_spec") is not None or g.get("out_spec") is not None:
        from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

        in_spec = pytree.treespec_loads(g["in_spec"]) if g.get("in_spec") else None
        out_spec = pytree.treespec_loads(g["out_spec"]) if g.get("out_spec") else None
        graph._codegen = _PyTreeCodeGen(_PyTreeInfo(g.get("orig_args", []), in_spec, out_spec))
    graph.lint()
    root = nn.Module()
    for name, t in tensors.items():
        entry = recipe["tensors"][name]
        if entry["kind"] != "inline":
            _set_tensor(root, name, t, entry)
    gm = GraphModule(root, graph, class_name="QuantizedGraphModule")
    # GraphModule copies get_attr targets as buffers; restore each tensor's own kind.
    for name, t in tensors.items():
        entry = recipe["tensors"][name]
        if entry["kind"] != "inline":
            _set_tensor(gm, name, t, entry)
    gm.meta["quantplug"] = dict(recipe.get("meta") or {})
    gm.meta["quantplug"]["loaded_from_format"] = recipe["format_version"]
    use_direct_calls(gm)
    gm.eval()
    return gm


def _restore_eager(skeleton: nn.Module, recipe: dict, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Re-apply the saved config to a copy of ``skeleton``, then load the saved state strictly."""
    import copy
    import warnings

    from . import eager
    from .configs import BaseConfig

    desc = recipe["model"]
    backend = recipe["backend"]["name"]
    config = BaseConfig.from_dict(desc["config"])
    swapped = set(desc["swapped"])
    model = copy.deepcopy(skeleton)  # the caller's skeleton is untouched if anything below fails
    model.eval()

    def only_saved(_module: nn.Module, fqn: str) -> bool:  # swap exactly the modules that were swapped
        return fqn in swapped

    stage = desc["stage"]
    if stage in ("qat",) or (stage == "converted" and type(config).__name__ == "QATConfig"):
        eager.prepare_qat(model, config, backend=backend, filter_fn=only_saved)
    else:
        eager.quantize_(model, config, backend=backend, filter_fn=only_saved)
    if stage == "converted" and getattr(model, _EAGER_INFO_ATTR).stage != "converted":
        with warnings.catch_warnings():  # "observer saw no data": the saved state replaces its qparams
            warnings.simplefilter("ignore")
            _prime_observers(model)
            eager.convert(model, check_calibration=False)
    got = dict(getattr(model, _EAGER_INFO_ATTR).swapped)
    if got != desc["swapped"]:
        diff = sorted(set(got.items()) ^ set(desc["swapped"].items()))
        raise SerializationError(
            f"the skeleton ({type(skeleton).__name__}) does not have the saved layers: re-applying "
            f"{type(config).__name__} swapped {len(got)} module(s), the file has {len(desc['swapped'])}; "
            f"differences: {diff[:6]}. Pass an fp32 instance of {desc['root_class']}")
    inline = {k: v for k, v in tensors.items() if recipe["tensors"][k]["kind"] == "inline"}
    state = {k: v for k, v in tensors.items() if recipe["tensors"][k]["kind"] != "inline"}
    for key, value in desc.get("extra_state", {}).items():
        state[key] = _Decoder({}, inline, key)(value)
    model.load_state_dict(state, strict=True)
    info = getattr(model, _EAGER_INFO_ATTR)
    info.stage, info.backend_reason = stage, desc.get("backend_reason", info.backend_reason)
    info.fused = [list(g) for g in desc.get("fused", [])]
    return model


def _prime_observers(model: nn.Module) -> None:
    """Give never-run observers a range so convert can build modules; the saved state replaces it."""
    with torch.no_grad():
        for m in model.modules():
            for attr in ("input_observer", "output_observer", "input_fake_quant", "output_fake_quant"):
                obs = getattr(m, attr, None)
                if isinstance(obs, nn.Module):
                    obs(torch.tensor([-1.0, 1.0]))


def load(path: str | os.PathLike[str], *, model: nn.Module | None = None) -> nn.Module:
    """Load a model written by :func:`save`, without unpickling anything.

    :param path: the ``.safetensors`` file or the directory given to ``save``.
    :param model: for eager-flow files only: an fp32 instance of the saved
        model's architecture (a skeleton); it is quantized in place with the
        saved config and receives the saved state. Graph-flow files rebuild
        the whole model from data and take no skeleton.
    :returns: the quantized model (a ``GraphModule`` for graph-flow files).
    :raises CorruptModelFileError: truncated, corrupted or edited file.
    :raises MissingBackendError: the backend plugin the model runs is not installed.
    :raises IncompatibleBackendError: installed plugin / quantplug cannot run it.
    :raises UnsafeGraphError: the graph calls something outside the whitelist.
    """
    path = Path(path)
    recipe, tensor_file = _open(path)
    flow = recipe.get("flow")
    if flow == "graph":
        if model is not None:
            raise SerializationError("this file holds a graph-flow model, rebuilt from data; do not pass model=")
        _check_backend(recipe)
        _check_schemas(recipe)
        _check_packed(recipe)
        tensors = _read_tensors(recipe, tensor_file)
        try:
            return _build_graph_module(recipe, tensors)
        except (SerializationError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, SerializationError):
                raise
            raise CorruptModelFileError(f"{path}: the saved graph cannot be rebuilt: {type(exc).__name__}: {exc}") from exc
    if flow == "eager":
        if model is None:
            raise SerializationError(
                f"{path} holds an eager-flow model ({recipe['model'].get('root_class')}); pass an fp32 instance "
                f"of that class: quantplug.load(path, model=MyModel())")
        _check_backend(recipe)
        tensors = _read_tensors(recipe, tensor_file)
        try:
            return _restore_eager(model, recipe, tensors)
        except SerializationError:
            raise
        except Exception as exc:  # the skeleton does not match the saved model
            raise SerializationError(
                f"{path}: cannot restore the eager-flow model onto {type(model).__name__}: "
                f"{type(exc).__name__}: {exc}") from exc
    raise CorruptModelFileError(f"{path}: unknown flow {flow!r}")


def load_exported(path: str | os.PathLike[str], **kwargs: Any):
    """``torch.export.load`` for programs that call ``quantplug::`` ops.

    ``torch.export.load`` needs every custom op registered before it reads the
    program; importing quantplug registers the ``quantplug::`` ops (the
    backend plugins are found lazily when the ops first run). This function is
    that import plus the call.
    """
    from . import lowering  # noqa: F401  (defines quantplug::linear / linear_dynamic / conv2d ...)
    from .nn import _traced  # noqa: F401  (weight-only and embedding ops of exported eager models)

    return torch.export.load(path, **kwargs)


def serialized_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of a saved model (the file, or the sum over the directory)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    return path.stat().st_size
