"""A model's shortcut diagnostics on one evaluated split (:mod:`privmed.evaluation.shortcut`), from its images.

Every split a run or ``privmed evaluate`` scores gets them beside its metrics in ``metrics.json``:
``acquisition_baseline_auroc``, ``deconfounded_auroc`` (with ``coverage``), ``model_minus_baseline_auroc``
and, for lesion-centred data (``data.lesion_fraction`` > 0, the default) on every split but the training one,
``lesion_masked_auroc``. They read
only the evaluated split (never the training data) and cost no epsilon; like every figure on a split, they are
not covered by the run's guarantee. Binary tasks only: a multi-label task gets ``shortcut: "binary tasks
only"``; 3D volumes get all three (the lesion region is then the central box of the volume).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from privmed.data.sources import Dataset
from privmed.evaluation.shortcut import acquisition_statistics, lesion_region, mask_lesion, shortcut_metrics

#: what a multi-label split's metrics say instead of the diagnostics
MULTILABEL = "binary tasks only"

ScoreImages = Callable[[torch.Tensor], np.ndarray]


def split_diagnostics(part: Dataset, scores: np.ndarray, *, score_images: ScoreImages | None,
                      lesion_fraction: float, n_resamples: int, seed: int) -> dict:
    """The shortcut figures of ``part`` for a model that gave it ``scores`` (N, labels); ``score_images``
    scores other images as the model does (None, or ``lesion_fraction`` 0: no lesion-masked figure)."""
    if scores.shape[1] != 1:
        return {"shortcut": MULTILABEL}
    masked = None
    if score_images is not None and lesion_fraction > 0:
        images = part.image_tensor
        region = lesion_region(tuple(images.shape[2:]), lesion_fraction)
        masked = np.concatenate([score_images(mask_lesion(images[i:i + 256], region))[:, 0]
                                 for i in range(0, len(images), 256)])
    return shortcut_metrics(labels=part.labels[:, 0], scores=scores[:, 0],
                            statistics=acquisition_statistics(part.images), groups=part.patient_ids,
                            masked_scores=masked, n_resamples=n_resamples, seed=seed)
