"""The ``tune`` section: a private hyper-parameter search over training keys."""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, fields

from .training import TrainingConfig
from .values import MAX_EPOCHS, require


@dataclass(frozen=True)
class TuneConfig:
    """A private hyper-parameter search: every combination of the values given is a candidate.

    Each candidate is trained with DP-SGD on the private data at one shared noise multiplier,
    calibrated so that all candidates together (plain composition, through the accountant)
    spend the run's target epsilon; the candidate and epoch with the best validation AUROC
    are kept. Empty (the default): no search, one candidate.
    """

    lr: tuple[float, ...] = ()
    epochs: tuple[int, ...] = ()
    batch_size: tuple[int, ...] = ()
    weight_decay: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for key in ("lr", "epochs", "batch_size"):
            require(all(0 < v < math.inf for v in getattr(self, key)), "tune", key, getattr(self, key),
                    "every value must be a finite number > 0")
        require(all(v <= MAX_EPOCHS for v in self.epochs), "tune", "epochs", self.epochs,
                f"every value must be at most {MAX_EPOCHS}")
        require(all(0 <= v < math.inf for v in self.weight_decay), "tune", "weight_decay", self.weight_decay,
                "every value must be a finite number >= 0")

    @property
    def grid(self) -> dict[str, tuple]:
        """The searched keys of the training section and their values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def candidates(self, training: "TrainingConfig") -> list["TrainingConfig"]:
        """The training configurations searched, in a fixed order (``[training]`` without a grid)."""
        grid = self.grid
        combos = itertools.product(*grid.values())
        return [dataclasses.replace(training, **dict(zip(grid, combo))) for combo in combos] if grid else [training]
