"""Distance to the closest record: how near each image comes to a set of other images.

Images are compared after per-image standardisation (zero mean, unit variance), so global
brightness and contrast do not count as closeness. The memorisation measures of synthetic data
(:mod:`privmed.synth.quality`) and the DCR membership attack (:mod:`privmed.audit.synthetic`)
both use it.
"""

from __future__ import annotations

import numpy as np
import torch


def standardise(images: np.ndarray) -> torch.Tensor:
    """(N, ...) -> (N, D) float64, each row zero mean and unit variance."""
    flat = torch.as_tensor(np.asarray(images), dtype=torch.float64).flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    return flat / flat.std(1, keepdim=True).clamp_min(1e-8)


def distance_to_closest(records: np.ndarray, others: np.ndarray, *, chunk: int = 512) -> np.ndarray:
    """Euclidean distance from each record to its nearest image of ``others`` (both standardised)."""
    if len(others) == 0 or len(records) == 0:
        raise ValueError("need at least one record and one image to compare it with")
    reference = standardise(others)
    rec = standardise(records)
    return torch.cat([torch.cdist(rec[i:i + chunk], reference).min(1).values
                      for i in range(0, len(rec), chunk)]).numpy()
