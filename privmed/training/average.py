"""An exponential moving average (EMA) of the trained weights, for evaluation and the kept checkpoint.

The average is a function of the weights DP-SGD released after each step, so it is
post-processing and costs no privacy (De et al. 2022 use it to recover much of DP-SGD's
noise). It is updated after every logical step, not after the physical batches Opacus
accumulates: the hook sits on the optimiser privmed built, which Opacus's DP optimiser calls
once per logical batch and skips in between.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def attach_average(net: nn.Module, optimizer: torch.optim.Optimizer, *, decay: float) -> AveragedModel | None:
    """An EMA of ``net``'s weights with ``decay`` per logical step, updated after every step of
    ``optimizer`` (before Opacus wraps it); None when ``decay`` is 0 (off)."""
    if decay == 0:
        return None
    average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    optimizer.register_step_post_hook(lambda *_: average.update_parameters(net))
    return average


def evaluated(net: nn.Module, average: AveragedModel | None) -> nn.Module:
    """The model a run validates and keeps: the weights' average when there is one (before the
    first step, the weights themselves)."""
    if average is None or int(average.n_averaged) == 0:
        return net
    return average.module
