"""Crafted canaries: images with a random label that a model can only fit by memorising them.

Each canary is one image of uniform pixel noise in [0, 1], drawn from
the audit's seeded generator (``AuditConfig.seed``): canaries and their coins are the
auditor's design, not the mechanism's secret.

Why uniform noise, measured (``docs/findings/audit-canaries.md``, phantom data of ``tests/test_audit.py``,
non-private runs, 400 canaries, loss attack): structured alternatives (random low-frequency
fields, Gaussian blobs, oriented gratings and Gabor atoms, patchworks of textures of random
scale and contrast, random local spectra, and mixes of these with random mean, contrast and
grey-level curve) spread further apart in dihedral-averaged scattering features (1.4 to 1.9
times the mean pairwise distance) but were not more memorable on average: plain ``scatter_linear``
AUC .81 against .88 for noise, dihedral-averaged .60 against .64 (means over 2 to 3 audit seeds).
Their extra spread lies in a few shared directions (global contrast, grain size), which a
model cannot use to tell one canary from another; uniform noise spreads its (smaller)
differences over hundreds of feature directions. Under dihedral averaging the limit is the
model's fit, not the canaries (see ``docs/models.md``).

A patient canary (``images_per_canary > 1``) is ONE noise pattern seen several times, each
image with small independent jitter (``PATIENT_JITTER``), like several views of one breast:
its images push a model the same way, so their gradients add up (the patient's summed
clipped gradient reaches the full clip norm, where independent noise images, nearly
orthogonal, reach about 1/sqrt(k) of it). That is the worst case a patient-level guarantee
must cover, and the strongest signal for the audit.
"""

from __future__ import annotations

import numpy as np

#: std of the pixel noise that varies the images of one patient canary around its pattern
PATIENT_JITTER = 0.05


def crafted_canaries(groups: np.ndarray, *, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One crafted image per entry of ``groups`` (canary ids, see :func:`~privmed.audit.design.canary_groups`):
    float32 ``(len(groups), *shape)`` in [0, 1].

    Each canary (id) gets one uniform-noise pattern; a canary of several images (a patient) is
    that pattern with ``PATIENT_JITTER`` Gaussian jitter per image, clipped to [0, 1].
    Deterministic given ``rng``'s state; one image per canary draws exactly
    ``rng.random((len(groups), *shape))``.
    """
    ids, index = np.unique(np.asarray(groups), return_inverse=True)
    patterns = rng.random((len(ids), *shape), dtype=np.float32)
    if len(ids) == len(index):
        return patterns[index]
    jitter = PATIENT_JITTER * rng.standard_normal((len(index), *shape))
    return np.clip(patterns[index] + jitter, 0.0, 1.0).astype(np.float32)
