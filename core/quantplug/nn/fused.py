"""Module fusion for the eager static and QAT flows.

Backends run conv+bn+relu and linear+relu as one kernel (bn folded into the
weights, relu as the output clamp), so the eager flow quantizes the fused
pattern as one module. This file finds the patterns and builds the fused
float containers (:class:`LinearReLU`, :class:`ConvReLU1d`/``2d``,
:class:`ConvBn2d`, :class:`ConvBnReLU2d`) that the config handlers swap for
observed / QAT modules.

Patterns are found by tracing the model with ``torch.fx`` (so
``torch.relu(self.bn(self.conv(x)))`` in a ``forward`` is seen), or, when the
model cannot be traced, from the order of children in ``nn.Sequential``
containers. A bn or relu *module* absorbed into a pattern becomes
``nn.Identity``; a relu that is a function call (``torch.relu``, ``F.relu``)
stays in the forward code and runs again on the already non-negative output,
which changes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LinearReLU",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvBn2d",
    "ConvBnReLU2d",
    "FusionGroup",
    "find_fusion_groups",
    "fold_conv_bn",
    "fusion_replacements",
]

_CONV = (nn.Conv1d, nn.Conv2d)
_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
_RELU_FUNCS = (torch.relu, F.relu, torch.nn.functional.relu)


class LinearReLU(nn.Sequential):
    """``Linear`` followed by ``ReLU``, quantized as one module."""


class ConvReLU1d(nn.Sequential):
    """``Conv1d`` (bn already folded in) followed by ``ReLU``."""


class ConvReLU2d(nn.Sequential):
    """``Conv2d`` (bn already folded in) followed by ``ReLU``."""


class ConvBn2d(nn.Sequential):
    """``Conv2d`` + ``BatchNorm2d`` kept apart for QAT (BN folding is simulated while training)."""


class ConvBnReLU2d(nn.Sequential):
    """``Conv2d`` + ``BatchNorm2d`` + ``ReLU`` for QAT."""


@dataclass
class FusionGroup:
    """Submodule names of one pattern, in data-flow order, and which relu form it had.

    :param names: e.g. ``["conv1", "bn1", "relu1"]``; ``relu_module`` is the
        relu's name when it is a module (``None`` for a functional relu or none).
    """

    head: str
    bn: str | None = None
    relu: bool = False
    relu_module: str | None = None
    names: list[str] = field(default_factory=list)


def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` with eval-mode ``bn`` folded into its weight and bias.

    ``w' = w * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``
    (the running statistics: calibration and inference use them).
    """
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var.float() + bn.eps)
        gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(inv_std)
        factor = gamma * inv_std
        w = conv.weight.float() * factor.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        b0 = conv.bias.float() if conv.bias is not None else torch.zeros_like(inv_std)
        b = (b0 - bn.running_mean.float()) * factor + beta
    fused.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    return fused


def _is_relu_node(node, modules) -> tuple[bool, str | None]:
    if node.op == "call_module" and isinstance(modules.get(node.target), nn.ReLU):
        return True, node.target
    if node.op == "call_function" and node.target in _RELU_FUNCS:
        return True, None
    if node.op == "call_method" and node.target == "relu":
        return True, None
    return False, None


def _single_user(node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _trace_groups(model: nn.Module) -> list[FusionGroup] | None:
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # models with data-dependent control flow do not trace: use Sequential order
        return None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    groups = []
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        mod = modules.get(n.target)
        if not isinstance(mod, (nn.Linear, *_CONV)) or calls[n.target] != 1:
            continue
        g = FusionGroup(head=n.target, names=[n.target])
        nxt = _single_user(n)
        if isinstance(mod, _CONV) and nxt is not None and nxt.op == "call_module" and \
                type(modules.get(nxt.target)) is _BN[type(mod)] and calls[nxt.target] == 1:
            g.bn = nxt.target
            g.names.append(nxt.target)
            nxt = _single_user(nxt)
        if nxt is not None:
            is_relu, relu_name = _is_relu_node(nxt, modules)
            if is_relu:
                g.relu = True
                # A ReLU module called once is absorbed (becomes Identity); a shared one is kept
                # and runs again on the fused output, which changes nothing.
                if relu_name is not None and calls[relu_name] == 1:
                    g.relu_module = relu_name
                    g.names.append(relu_name)
        if g.bn or g.relu:
            groups.append(g)
    return groups


def _sequential_groups(model: nn.Module) -> list[FusionGroup]:
    groups = []
    for prefix, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        i = 0
        while i < len(children):
            name, mod = children[i]
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(mod, (nn.Linear, *_CONV)):
                g = FusionGroup(head=full, names=[full])
                j = i + 1
                if isinstance(mod, _CONV) and j < len(children) and type(children[j][1]) is _BN[type(mod)]:
                    g.bn = f"{prefix}.{children[j][0]}" if prefix else children[j][0]
                    g.names.append(g.bn)
                    j += 1
                if j < len(children) and isinstance(children[j][1], nn.ReLU):
                    g.relu = True
                    g.relu_module = f"{prefix}.{children[j][0]}" if prefix else children[j][0]
                    g.names.append(g.relu_module)
                    j += 1
                if g.bn or g.relu:
                    groups.append(g)
                    i = j
                    continue
            i += 1
    return groups


def _explicit_groups(model: nn.Module, lists: list[list[str]]) -> list[FusionGroup]:
    modules = dict(model.named_modules())
    groups = []
    for names in lists:
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"modules_to_fuse: no submodule named {missing} (group {names})")
        kinds = [modules[n] for n in names]
        head = kinds[0]
        if not isinstance(head, (nn.Linear, *_CONV)):
            raise ValueError(f"modules_to_fuse: group {names} must start with a Linear/Conv1d/Conv2d, "
                             f"got {type(head).__name__}")
        g = FusionGroup(head=names[0], names=list(names))
        rest = list(zip(names[1:], kinds[1:]))
        if rest and isinstance(head, _CONV) and type(rest[0][1]) is _BN[type(head)]:
            g.bn = rest.pop(0)[0]
        if rest and isinstance(rest[0][1], nn.ReLU):
            g.relu, g.relu_module = True, rest.pop(0)[0]
        if rest:
            raise ValueError(f"modules_to_fuse: cannot fuse {names}; supported groups are conv-bn, conv-bn-relu, "
                             f"conv-relu and linear-relu")
        groups.append(g)
    return groups


def find_fusion_groups(model: nn.Module, explicit: list[list[str]] | None = None, *, detect: bool = True
                       ) -> list[FusionGroup]:
    """conv-bn(-relu), conv-relu and linear-relu groups of ``model`` (explicit groups first)."""
    groups = _explicit_groups(model, explicit) if explicit else []
    if detect:
        found = _trace_groups(model)
        if found is None:
            found = _sequential_groups(model)
        taken = {n for g in groups for n in g.names}
        groups += [g for g in found if not taken.intersection(g.names)]
    return groups


def fusion_replacements(model: nn.Module, groups: list[FusionGroup], *, fold_bn: bool,
                        accept: Callable[[str, nn.Module], bool] = lambda name, mod: True) -> dict[str, nn.Module]:
    """What to put where: ``{head name: fused container, bn/relu name: nn.Identity()}``.

    ``fold_bn=True`` (PTQ) folds bn into a conv copy; ``False`` (QAT) keeps it
    in a :class:`ConvBn2d` / :class:`ConvBnReLU2d` for simulated folding.
    ``accept(name, module)`` filters groups by their head (``filter_fn``).
    Nothing in ``model`` is modified.
    """
    modules = dict(model.named_modules())
    out: dict[str, nn.Module] = {}
    for g in groups:
        head = modules[g.head]
        if not accept(g.head, head):
            continue
        bn = modules[g.bn] if g.bn else None
        if bn is not None and not fold_bn and not isinstance(head, nn.Conv2d):
            continue  # QAT simulates folding for Conv2d only; other conv-bn pairs train unfused
        if bn is not None and not fold_bn and isinstance(head, nn.Conv2d):
            fused = ConvBnReLU2d(head, bn, nn.ReLU()) if g.relu else ConvBn2d(head, bn)
        else:
            conv = fold_conv_bn(head, bn) if bn is not None else head
            if not g.relu:
                fused = conv
            elif isinstance(conv, nn.Linear):
                fused = LinearReLU(conv, nn.ReLU())
            elif isinstance(conv, nn.Conv1d):
                fused = ConvReLU1d(conv, nn.ReLU())
            else:
                fused = ConvReLU2d(conv, nn.ReLU())
        out[g.head] = fused
        if g.bn:
            out[g.bn] = nn.Identity()
        if g.relu_module:
            out[g.relu_module] = nn.Identity()
    return out

