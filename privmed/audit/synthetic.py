"""Did a generator memorise patients? A distance-to-closest-record (DCR) membership test.

For every real image, the distance to its closest synthetic image. If the generator
memorised its training images, members (its training split) sit closer to the synthetic
set than non-members do. Score = minus the DCR, so the same attack summaries as for
classifiers apply, and the same rule: an ε lower bound only when membership was decided by
fair coins (canaries in the generator's training data), never for training split vs test split.

Images are compared after per-image standardisation (zero mean, unit variance), so
global brightness and contrast do not count as closeness (:mod:`privmed.evaluation.closest`).
"""

from __future__ import annotations

import numpy as np

from privmed.evaluation.closest import distance_to_closest

from .design import TRAIN_VS_TEST, group_scores
from .summary import AttackSummary, summarize_attack


def dcr_membership(*, synthetic: np.ndarray, members: np.ndarray, non_members: np.ndarray, delta: float,
                   design: str = TRAIN_VS_TEST, n_resamples: int = 1000, seed: int = 0,
                   member_groups: np.ndarray | None = None,
                   non_member_groups: np.ndarray | None = None) -> tuple[AttackSummary, dict]:
    """Attack summary and the median DCR of both groups.

    ``design`` says how membership was decided (:mod:`privmed.audit.design`): ``one-run``
    (members and non-members are canaries put into the generator's training data by fair
    coins) gives an ε lower bound; ``train-vs-test`` (the training split against held-out
    patients) gives AUC and TPR only. ``member_groups``/``non_member_groups`` (one canary id per
    image, ids shared by no member and non-member) score a canary of several images (a patient) by
    the mean of its images' scores; without them each image is a canary.
    """
    d_in = distance_to_closest(members, synthetic)
    d_out = distance_to_closest(non_members, synthetic)
    scores = -np.r_[d_in, d_out]
    is_member = np.r_[np.ones(len(d_in), bool), np.zeros(len(d_out), bool)]
    if member_groups is not None:
        scores, is_member = group_scores(scores, is_member, np.r_[member_groups, non_member_groups])
    summary = summarize_attack("dcr", scores, is_member, design=design, delta=delta, n_resamples=n_resamples,
                               seed=seed)
    return summary, {"median_dcr_members": float(np.median(d_in)), "median_dcr_non_members": float(np.median(d_out))}
