"""The ``model`` section: which network, its arguments, weights and what of it trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .values import require


#: model.freeze: which part of a pretrained network trains (privmed.models.finetune.FREEZE_MODES)
FREEZE_MODES = ("none", "backbone", "last_block", "bias", "lora")


@dataclass(frozen=True)
class ModelConfig:
    """Which network: a registry name (``privmed models`` lists them) or ``monai:Name``; its keyword ``args``,
    pretrained ``weights`` on disk, ``freeze`` (``backbone``: only the classifier layer trains; ``last_block``,
    ``bias``, ``lora``: :mod:`privmed.models.finetune`) and
    ``replace_batchnorm`` (Opacus's ModuleValidator.fix): see :mod:`privmed.models.configured`."""

    name: str = "scatter_linear"
    norm: str = "group"
    args: dict[str, Any] = field(default_factory=dict, hash=False)
    weights: str | None = None
    freeze: str = "none"
    replace_batchnorm: bool = False

    def __post_init__(self) -> None:
        require(self.norm in ("group", "batch"), "model", "norm", self.norm, "use 'group' (DP-safe) or 'batch'")
        require(isinstance(self.args, Mapping) and all(isinstance(k, str) for k in self.args), "model", "args",
                 self.args, "give a mapping of argument names to values, e.g. {width: 0.5}")
        object.__setattr__(self, "args", dict(self.args))
        require(self.freeze in FREEZE_MODES, "model", "freeze", self.freeze, f"use one of {', '.join(FREEZE_MODES)}")
        require(self.freeze == "none" or self.weights, "model", "freeze", self.freeze, "needs --model-weights")
