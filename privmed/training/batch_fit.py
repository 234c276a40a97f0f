"""The physical batch: the largest that fits in memory, measured and probed before anything is written."""

from __future__ import annotations

import copy
import dataclasses
import logging

import torch
from torch import nn

from privmed.config import RunConfig
from privmed.errors import BATCH_TOO_LARGE, PHYSICAL_BATCH_LOWERED, PrivmedError

from .memory import choose_physical_batch, gigabytes, measure

LOG = logging.getLogger(__name__)


def fit_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> RunConfig:
    """``config`` with the largest physical batch that fits in memory (:mod:`privmed.training.memory`), then
    one step at that size; refuses, saying what one sample needs, when not even one fits."""
    try:
        plan = measure(net, x, y, private=config.privacy.private, device=device)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        _probe_physical_batch(net, x, y, config, device)  # says which physical batch to try
        raise
    requested = min(config.training.physical_batch_size, len(x))
    chosen = choose_physical_batch(plan, requested, what=f"{config.model.name} at {config.data.image_size} px "
                                                         f"({config.data.spatial_dims}D)")
    if chosen < requested:
        note = PHYSICAL_BATCH_LOWERED.format(requested=requested, available=gigabytes(plan.available),
                                             per_sample=gigabytes(plan.per_sample), chosen=chosen,
                                             logical=config.training.batch_size)
        LOG.warning(note)
        config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                          physical_batch_size=chosen))
    _probe_physical_batch(net, x, y, config, device)
    return config


def _out_of_memory(err: Exception) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "memory" in str(err).lower() or "allocate" in str(err).lower()


def _probe_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> None:
    """One forward/backward at the physical batch size, so an out-of-memory shows before any writing."""
    size = min(config.training.physical_batch_size, len(x))
    probe = copy.deepcopy(net).to(device)
    try:
        loss = nn.functional.binary_cross_entropy_with_logits(probe(x[:size].to(device)), y[:size].to(device))
        loss.backward()
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        raise PrivmedError(BATCH_TOO_LARGE.format(batch=size, reason=str(err).splitlines()[0][:200],
                                                  suggest=max(1, size // 4))) from None
    finally:
        del probe
