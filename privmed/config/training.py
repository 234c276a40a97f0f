"""The ``training`` section: the optimisation schedule, and where and in what chunks it computes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .values import MAX_EPOCHS, MAX_SEED, require

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation schedule. ``batch_size`` is the logical (expected, Poisson) batch;
    ``physical_batch_size`` only bounds memory and never changes the result's privacy. ``feature_cache``:
    where a frozen front end's features are kept on disk between runs (they are derived from the private
    images: keep the folder with the data), ``off`` for nowhere, None for ``$PRIVMED_CACHE`` or else
    ``~/.cache/privmed/features`` (:func:`privmed.training.inputs.feature_cache_dir`); never changes the result."""

    epochs: int = 30
    batch_size: int = 128
    physical_batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True
    ema: float = 0.0  # decay per step of an average of the weights, validated and kept (0: off)
    augment_views: int = 1  # augmented views per image, their gradients averaged before clipping
    seed: int = 0
    bootstrap_resamples: int = 1000
    num_workers: int = 0
    device: str = "auto"
    feature_cache: str | None = None  # frozen features on disk: a folder, off, or None ($PRIVMED_CACHE, else ~/.cache)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "physical_batch_size", "augment_views"):
            require(getattr(self, key) >= 1, "training", key, getattr(self, key), "must be >= 1")
        require(self.epochs <= MAX_EPOCHS, "training", "epochs", self.epochs, f"must be at most {MAX_EPOCHS}")
        require(self.optimizer in OPTIMIZERS, "training", "optimizer", self.optimizer, "use 'sgd' or 'adam'")
        require(self.lr > 0, "training", "lr", self.lr, "must be > 0")
        require(math.isfinite(self.lr), "training", "lr", self.lr, "must be a finite number > 0")
        require(0 <= self.momentum < 1, "training", "momentum", self.momentum, "must be in [0, 1) (0.9 typical)")
        require(0 <= self.weight_decay < math.inf, "training", "weight_decay", self.weight_decay,
                "must be a finite number >= 0 (0: none)")
        require(0 <= self.seed <= MAX_SEED, "training", "seed", self.seed, f"must be an integer from 0 to {MAX_SEED}")
        require(self.num_workers >= 0, "training", "num_workers", self.num_workers,
                "must be >= 0 (0: images decoded in the training process)")
        require(self.augment or self.augment_views == 1, "training", "augment_views", self.augment_views,
                "needs augment: true (the views are augmented copies of each image)")
        require(0.0 <= self.ema < 1.0, "training", "ema", self.ema, "must be in [0, 1): 0 is off, 0.9-0.999 typical")
        require(self.feature_cache is None or self.feature_cache.strip() != "", "training", "feature_cache",
                self.feature_cache, "give a folder for the frozen-feature cache, or off (leave it out for the default)")
        require(self.bootstrap_resamples >= 100, "training", "bootstrap_resamples", self.bootstrap_resamples,
                "must be >= 100")
