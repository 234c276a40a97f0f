"""The privacy ledger of a run: every stage that touched the private training data.

Written to ``RUN/privacy.json`` as a :class:`~privmed.privacy.record.PrivacyRecord`
(:meth:`PrivacyLedger.record`). A stage is either an accounted mechanism
(:class:`~privmed.privacy.accounting.Mechanism`) or a non-private stage with a
reason; one non-private stage makes the whole run non-private, and the ledger
says so in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .accounting import Mechanism, epsilon_for
from .record import PrivacyRecord, Stage
from .units import PrivacyUnit, group_privacy_sentence

#: what a data-dependent record's epsilon does not cover, said in every such record (``not_covered``)
PUBLIC_N = ("The data set's size N (the number of protected {unit}s in the training split) is treated as public: "
            "delta (by default 1/(10 N)) and the sampling rate (batch / N) derive from it, so this record releases N "
            "and epsilon does not protect it.")
NOT_DP_OUTPUTS = ("Test metrics and predictions (metrics.json, predictions.csv, every evaluation on test or "
                  "external data) are computed without noise: they are not differentially private; epsilon covers "
                  "the training split only.")
NOT_COVERED_SHORT = "N is treated as public; test metrics and predictions are not DP."
#: what a NOT PRIVATE run's history.csv, train.log and progress bar show where a private run shows its epsilon
NOT_PRIVATE_EPSILON = "not private"


def shown_epsilon(spent: float, *, private: bool) -> float | str:
    """The epsilon spent so far as a run shows it per epoch: the number for a private run, else
    :data:`NOT_PRIVATE_EPSILON` (replayable noise or a non-private input make any number a false claim)."""
    return spent if private and math.isfinite(spent) else NOT_PRIVATE_EPSILON


def epsilon_text(shown: float | str) -> str:
    """:func:`shown_epsilon`'s value for a progress bar: 3 significant digits, or the words."""
    return shown if isinstance(shown, str) else f"{shown:.3g}"


ZERO_NOISE = "Stage '{stage}' added no noise (noise multiplier 0), so it gives no differential privacy."


@dataclass
class PrivacyLedger:
    """Accounted stages plus reasons the run is not private (if any).

    ``unit`` ('patient' or 'image') is whom the guarantee protects and ``unit_description``
    says it in words (from :meth:`privmed.privacy.units.PrivacyUnit.describe`); ``n_private``
    counts private training images.
    """

    delta: float
    accountant: str
    clip_norm: float
    n_private: int
    unit: str = "image"
    unit_description: str = ""
    max_per_unit: int = 1
    mechanisms: list[Mechanism] = field(default_factory=list)
    non_private_reasons: list[str] = field(default_factory=list)
    validation_choices: list[str] = field(default_factory=list)
    free_inputs: list[str] = field(default_factory=list)  # sentences: inputs made without private data, no cost
    upstream: list[str] = field(default_factory=list)  # records composed into this one: path, digest, seal

    @classmethod
    def for_unit(cls, unit: PrivacyUnit, *, delta: float, accountant: str, clip_norm: float,
                 n_private: int, contribution: str | None = None) -> "PrivacyLedger":
        """An empty ledger that protects ``unit`` (its name, description and cap; ``contribution``: how a
        patient enters a mechanism other than DP-SGD, see :meth:`PrivacyUnit.describe`)."""
        return cls(delta=delta, accountant=accountant, clip_norm=clip_norm, n_private=n_private, unit=unit.name,
                   unit_description=unit.describe(contribution=contribution), max_per_unit=unit.max_per_unit)

    @property
    def private(self) -> bool:
        return not self.reasons

    @property
    def reasons(self) -> list[str]:
        """Why the run is not private: the stated reasons, and every stage run without noise."""
        silent = [ZERO_NOISE.format(stage=m.stage) for m in self.mechanisms if m.noise_multiplier <= 0]
        return self.non_private_reasons + [r for r in silent if r not in self.non_private_reasons]

    @property
    def epsilon(self) -> float:
        """Composed epsilon of all accounted stages (inf when the run is not private)."""
        if not self.private:
            return math.inf
        return epsilon_for(self.mechanisms, delta=self.delta, accountant=self.accountant)

    def stage(self, name: str) -> Mechanism | None:
        return next((m for m in self.mechanisms if m.stage == name), None)

    def stage_epsilons(self) -> list[float]:
        """Each accounted stage's epsilon on its own, at the ledger's delta."""
        return [epsilon_for([m], delta=self.delta, accountant=self.accountant) for m in self.mechanisms]

    def summary(self) -> str:
        """One sentence for the CLI and reports."""
        return self._summary(self.epsilon, self.stage_epsilons() if self.private else [])

    def _summary(self, epsilon: float, alone: list[float]) -> str:
        if not self.private:
            return "NOT PRIVATE: " + " ".join(self.reasons)
        stages = ", ".join(f"{m.stage} alone {e:.3g}" for m, e in zip(self.mechanisms, alone)) or "none"
        free = "".join(f" {sentence}." for sentence in self.free_inputs)
        return (f"(epsilon={epsilon:.3g}, delta={self.delta:.3g})-DP; unit of privacy: {self.who}; "
                f"{self.accountant.upper()} accountant; stages: {stages}.{free} {NOT_COVERED_SHORT}"
                f"{self._unit_caveat(epsilon)}")

    @property
    def not_covered(self) -> list[str]:
        """What the epsilon does not cover, in words (none for a ledger with no accounted stage)."""
        return [PUBLIC_N.format(unit=self.unit), NOT_DP_OUTPUTS] if self.mechanisms else []

    @property
    def who(self) -> str:
        """The protected individuals in words, e.g. '578 patients (one patient and all of their images; ...)'."""
        return self.unit_description or f"{self.n_private} training images (one image)"

    def _unit_caveat(self, epsilon: float) -> str:
        if self.unit == "patient" or not self.mechanisms:
            return ""
        return " " + group_privacy_sentence(epsilon, self.delta)

    def to_dict(self) -> dict[str, Any]:
        """``privacy.json`` as a JSON mapping (:meth:`record`'s)."""
        return self.record().to_dict()

    def record(self) -> PrivacyRecord:
        """The frozen record ``privacy.json`` holds (written by :func:`privmed.rundir.write_record`): every
        accountant computation done once."""
        sgd = self.stage("dp_sgd") or (self.mechanisms[-1] if self.mechanisms else None)
        eps = self.epsilon
        alone = self.stage_epsilons()
        return PrivacyRecord(
            private=self.private,
            epsilon=eps,
            delta=self.delta if self.private else None,
            accountant=self.accountant,
            noise_multiplier=sgd.noise_multiplier if sgd else 0.0,
            sample_rate=sgd.sample_rate if sgd else None,
            steps=sgd.steps if sgd else 0,
            clip_norm=self.clip_norm,
            n_private_samples=self.n_private,
            unit=self.unit,
            protects=self.who,
            max_images_per_patient=self.max_per_unit if self.unit == "patient" else None,
            stages=tuple(Stage(stage=m.stage, noise_multiplier=m.noise_multiplier, sample_rate=m.sample_rate,
                               steps=m.steps, epsilon_alone=e) for m, e in zip(self.mechanisms, alone)),
            non_private_reasons=tuple(self.reasons),
            validation_choices=tuple(self.validation_choices),
            free_inputs=tuple(self.free_inputs),
            not_covered=tuple(self.not_covered),
            upstream=tuple(self.upstream),
            summary=self._summary(eps, alone),
        )
