"""Configuration of ``privmed synth train``: frozen, validated, unknown keys rejected.

Shares the ``data`` and ``privacy`` sections (and their option names) with
``privmed train``; ``gan`` holds what is specific to the generator::

    data:    {path: ../shared/data/cbis-ddsm-masses, image_size: 64}
    privacy: {epsilon: 10}
    gan:     {epochs: 100, batch_size: 64, lr_d: 2.0e-4, lr_g: 2.0e-4, width: 32, seed: 0}
    out: gens/g10
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from privmed.config import DataConfig, PrivacyConfig, reject_unknown, require, section_from_dict, to_plain
from privmed.errors import PrivmedError

from .candidates import FROM_PRIOR
from .gan import DISCRIMINATORS


MINIBATCH_STD_PRIVATE = ("gan.minibatch_std (--minibatch-std) needs a non-private generator: it is a statistic of "
                         "the whole batch, which DP-SGD's per-sample clipping cannot bound. Drop --epsilon or the "
                         "option.")


@dataclass(frozen=True)
class GanConfig:
    """The adversarial schedule. ``batch_size`` is the expected (Poisson) number of real
    images per discriminator step; each step also sees as many generated images."""

    epochs: int = 100
    batch_size: int = 64
    lr_d: float = 2e-4
    lr_g: float = 2e-4
    width: int = 32  # generator base width
    disc_width: int | None = None  # pixel discriminator's base width (None: width); DP favours a small one
    discriminator: str = "pixel"  # "pixel" (MCGAN-like) or "scatter" (small head on scattering features)
    minibatch_std: bool = False  # pixel discriminator sees each batch's spread; non-private only
    diff_augment: bool = False  # D sees real and generated images through the same random augmentations
    real_label: float = 0.9  # one-sided label smoothing
    ema: float = 0.999  # generator weights averaged over steps; samples come from the average
    grid_every: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "width", "grid_every"):
            require(getattr(self, key) >= 1, "gan", key, getattr(self, key), "must be >= 1")
        for key in ("lr_d", "lr_g"):
            require(getattr(self, key) > 0, "gan", key, getattr(self, key), "must be > 0")
        require(self.disc_width is None or self.disc_width >= 1, "gan", "disc_width", self.disc_width,
                "must be >= 1")
        require(self.discriminator in DISCRIMINATORS, "gan", "discriminator", self.discriminator,
                "use 'pixel' (MCGAN-like) or 'scatter'")
        require(0.5 < self.real_label <= 1.0, "gan", "real_label", self.real_label, "must be in (0.5, 1]")
        require(0.0 <= self.ema < 1.0, "gan", "ema", self.ema, "must be in [0, 1)")


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything one ``privmed synth train`` run needs."""

    out: str = "gens/latest"
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    def __post_init__(self) -> None:
        if self.data.spatial_dims != 2:
            raise PrivmedError("the generator makes 2D patches; data.spatial_dims must be 2.")
        if len(self.data.label_columns) != 1:
            raise PrivmedError("the generator is conditioned on one binary label; give one label column.")
        if self.gan.minibatch_std and self.privacy.private:
            raise PrivmedError(MINIBATCH_STD_PRIVATE)
        if self.gan.minibatch_std and self.gan.discriminator != "pixel":
            raise PrivmedError("gan.minibatch_std belongs to the pixel discriminator; drop it or use "
                               "--discriminator pixel.")

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """What must not change on --resume."""
        d = self.to_dict()
        d.pop("out")
        d["gan"].pop("device")
        d["gan"].pop("grid_every")
        return d


_SECTIONS = {"data": DataConfig, "privacy": PrivacyConfig, "gan": GanConfig}


def generator_config_from_dict(raw: Mapping[str, Any]) -> GeneratorConfig:
    """Build a :class:`GeneratorConfig` from nested dicts; unknown keys raise :class:`PrivmedError`."""
    reject_unknown(raw, {"out", *_SECTIONS}, "top-level")
    kwargs: dict[str, Any] = {name: section_from_dict(cls, raw.get(name) or {}, name)
                              for name, cls in _SECTIONS.items()}
    if "out" in raw:
        kwargs["out"] = str(raw["out"])
    return GeneratorConfig(**kwargs)



EVOLVE_NEEDS_EPSILON = ("private evolution releases noisy vote histograms of the private data: give --epsilon (the "
                        "target for all rounds together) or --noise-multiplier.")


@dataclass(frozen=True)
class EvolutionConfig:
    """Private evolution's schedule (``privmed synth evolve``): ``rounds`` noisy vote histograms over
    ``population`` phantom candidates per class; each round keeps the winners (votes above
    ``threshold`` x the noise's standard deviation), mutates them by ``step`` x their prior range
    (``step`` shrinks by ``decay`` per round) and replaces a ``fresh`` share by new prior draws.
    ``n`` images are written, half per class. ``vary``: ``all`` parameters evolve, or only the ``appearance``
    ones, every new candidate taking its lesion's morphology (shape, margin, spiculation) fresh from its class's
    prior (:data:`privmed.synth.candidates.FROM_PRIOR`)."""

    rounds: int = 4
    population: int = 32
    n: int = 2000
    threshold: float = 1.0
    step: float = 0.15
    decay: float = 0.6
    fresh: float = 0.1
    vary: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        for key, minimum in (("rounds", 1), ("population", 2), ("n", 2)):
            require(getattr(self, key) >= minimum, "evolve", key, getattr(self, key), f"must be >= {minimum}")
        require(self.threshold >= 0, "evolve", "threshold", self.threshold, "must be >= 0 (in noise std)")
        require(0 < self.step <= 1, "evolve", "step", self.step, "must be in (0, 1] (a share of the prior range)")
        require(0 < self.decay <= 1, "evolve", "decay", self.decay, "must be in (0, 1]")
        require(0 <= self.fresh < 1, "evolve", "fresh", self.fresh, "must be in [0, 1)")
        require(self.vary in FROM_PRIOR, "evolve", "vary", self.vary, f"use one of {', '.join(FROM_PRIOR)}")
        require(self.seed >= 0, "evolve", "seed", self.seed, "must be >= 0")


@dataclass(frozen=True)
class EvolveConfig:
    """Everything one ``privmed synth evolve`` run needs (``privacy.clip_norm`` and
    ``max_images_per_patient`` do not apply: a patient's vote has norm 1 by construction)."""

    out: str = "gens/evolved"
    data: DataConfig = field(default_factory=DataConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evolve: EvolutionConfig = field(default_factory=EvolutionConfig)

    def __post_init__(self) -> None:
        if self.data.spatial_dims != 2 or len(self.data.label_columns) != 1:
            raise PrivmedError("private evolution makes 2D patches of one binary label: data.spatial_dims must be 2 "
                               "and one label column given.")
        if not self.privacy.private:
            raise PrivmedError(EVOLVE_NEEDS_EPSILON)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(dataclasses.asdict(self))


_EVOLVE_SECTIONS = {"data": DataConfig, "privacy": PrivacyConfig, "evolve": EvolutionConfig}


def evolve_config_from_dict(raw: Mapping[str, Any]) -> EvolveConfig:
    """Build an :class:`EvolveConfig` from nested dicts; unknown keys raise :class:`PrivmedError`."""
    reject_unknown(raw, {"out", *_EVOLVE_SECTIONS}, "top-level")
    kwargs: dict[str, Any] = {name: section_from_dict(cls, raw.get(name) or {}, name)
                              for name, cls in _EVOLVE_SECTIONS.items()}
    if "out" in raw:
        kwargs["out"] = str(raw["out"])
    return EvolveConfig(**kwargs)
