"""A one-shot private linear head: ridge regression on noisy sufficient statistics.

For frozen features, a least-squares head needs only ``X^T X`` and ``X^T y``. Releasing both
once with the Gaussian mechanism ("sufficient statistics perturbation", Vu & Slavkovic 2009,
Sheffet 2017, Wang 2018) gives a private head in one step, and every ridge penalty tried
afterwards is post-processing of the same release (Mehta et al. 2023 report least squares
ahead of logistic regression under DP at small epsilon).

Unit of privacy: each row is clipped to norm ``bound``; each unit (a patient, ``groups[i]``;
or each row when ``groups`` is None) contributes the mean over its rows of ``x x^T`` and of
``y x`` (labels in {-1, 1}). A unit's contribution to the Gram matrix then has Frobenius norm
at most ``bound**2`` and to the moment vector norm at most ``bound``, however many images
the patient has: adding or removing one patient moves each statistic by at most that. The
Gram matrix gets symmetric Gaussian noise (the upper triangle drawn, mirrored) of std
``noise_multiplier * bound**2``, the moment vector noise of std ``noise_multiplier * bound``;
the two releases are two accounted Gaussian mechanisms (sample rate 1, one step each),
composed with every other stage of the run (the private feature centre) by an Opacus
accountant (the privacy plan, :func:`privmed.privacy.plan.make_plan` of :func:`head_stages`, finds the
noise that makes them compose to a target). Noise comes from :mod:`privmed.privacy.randomness` (secret), drawn by the floating-point-safe
:func:`privmed.privacy.mechanisms.gaussian_release`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from privmed.privacy.accounting import Mechanism
from privmed.privacy.mechanisms import gaussian_release
from privmed.privacy.plan import StageSpec
from privmed.privacy.randomness import secret_generator

#: the generator stream of the statistics' noise (distinct from sampling, DP-SGD and the centre)
STATISTICS_STREAM = 0x55A1
#: the two releases, as the ledger names them
GRAM_STAGE, MOMENT_STAGE = "head_gram", "head_moment"
#: the feature centre's stage (privmed.training.centre releases it; the head's plan declares it before the head)
CENTRE_STAGE = "feature_centering"
#: ridge penalties tried (post-processing), in units of the Gram noise's scale (or of 1 when not private)
RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class Statistics:
    """``gram`` (d, d) = sum over units of their mean ``x x^T``; ``moment`` (d,) of their mean ``y x``."""

    gram: torch.Tensor
    moment: torch.Tensor
    n_units: int


def clip_rows(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Each row scaled down (never up) to norm at most ``bound``."""
    norms = x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x * (bound / norms).clamp(max=1.0)


def unit_statistics(x: torch.Tensor, y: torch.Tensor, *, bound: float,
                    groups: np.ndarray | None = None) -> Statistics:
    """The exact statistics of ``x`` (n, d) and labels ``y`` (n,) in {0, 1} (mapped to {-1, 1}), each row
    clipped to ``bound`` and each unit's rows averaged (``groups``: unit index of each row, or None)."""
    x = clip_rows(x.double(), bound)
    signed = (2.0 * y.double().flatten() - 1.0).unsqueeze(1)
    index = torch.arange(len(x)) if groups is None else torch.from_numpy(np.asarray(groups, dtype=np.int64))
    _, index = torch.unique(index, return_inverse=True)
    weight = 1.0 / torch.bincount(index).double()[index]  # 1 / (rows of this row's unit)
    gram = (x * weight.unsqueeze(1)).T @ x
    moment = (x * signed * weight.unsqueeze(1)).sum(0)
    return Statistics(gram, moment, int(index.max()) + 1 if len(index) else 0)


def release(stats: Statistics, *, noise_multiplier: float, bound: float,
            generator: torch.Generator | None = None) -> tuple[Statistics, list[Mechanism]]:
    """The Gaussian release of ``stats`` and its two accounted mechanisms (see the module docstring).
    ``generator``: the noise's source, by default a secret one."""
    generator = generator or secret_generator(stream=STATISTICS_STREAM)
    gram, gram_stage = gaussian_release(stats.gram, sensitivity=bound**2, noise_multiplier=noise_multiplier,
                                        generator=generator, stage=GRAM_STAGE)
    gram = gram.triu() + gram.triu(1).T  # the upper triangle's release, mirrored (the lower one's noise unused)
    moment, moment_stage = gaussian_release(stats.moment, sensitivity=bound, noise_multiplier=noise_multiplier,
                                            generator=generator, stage=MOMENT_STAGE)
    return Statistics(gram, moment, stats.n_units), [gram_stage, moment_stage]


def release_moment(stats: Statistics, *, noise_multiplier: float, bound: float,
                   generator: torch.Generator | None = None) -> tuple[Statistics, list[Mechanism]]:
    """Only the moment vector released (one accounted mechanism; the Gram matrix set to 0, never released):
    the infinite-ridge limit, whose head ``w = X^T y`` is the difference of the class means."""
    generator = generator or secret_generator(stream=STATISTICS_STREAM)
    moment, stage = gaussian_release(stats.moment, sensitivity=bound, noise_multiplier=noise_multiplier,
                                     generator=generator, stage=MOMENT_STAGE)
    return Statistics(torch.zeros_like(stats.gram), moment, stats.n_units), [stage]


def head_stages(*, releases: int = 2, centre_noise: float | None = None) -> list[StageSpec]:
    """The one-shot head's stages, declared to :func:`privmed.privacy.plan.make_plan`: the feature centre with its
    own noise (when ``centre_noise`` is given: released before), then the ``releases`` Gaussian releases (2:
    :func:`release`, 1: :func:`release_moment`) at the one noise the plan calibrates to the target."""
    centre = [StageSpec(CENTRE_STAGE, 1.0, 1, centre_noise)] if centre_noise is not None else []
    return centre + [StageSpec(name, 1.0, 1) for name in (GRAM_STAGE, MOMENT_STAGE)[2 - releases:]]


def ridge_weights(stats: Statistics, *, ridge: float) -> torch.Tensor:
    """Weights ``w`` (d,) of ``(gram + ridge I) w = moment``: least squares, no intercept (a linear score;
    AUROC does not need one)."""
    return ridge_path(stats, ridges=[ridge])[0]


def ridge_path(stats: Statistics, *, ridges: Sequence[float]) -> list[torch.Tensor]:
    """:func:`ridge_weights` for every penalty of ``ridges``, from one eigendecomposition of the Gram matrix
    (a noisy one may have negative eigenvalues: a penalty below them gives a poor head, not an error)."""
    values, vectors = torch.linalg.eigh(stats.gram)
    projected = vectors.T @ stats.moment
    out = []
    for ridge in ridges:
        shifted = values + ridge
        safe = torch.where(shifted.abs() < 1e-12, torch.full_like(shifted, 1e-12), shifted)
        out.append(vectors @ (projected / safe))
    return out


def ridge_scale(*, noise_multiplier: float, bound: float, dims: int) -> float:
    """The unit of :data:`RIDGE_GRID`: the Gram noise's spectral scale (about ``2 sigma bound^2 sqrt(d)``), or
    ``bound**2`` when not private."""
    return max(2.0 * noise_multiplier * bound**2 * dims**0.5, bound**2)
