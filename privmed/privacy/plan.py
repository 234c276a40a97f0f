"""The privacy plan: the one place a workflow's privacy is set up before it touches private data.

Every private workflow (the classifier, the DP generator, private evolution, the one-shot head,
the preflight, the audits' retrained targets and shadows) goes through here, in one chain:

1. the unit of privacy (:func:`protected_unit`: patients where the data has patient ids);
2. delta (:func:`delta_for`: ``privacy.delta``, else 1 / (10 N) for the N protected units,
   checked below 1/N);
3. the replay seed (None, secret randomness, for a private run; see :mod:`.randomness`);
4. the noise: the workflow *declares* its stages (:class:`StageSpec`: name, sample rate, steps,
   optionally its own fixed noise) and :func:`make_plan` calibrates the ONE noise multiplier the
   others share, so that they compose to the target through the accountant;
5. the ledger (:meth:`PrivacyPlan.start_ledger`), with the recorded stages of upstream records.

The target is ``privacy.epsilon`` for the workflow's own stages (upstream stages, a generator's,
are then composed on top), or ``privacy.total_epsilon`` for the workflow's own stages *together
with* the upstream ones (``prior``): the own stages get what the upstream stages left.
Nothing outside ``privmed/privacy/`` calibrates noise or resolves delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from privmed.errors import TOTAL_EPSILON_SPENT_UPSTREAM, PrivmedError

from .accounting import Mechanism, calibrate_noise, check_delta, check_reachable, default_delta, epsilon_for
from .ledger import PrivacyLedger
from .randomness import replay_seed_for
from .units import PrivacyUnit, resolve_unit


class PrivacySettings(Protocol):
    """What a plan reads of a ``privacy`` section (:class:`privmed.config.PrivacyConfig` has it)."""

    epsilon: float
    total_epsilon: float | None
    delta: float | None
    noise_multiplier: float | None
    accountant: str
    replayable_noise: bool
    unit: str | None
    max_images_per_patient: int

    @property
    def private(self) -> bool: ...


@dataclass(frozen=True)
class StageSpec:
    """A stage a workflow declares: ``steps`` releases at Poisson rate ``sample_rate``, with its own fixed
    ``noise_multiplier`` (e.g. the feature centre's) or, when None, the plan's calibrated one."""

    name: str
    sample_rate: float
    steps: int
    noise_multiplier: float | None = None


@dataclass(frozen=True)
class PrivacyPlan:
    """A workflow's privacy, fixed before it starts: whom it protects, delta, the replay seed, and the noise
    of every declared stage. ``noise_multiplier`` is the one calibrated noise (shared by every stage declared
    without its own; 0 when not private); ``prior`` the recorded stages of upstream records."""

    unit: PrivacyUnit
    delta: float
    accountant: str
    replay_seed: int | None
    noise_multiplier: float
    stages: tuple[Mechanism, ...] = ()
    prior: tuple[Mechanism, ...] = ()

    def stage(self, name: str) -> Mechanism:
        """The declared stage ``name`` with its noise."""
        return next(m for m in self.stages if m.stage == name)

    def spent(self, name: str, steps: int) -> Mechanism:
        """Stage ``name`` as it ran: its noise and sample rate, ``steps`` steps (fewer than planned when stopped
        early, or so far)."""
        m = self.stage(name)
        return Mechanism(m.stage, m.noise_multiplier, m.sample_rate, steps)

    def epsilon(self, mechanisms: Sequence[Mechanism]) -> float:
        """The composed epsilon of ``mechanisms`` at the plan's delta, by its accountant."""
        return epsilon_for(mechanisms, delta=self.delta, accountant=self.accountant)

    def start_ledger(self, *, n_private: int, clip_norm: float, contribution: str | None = None) -> PrivacyLedger:
        """An empty ledger of the plan's unit, delta and accountant, holding the upstream stages (``prior``)."""
        ledger = PrivacyLedger.for_unit(self.unit, delta=self.delta, accountant=self.accountant, clip_norm=clip_norm,
                                        n_private=n_private, contribution=contribution)
        ledger.mechanisms.extend(self.prior)
        return ledger


def protected_unit(settings: PrivacySettings, *, patient_ids: np.ndarray | None, n: int) -> PrivacyUnit:
    """Whom the guarantee protects on ``n`` private rows: ``privacy.unit``, else patients where there are ids."""
    return resolve_unit(settings.unit, patient_ids, max_images_per_patient=settings.max_images_per_patient, n=n)


def delta_for(unit: PrivacyUnit, configured: float | None, *, check: bool) -> float:
    """The one delta rule: ``configured``, else 1 / (10 N) for the N units of ``unit``; with ``check``,
    delta >= 1/N is refused (:data:`~privmed.errors.DELTA_TOO_LARGE`)."""
    delta = configured if configured is not None else default_delta(unit.n_units)
    if check:
        check_delta(delta, unit.n_units)
    return delta


def make_plan(settings: PrivacySettings, *, unit: PrivacyUnit, stages: Sequence[StageSpec], seed: int,
              prior: Sequence[Mechanism] = (), recorded_noise: float | None = None,
              check_delta: bool | None = None) -> PrivacyPlan:
    """Plan ``stages`` on ``unit``: delta, the replay seed, and the one noise multiplier of the stages declared
    without their own, calibrated by the accountant so that the stages (and, for ``total_epsilon``, ``prior``)
    compose to the target. ``recorded_noise``: a resumed workflow keeps its noise. ``check_delta`` (default: when
    private) refuses delta >= 1/N."""
    private = settings.private
    delta = delta_for(unit, settings.delta, check=private if check_delta is None else check_delta)
    replay_seed = replay_seed_for(private=private, replayable=settings.replayable_noise, seed=seed)
    sigma = _shared_noise(settings, stages, tuple(prior), delta=delta, recorded=recorded_noise)
    resolved = tuple(Mechanism(s.name, sigma if s.noise_multiplier is None else s.noise_multiplier, s.sample_rate,
                               s.steps) for s in stages)
    return PrivacyPlan(unit, delta, settings.accountant, replay_seed, sigma, resolved, tuple(prior))


def check_plan(settings: PrivacySettings, *, unit: PrivacyUnit, stages: Sequence[StageSpec],
               prior: Sequence[Mechanism] = ()) -> None:
    """Refuse, cheaply and before any work, a delta >= 1/N or a target no noise reaches (one accountant call)."""
    delta = delta_for(unit, settings.delta, check=settings.private)
    if not settings.private or settings.noise_multiplier is not None:
        return
    target, fixed = _budget(settings, tuple(prior), delta)
    shared = [(s.sample_rate, s.steps) for s in stages if s.noise_multiplier is None]
    check_reachable(target_epsilon=target, delta=delta, accountant=settings.accountant, schedules=shared,
                    prior=[*fixed, *_fixed(stages)])


def _shared_noise(settings: PrivacySettings, stages: Sequence[StageSpec], prior: tuple[Mechanism, ...], *,
                  delta: float, recorded: float | None) -> float:
    """The calibrated noise multiplier (the recorded one when resumed, the configured one when given)."""
    if not settings.private:
        return 0.0
    if recorded is not None:
        return recorded
    if settings.noise_multiplier is not None:
        return settings.noise_multiplier
    shared = [(s.sample_rate, s.steps) for s in stages if s.noise_multiplier is None]
    if not shared:
        return 0.0
    target, upstream = _budget(settings, prior, delta)
    return calibrate_noise(target_epsilon=target, delta=delta, schedules=shared, prior=[*upstream, *_fixed(stages)],
                           accountant=settings.accountant)


def _fixed(stages: Sequence[StageSpec]) -> list[Mechanism]:
    return [Mechanism(s.name, s.noise_multiplier, s.sample_rate, s.steps) for s in stages
            if s.noise_multiplier is not None]


def _budget(settings: PrivacySettings, prior: tuple[Mechanism, ...], delta: float) -> tuple[float, tuple[Mechanism, ...]]:
    """The target and the upstream stages counted in it: ``total_epsilon`` with ``prior`` (refused when ``prior``
    alone already spends it), else ``epsilon`` alone (upstream stages are composed on top)."""
    total = settings.total_epsilon
    if total is None:
        return settings.epsilon, ()
    spent = epsilon_for(prior, delta=delta, accountant=settings.accountant) if prior else 0.0
    if not spent < total:
        names = ", ".join(m.stage for m in prior)
        raise PrivmedError(TOTAL_EPSILON_SPENT_UPSTREAM.format(total=total, spent=spent, stages=names, delta=delta))
    return total, prior

