"""The privacy plan of a run: whom it protects, the Poisson schedules, the noise, and the ledger's stages.

Fixed before training starts (a resumed run keeps its recorded noise); the DP-SGD stages of
every hyper-parameter candidate are composed into the reported epsilon at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privmed.config import RunConfig
from privmed.data.sources import Dataset
from privmed.errors import RESUME_OTHER_UNIT, PrivmedError
from privmed.models.pretrained import pretrained_inputs
from privmed.privacy.accounting import Mechanism, epsilon_for
from privmed.privacy.engine import Engine, Schedule, plan_schedule
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.plan import PrivacyPlan, StageSpec, make_plan
from privmed.privacy.plan import protected_unit as plan_unit
from privmed.privacy.randomness import REPLAYABLE_NOT_PRIVATE
from privmed.privacy.units import PrivacyUnit

from .dp_head import CENTRE_STAGE  # the feature centre (privmed.training.centre), released once with its own noise

from .state import SyntheticInputs, TrainState

GENERATOR_OTHER_UNIT = ("The generator '{generator}' protects one {generator_unit} per unit of privacy and this run "
                        "protects one {unit}, so its epsilon does not compose into a {unit}-level guarantee. Train the "
                        "generator with privacy.unit '{unit}'.")


@dataclass(frozen=True)
class ClassifierPlan:
    """The classifier's privacy: the :class:`~privmed.privacy.plan.PrivacyPlan` of its declared stages (the
    feature centre, the DP-SGD of every hyper-parameter candidate), plus what the classifier adds to it.

    ``privacy.unit`` is the unit of the private training data (``protected``); ``sampled`` the unit the
    Poisson sampler draws from (the same, plus each synthetic image as its own unit when synthetic images
    are mixed in, or synthetic images alone). ``schedules`` has one entry per hyper-parameter candidate (one
    without a search); all share ``noise_multiplier``.
    """

    privacy: PrivacyPlan
    sampled: PrivacyUnit
    schedules: list[Schedule]
    center_noise_multiplier: float | None  # None: exact (non-private) centring or no centring

    @property
    def protected(self) -> PrivacyUnit:
        return self.privacy.unit

    @property
    def delta(self) -> float:
        return self.privacy.delta

    @property
    def noise_multiplier(self) -> float:
        """The DP-SGD noise of every candidate (0 for non-private)."""
        return self.privacy.noise_multiplier

    @property
    def replay_seed(self) -> int | None:
        """None: secret randomness; else the seed noise and sampling are derived from."""
        return self.privacy.replay_seed

    def record(self) -> dict:
        """What a checkpoint keeps of the plan (no randomness, no data)."""
        return {"noise_multiplier": self.noise_multiplier, "unit": self.protected.name,
                "max_per_unit": self.protected.max_per_unit}


def dp_sgd_stages(plan: ClassifierPlan, state: TrainState, candidates: list, config: RunConfig) -> list[Mechanism]:
    """One accounted DP-SGD stage per candidate trained (the kept one named ``dp_sgd``)."""
    if not config.privacy.private:
        return []
    stages = []
    for c, (schedule, steps) in enumerate(zip(plan.schedules, state.finished_steps)):
        name = "dp_sgd" if c == state.best["candidate"] else f"dp_sgd_tuning_candidate_{c}"
        stages.append(Mechanism(name, plan.noise_multiplier, schedule.sample_rate, steps))
    return stages


def validation_choices(config: RunConfig, candidates: list, best: dict, n_val: int) -> list[str]:
    """Sentences for the ledger: what was chosen by looking at the private validation split."""
    choices = []
    if len(candidates) > 1:
        grid = ", ".join(f"{k} in {list(v)}" for k, v in config.tune.grid.items())
        kept = candidates[best["candidate"]]
        chosen = ", ".join(f"{k}={getattr(kept, k)}" for k in config.tune.grid)
        spent = ("each trained with DP-SGD on the private training data at one shared noise multiplier, and all "
                 "of them are composed in the epsilon above" if config.privacy.private
                 else "each trained on the private training data")
        choices.append(f"Hyper-parameters were searched over {grid}: {len(candidates)} candidates, {spent}; the "
                       f"candidate kept ({chosen}) was chosen by AUROC on the private validation split.")
    choices.append(
        f"The checkpoint (epoch {best['epoch']} of {candidates[best['candidate']].epochs}) was selected by AUROC on "
        f"the private validation split ({n_val} samples), and decision thresholds were chosen on it (Youden); "
        f"these choices are not covered by the epsilon above.")
    return choices

def protected_unit(config: RunConfig, train_data: Dataset, checkpoint: dict | None) -> PrivacyUnit:
    """The unit of privacy of the private training split (a resumed run must keep its own)."""
    unit = plan_unit(config.privacy, patient_ids=train_data.patient_ids, n=len(train_data))
    recorded = (checkpoint or {}).get("plan", {}).get("unit")
    if recorded is not None and recorded != unit.name:
        raise PrivmedError(RESUME_OTHER_UNIT.format(path=config.out, recorded=recorded, unit=unit.name))
    return unit


def sampled_unit(config: RunConfig, protected: PrivacyUnit, synthetic: "SyntheticInputs | None") -> PrivacyUnit:
    """What the Poisson sampler draws: the private units, each synthetic image as a unit of its own
    after them (augment), or synthetic images alone (only)."""
    if synthetic is None or config.synthetic.use == "pretrain":
        return protected
    extra = np.arange(len(synthetic.x), dtype=np.int64)
    if config.synthetic.use == "only":
        return PrivacyUnit("image", extra, 1)
    return PrivacyUnit(protected.name, np.concatenate([protected.groups, extra + protected.n_units]),
                       protected.max_per_unit)


def plan_privacy(config: RunConfig, protected: PrivacyUnit, sampled: PrivacyUnit, candidates: list, *,
                 checkpoint: dict | None, has_center: bool,
                 synthetic: "SyntheticInputs | None" = None) -> ClassifierPlan:
    """The classifier's stages declared to the privacy plan: the feature centre (its own noise) and the DP-SGD of
    every candidate (one shared noise), calibrated to ``privacy.epsilon`` (a generator's stages composed on top)
    or, with ``privacy.total_epsilon``, to the total with the recorded stages of ``synthetic``'s source.

    The protected units (patients or images of the private split) set delta; the sampled units (private plus any
    synthetic mixed in) the Poisson sample rate.
    """
    p = config.privacy
    schedules = [plan_schedule(sampled, batch_size=c.batch_size, epochs=c.epochs) for c in candidates]
    center_sigma = p.center_noise_multiplier if has_center and p.private else None
    stages = [StageSpec(CENTRE_STAGE, 1.0, 1, center_sigma)] if center_sigma else []
    stages += [StageSpec(f"dp_sgd_candidate_{c}", s.sample_rate, s.steps) for c, s in enumerate(schedules)]
    recorded = checkpoint["plan"]["noise_multiplier"] if checkpoint is not None else None
    plan = make_plan(p, unit=protected, stages=stages, seed=config.training.seed, recorded_noise=recorded,
                     prior=upstream_stages(synthetic))
    return ClassifierPlan(plan, sampled, schedules, center_sigma)


def upstream_stages(synthetic: "SyntheticInputs | None") -> tuple[Mechanism, ...]:
    """The recorded stages of the upstream record a run uses (a DP generator's or private evolution's)."""
    return tuple(synthetic.source.mechanisms) if synthetic is not None else ()


def start_ledger(config: RunConfig, plan: ClassifierPlan, *, n: int, synthetic: "SyntheticInputs | None") -> PrivacyLedger:
    """Stages spent before training (a generator), inputs that cost nothing (a phantom, declared-public
    images, pretrained weights) and reasons the run is not private, if any."""
    ledger = plan.privacy.start_ledger(n_private=n, clip_norm=config.privacy.clip_norm if config.privacy.private
                                       else math.inf)  # holds the upstream stages (synthetic's source)
    if synthetic is not None:
        ledger.upstream.extend(synthetic.source.upstream)
        if synthetic.source.non_private_reason:
            ledger.non_private_reasons.append(synthetic.source.non_private_reason)
        if synthetic.source.free_input:
            ledger.free_inputs.append(synthetic.source.free_input)
        if synthetic.source.mechanisms and synthetic.source.unit != plan.protected.name:
            ledger.non_private_reasons.append(GENERATOR_OTHER_UNIT.format(
                generator=synthetic.source.generator, generator_unit=synthetic.source.unit, unit=plan.protected.name))
    ledger.free_inputs.extend(pretrained_inputs(config.model))
    touches_private_train = synthetic is None or config.synthetic.use != "only"
    if touches_private_train and not config.privacy.private:
        ledger.non_private_reasons.append(
            "The classifier was trained on the private data without DP-SGD (no epsilon or noise multiplier given).")
    if touches_private_train and config.privacy.private and config.privacy.replayable_noise:
        ledger.non_private_reasons.append(REPLAYABLE_NOT_PRIVATE)
    return ledger

def epsilon_so_far(ledger: PrivacyLedger, plan: ClassifierPlan, state: TrainState, fit: Engine,
                    candidate: int) -> float:
    """Epsilon spent up to now: earlier stages, finished candidates, and this candidate's steps."""
    if not fit.private:
        return math.inf
    steps = [*state.finished_steps, fit.spent_steps]
    sgd = [Mechanism("dp_sgd", plan.noise_multiplier, plan.schedules[c].sample_rate, n)
           for c, n in zip(range(candidate + 1), steps)]
    return epsilon_for([*ledger.mechanisms, *sgd], delta=ledger.delta, accountant=ledger.accountant)
