"""The ``synthetic`` section: synthetic images in classifier training, and how they are used."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .values import MAX_EPOCHS, require


SYNTHETIC_USES = ("augment", "pretrain", "only")
FINETUNE_MODES = ("full", "head")


@dataclass(frozen=True)
class SyntheticConfig:
    """Synthetic images in classifier training (``path=None``: none).

    ``use``: ``augment`` (real + synthetic under DP-SGD), ``pretrain`` (non-private
    training on synthetic, then DP fine-tuning on real: ``finetune`` the ``full`` model or
    only its ``head``, keeping the pretrained head or re-initialising it) or ``only``
    (synthetic alone; the private training split is not touched).
    ``pretrain_lr=None`` means ``training.lr``. ``public``: the user declares that the
    folder holds no patient of the private data (a public data set, or samples of a
    generator trained only on public data), so it costs no privacy; the ledger states
    the declaration and privmed checks what it can (no identical image, no shared
    patient id, no generator trained on the private data).
    """

    path: str | None = None
    use: str = "pretrain"
    finetune: str = "full"
    reinit_head: bool = False
    pretrain_epochs: int = 20
    pretrain_lr: float | None = None
    public: bool = False

    def __post_init__(self) -> None:
        require(not self.public or self.path is not None, "synthetic", "public", self.public,
                "needs the folder it declares public; give it with --synthetic")
        require(self.use in SYNTHETIC_USES, "synthetic", "use", self.use, f"use one of {list(SYNTHETIC_USES)}")
        require(self.finetune in FINETUNE_MODES, "synthetic", "finetune", self.finetune,
                f"use one of {list(FINETUNE_MODES)}")
        require(1 <= self.pretrain_epochs <= MAX_EPOCHS, "synthetic", "pretrain_epochs", self.pretrain_epochs,
                f"must be >= 1 and at most {MAX_EPOCHS}")
        require(self.pretrain_lr is None or 0 < self.pretrain_lr < math.inf, "synthetic", "pretrain_lr",
                self.pretrain_lr, "must be > 0")
