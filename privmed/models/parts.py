"""Which part of a model is trained: the head behind a frozen front end, or the whole model.

Models with a frozen, data-independent front end (the scattering models) declare it with
``frozen_front_end = True`` and expose ``model.features`` and ``model.head``; DP-SGD and the
checkpoints see only the head (:mod:`privmed.training.inputs` computes the head's inputs).
"""

from __future__ import annotations

from torch import nn

__all__ = ["FrontEndClassifier", "is_feature_model", "trainable_part"]


class FrontEndClassifier(nn.Module):
    """``head(features(x))`` with a frozen front end: the trainer computes ``features`` once and
    trains (and puts through Opacus) only ``head``."""

    frozen_front_end = True

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))


def is_feature_model(model: nn.Module) -> bool:
    """True for models that declare a frozen ``features`` front end and a trainable ``head``.

    Declared, not guessed: a CNN may well name its layers ``features`` and ``head``
    and still be trained end to end.
    """
    return bool(getattr(model, "frozen_front_end", False))


def trainable_part(model: nn.Module) -> nn.Module:
    """The module DP-SGD trains and checkpoints store: ``model.head`` or the whole model."""
    return model.head if is_feature_model(model) else model
