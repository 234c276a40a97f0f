"""Randomised membership: who is in the audited training run is decided by fair coins.

An ε bound needs membership that is random and independent of everything else (the
one-run theorem's premise). A *canary* is the unit a coin decides: one image at the image
unit of privacy, or a group of images sharing a patient id at the patient unit. Each
canary's images are all in or all out, and the attack scores a canary by the mean score of
its images.

Designs (the ``design`` field of every audit result):

* ``one-run`` — canaries in by coin, one training run: gives an ε lower bound.
* ``train-vs-test`` — the run's training split against its test split: a diagnostic only.
  Membership was not randomised and the splits differ (case mix, patients), so an attack
  AUC there measures split differences as much as memorisation; it gives NO ε bound.
"""

from __future__ import annotations

import numpy as np

#: the folder, inside a run or a generator, where audits write
AUDIT_DIR = "audit"

ONE_RUN = "one-run"
TRAIN_VS_TEST = "train-vs-test"
#: which designs randomise membership, and so may give an ε bound
RANDOMISED = {ONE_RUN: True, TRAIN_VS_TEST: False}
DESCRIPTIONS = {
    ONE_RUN: "canaries each in training by an independent fair coin, one training run (Steinke et al. 2023)",
    TRAIN_VS_TEST: "training split vs test split: confounded by split differences, a diagnostic with no ε bound",
}


def canary_groups(n_canaries: int, *, images_per_canary: int = 1) -> np.ndarray:
    """Group id of each canary image: ``images_per_canary`` consecutive images share one id."""
    if n_canaries < 1 or images_per_canary < 1:
        raise ValueError(f"need at least one canary of at least one image, got {n_canaries} x {images_per_canary}")
    return np.repeat(np.arange(n_canaries), images_per_canary)


def coin_membership(groups: np.ndarray, *, rng: np.random.Generator) -> np.ndarray:
    """One fair coin per group, broadcast to its images: bool (N,), True = in training."""
    ids, index = np.unique(np.asarray(groups), return_inverse=True)
    return (rng.random(len(ids)) < 0.5)[index]


def group_scores(scores: np.ndarray, member: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group mean score and the group's coin, groups in sorted id order.

    Raises ``ValueError`` when the images of one group disagree on membership (a group is
    all in or all out by construction).
    """
    scores, member = np.asarray(scores, dtype=np.float64), np.asarray(member, dtype=bool)
    ids, index = np.unique(np.asarray(groups), return_inverse=True)
    count = np.bincount(index, minlength=len(ids))
    in_count = np.bincount(index, weights=member, minlength=len(ids))
    if np.any((in_count > 0) & (in_count < count)):
        raise ValueError("images of one canary group disagree on membership")
    return np.bincount(index, weights=scores, minlength=len(ids)) / count, in_count == count
