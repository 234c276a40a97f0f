"""What a run carries between its stages: where training stands (saved in every checkpoint) and
the synthetic images it trains on, as plain records with no behaviour."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .synthetic import SyntheticSource


@dataclass
class TrainState:
    """Where training stands: the candidate and epoch reached, the best (candidate, epoch) on
    validation so far, the history, and the DP-SGD steps of candidates already finished."""

    candidate: int = 0
    epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_auroc": -math.inf, "candidate": 0, "epoch": -1, "state": None})
    history: list = field(default_factory=list)
    finished_steps: list = field(default_factory=list)


@dataclass
class SyntheticInputs:
    """Synthetic images as model inputs (features for feature models), with their origin."""

    x: torch.Tensor
    y: torch.Tensor
    source: SyntheticSource
