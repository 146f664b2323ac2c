"""Observers across ``torch.distributed`` ranks (data-parallel calibration and QAT).

With data parallelism each rank sees a shard of the data, so each rank's
observers would compute different qparams. The observers can merge their
statistics across ranks (``ObserverBase.sync_across_ranks``: min/max
all-reduce; histogram observers re-bin onto the global range and sum their
counts). These helpers apply that to a whole model:

* calibration: run each rank's shard, then :func:`sync_observers` (or use
  :func:`distributed_calibration` as a context manager); every rank then
  holds the qparams of one process that saw all the data.
* QAT: :func:`set_observer_sync` (done by ``prepare_qat`` when the process
  group exists) makes each observer all-reduce on every ``calculate_qparams``,
  i.e. every training step, so the moving averages stay identical across
  ranks: ``min_r(m + c (b_r - m)) = m + c (min_r b_r - m)`` for the moving
  average constant ``c > 0``, which is exactly the single-process update on
  the concatenated batch.

All functions are no-ops when ``torch.distributed`` is not initialised, so the
same training script runs on one process.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["is_distributed", "observers", "sync_observers", "set_observer_sync", "distributed_calibration"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a process group is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def observers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every quantplug observer in ``model`` (including those inside fake-quant modules), in a fixed order.

    The order is ``named_modules()`` order, identical on every rank for the
    same model, which collectives need.
    """
    from .observers import ObserverBase

    return [(n, m) for n, m in model.named_modules() if isinstance(m, ObserverBase)]


def sync_observers(model: nn.Module) -> int:
    """Merge every observer's statistics across ranks (a collective: call it on every rank).

    Returns the number of observers synchronised (0 without a process group).
    Observers already synced since their last observation are skipped by the
    observer itself, so calling this twice does not double-count.
    """
    if not is_distributed():
        return 0
    found = observers(model)
    for _, obs in found:
        obs.sync_across_ranks()
    return len(found)


def set_observer_sync(model: nn.Module, enabled: bool = True) -> int:
    """Turn per-``calculate_qparams`` synchronisation on or off for every observer; returns the count.

    Needed for QAT under data parallelism: fake-quant modules call
    ``calculate_qparams`` on each forward in training, so each step's
    statistics become global. Every rank must run the same forward passes
    (true for DDP / FSDP training loops).
    """
    found = observers(model)
    for _, obs in found:
        obs.sync = bool(enabled)
    return len(found)


@contextlib.contextmanager
def distributed_calibration(model: nn.Module) -> Iterator[nn.Module]:
    """``with distributed_calibration(model): for x in my_shard: model(x)`` — syncs observers on exit."""
    with torch.no_grad():
        yield model
    sync_observers(model)
