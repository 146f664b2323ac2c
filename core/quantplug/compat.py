"""Names kept so code written for ``torch.ao`` / early PT2E ports by changing imports only.

``capture_pre_autograd_graph`` was PT2E's capture step before ``torch.export``
replaced it; here it is ``torch.export.export(model, args).module()`` with a
dynamic batch dimension, the graph ``prepare_pt2e`` expects.
"""

from __future__ import annotations

import torch

from .prepare import export_model

__all__ = ["capture_pre_autograd_graph"]


def capture_pre_autograd_graph(model: torch.nn.Module, args: tuple, kwargs: dict | None = None):
    """Export ``model`` to an ATen-level ``GraphModule`` (the PT2E capture step)."""
    if kwargs:
        raise ValueError("capture_pre_autograd_graph: keyword inputs are not supported; pass positional example inputs")
    return export_model(model, tuple(args))
