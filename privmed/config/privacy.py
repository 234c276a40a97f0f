"""The ``privacy`` section: the DP guarantee, whom it protects, and the head's feature centre."""

from __future__ import annotations

import math
from dataclasses import dataclass

from privmed.errors import EPSILON_AND_TOTAL_EPSILON, EPSILON_NOT_A_NUMBER, EPSILON_NOT_POSITIVE, PrivmedError

from .values import require

ACCOUNTANTS = ("prv", "rdp")
PRIVACY_UNITS = ("patient", "image")
#: where a feature model's head centre comes from (privmed.training.centre.public_centre_inputs)
CENTER_SOURCES = ("auto", "phantom", "channels", "private")
#: the smallest delta privmed accepts: below it, (epsilon, delta) says nothing more than (epsilon, 0) would
MIN_DELTA = 1e-12


@dataclass(frozen=True)
class PrivacyConfig:
    """The DP-SGD guarantee. ``epsilon=inf`` and no ``noise_multiplier`` means non-private.

    Give either a target ``epsilon`` (noise is calibrated for the whole schedule)
    or a ``noise_multiplier`` (epsilon is then whatever the schedule spends), or a
    ``total_epsilon`` for this run's stages together with the recorded stages of the
    upstream records it uses (a DP generator's samples): see :mod:`privmed.privacy.plan`.
    ``unit``: whom the guarantee protects, ``patient`` (one patient and all of their
    images; the default when the data has patient ids) or ``image`` (the default
    otherwise); see :mod:`privmed.privacy.units`. ``max_images_per_patient`` (k, public)
    caps a sampled patient's images in one step. ``delta=None`` means 1/(10 N) for N
    protected units (patients or images). ``replayable_noise`` derives the noise and the
    Poisson batches from ``training.seed`` (debugging, exact reproduction): the run is
    then not private, and its ledger says so. ``center``: a feature model's head centre is the
    mean features of phantom patches (``phantom``: drawn by a program, free), that mean corrected
    by the training data's per-channel mean released with noise ``center_noise_multiplier``
    (``channels``, the default: C numbers released, not C x H x W), or the training mean
    released whole with that noise (``private``). The phantom draws one-channel 2D patches;
    for other images ``channels`` is ``private``. ``auto`` (the phantom where it can be
    drawn, else private) was the default before ``channels``; runs recorded with it rebuild as trained.
    """

    epsilon: float = math.inf
    delta: float | None = None
    noise_multiplier: float | None = None
    clip_norm: float = 1.0
    accountant: str = "prv"
    center_noise_multiplier: float = 5.0  # DP feature centring for feature models, see privmed.training.centre
    center: str = "channels"  # the head's centre: phantom (free), channels (phantom + private per-channel), private
    unit: str | None = None  # None: patient when the data has patient ids, else image
    max_images_per_patient: int = 1  # measured on CBIS-DDSM validation: benchmarks/results/cbis_utility.md (_k2, _k4)
    replayable_noise: bool = False
    total_epsilon: float | None = None  # the run and the upstream records it uses together, see privmed.privacy.plan

    def __post_init__(self) -> None:
        if math.isnan(self.epsilon):
            raise PrivmedError(EPSILON_NOT_A_NUMBER.format(epsilon=self.epsilon))
        if self.epsilon <= 0:
            raise PrivmedError(EPSILON_NOT_POSITIVE.format(epsilon=self.epsilon))
        require(self.delta is None or 0 < self.delta < 1, "privacy", "delta", self.delta,
                "must be a number in (0, 1)")
        require(self.delta is None or self.delta >= MIN_DELTA, "privacy", "delta", self.delta,
                f"is below {MIN_DELTA:g}, too small to mean anything (the accountants cannot resolve it, and "
                f"{MIN_DELTA:g} already makes a failure vanishingly rare); give a delta of at least {MIN_DELTA:g}, "
                f"or leave it out for 1/(10 N)")
        require(self.noise_multiplier is None or 0 <= self.noise_multiplier < math.inf, "privacy",
                "noise_multiplier", self.noise_multiplier, "must be a finite number >= 0")
        require(not (math.isfinite(self.epsilon) and self.noise_multiplier is not None), "privacy",
                "noise_multiplier", self.noise_multiplier, "give either epsilon or noise_multiplier, not both")
        require(self.total_epsilon is None or 0 < self.total_epsilon < math.inf, "privacy", "total_epsilon",
                self.total_epsilon, "must be a finite number > 0 (leave it out for no total target)")
        if self.total_epsilon is not None and math.isfinite(self.epsilon):
            raise PrivmedError(EPSILON_AND_TOTAL_EPSILON)
        require(self.total_epsilon is None or self.noise_multiplier is None, "privacy", "noise_multiplier",
                self.noise_multiplier, "give either total_epsilon or noise_multiplier, not both")
        require(self.clip_norm > 0, "privacy", "clip_norm", self.clip_norm, "must be > 0 (inf disables clipping)")
        require(math.isfinite(self.clip_norm) or self.noise_multiplier == 0, "privacy", "clip_norm", self.clip_norm,
                "an infinite clip norm needs noise_multiplier 0 (noise is scaled by the clip norm)")
        require(self.accountant in ACCOUNTANTS, "privacy", "accountant", self.accountant, "use 'prv' or 'rdp'")
        require(0 < self.center_noise_multiplier < math.inf, "privacy", "center_noise_multiplier",
                self.center_noise_multiplier, "must be a finite number > 0")
        require(self.center in CENTER_SOURCES, "privacy", "center", self.center,
                "use 'auto', 'phantom' (the mean features of phantom patches: free) or 'private' (released with noise)")
        require(self.unit is None or self.unit in PRIVACY_UNITS, "privacy", "unit", self.unit,
                "use 'patient' (one patient and all of their images) or 'image'")
        require(self.max_images_per_patient >= 1, "privacy", "max_images_per_patient", self.max_images_per_patient,
                "must be >= 1 (the images of one patient a step may use)")

    @property
    def private(self) -> bool:
        """True when training runs through DP-SGD."""
        return math.isfinite(self.epsilon) or self.noise_multiplier is not None or self.total_epsilon is not None
