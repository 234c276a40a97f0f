"""Privacy accounting: every number here comes from an Opacus accountant.

A run's privacy is a list of :class:`Mechanism` entries, each a subsampled
Gaussian mechanism ``(noise_multiplier, sample_rate, steps)`` in Opacus's own
history format. Epsilon for a list is what the accountant gives for the whole
history, so stages compose through the accountant, never by adding epsilons.

Neighbouring data sets differ by adding or removing one sample (Opacus's
convention, which Poisson subsampling needs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from opacus.accountants import create_accountant

from privmed.errors import DELTA_TOO_LARGE, EPSILON_UNREACHABLE, PrivmedError

#: Largest noise multiplier the calibration will try before calling a target unreachable.
MAX_NOISE_MULTIPLIER = 500.0
#: Relative precision of the noise calibration.
CALIBRATION_TOLERANCE = 0.005


@dataclass(frozen=True)
class Mechanism:
    """One accounted stage: ``steps`` releases of a Gaussian mechanism with noise
    ``noise_multiplier`` x sensitivity, each on a Poisson subsample with rate ``sample_rate``."""

    stage: str
    noise_multiplier: float
    sample_rate: float
    steps: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def history_entry(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def default_delta(n: int) -> float:
    """1 / (10 N): comfortably below the 1/N that would allow publishing one record."""
    return 1.0 / (10 * n)


def poisson_schedule(n: int, *, batch_size: int, epochs: int) -> tuple[float, int]:
    """Sample rate and number of steps of ``epochs`` epochs of Poisson sampling with expected batch
    ``batch_size`` from ``n`` samples, as Opacus's DPDataLoader draws them (rate 1 / batches per epoch)."""
    batches_per_epoch = math.ceil(n / batch_size)
    return 1.0 / batches_per_epoch, epochs * batches_per_epoch


def check_delta(delta: float, n: int) -> None:
    """Reject delta >= 1/N with a message saying what to use instead."""
    if delta >= 1.0 / n:
        raise PrivmedError(DELTA_TOO_LARGE.format(delta=delta, n=n, bound=1.0 / n))


def epsilon_for(mechanisms: Iterable[Mechanism], *, delta: float, accountant: str = "prv") -> float:
    """Epsilon of the composition of ``mechanisms`` at ``delta``, from an Opacus accountant."""
    history = tuple(m.history_entry for m in mechanisms if m.steps > 0)
    if not history:
        return 0.0
    if any(m[0] == 0 for m in history):
        return math.inf
    return _accountant_epsilon(history, delta, accountant)


@functools.lru_cache(maxsize=1024)
def _accountant_epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    """Pure, so cached: a PRV call takes about a second, and the runs of a study, the shadows of an audit
    and every epoch's progress line ask for the same histories again."""
    acc = create_accountant(mechanism=accountant)
    acc.history = list(history)
    # a full-batch release (sample rate 1, e.g. the feature centre) makes Opacus's PRV take log(1 - q) = -inf,
    # the intended bound of its domain (every t lies above it): numpy's divide-by-zero warning says nothing here
    with np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float | None = None,
    steps: int | None = None,
    schedules: Sequence[tuple[float, int]] = (),
    prior: Sequence[Mechanism] = (),
    accountant: str = "prv",
) -> float:
    """Smallest noise multiplier for DP-SGD so that ``prior`` plus the DP-SGD steps spend at
    most ``target_epsilon`` (bisection over the accountant, as Opacus's own
    ``get_noise_multiplier`` does, but composing with earlier stages).

    The DP-SGD steps are ``steps`` at ``sample_rate``, or, for a hyper-parameter search
    whose candidates share one noise multiplier, every ``(sample_rate, steps)`` of
    ``schedules`` composed.

    Raises :class:`PrivmedError` when no noise up to :data:`MAX_NOISE_MULTIPLIER` reaches the target.
    """
    runs = tuple(schedules) or ((sample_rate, steps),)
    return _calibrate(target_epsilon, delta, runs, tuple(prior), accountant)


def check_reachable(*, target_epsilon: float, delta: float, schedules: Sequence[tuple[float, int]],
                    prior: Sequence[Mechanism] = (), accountant: str = "prv") -> None:
    """Raise :class:`PrivmedError` when even noise :data:`MAX_NOISE_MULTIPLIER` on every DP-SGD schedule
    (composed with ``prior``) spends more than ``target_epsilon``: one accountant call, no calibration."""
    _check_reachable(target_epsilon, delta, tuple(schedules), tuple(prior), accountant)


def _spent(sigma: float, runs: tuple[tuple[float, int], ...], prior: tuple[Mechanism, ...], delta: float,
           accountant: str) -> float:
    sgd = [Mechanism("dp_sgd", sigma, q, steps) for q, steps in runs]
    return epsilon_for([*prior, *sgd], delta=delta, accountant=accountant)


def _check_reachable(target_epsilon: float, delta: float, runs: tuple[tuple[float, int], ...],
                     prior: tuple[Mechanism, ...], accountant: str) -> None:
    if _spent(MAX_NOISE_MULTIPLIER, runs, prior, delta, accountant) <= target_epsilon:
        return
    before = ""
    if prior:
        spent_before = epsilon_for(prior, delta=delta, accountant=accountant)
        before = (f" Earlier stages ({', '.join(m.stage for m in prior)}) alone spend epsilon={spent_before:.3g}; "
                  f"for feature centring, a larger privacy.center_noise_multiplier spends less.")
    if len(runs) > 1:
        before += (f" The {len(runs)} hyper-parameter candidates of the tune section are composed: search "
                   f"fewer candidates or fewer epochs.")
    q, steps = runs[0]
    raise PrivmedError(EPSILON_UNREACHABLE.format(epsilon=target_epsilon, steps=steps, sample_rate=q,
                                                  delta=delta, sigma=MAX_NOISE_MULTIPLIER, prior=before))


@functools.lru_cache(maxsize=64)
def _calibrate(target_epsilon: float, delta: float, runs: tuple[tuple[float, int], ...],
               prior: tuple[Mechanism, ...], accountant: str) -> float:
    """Pure, so cached: shadow models of an audit share one schedule."""

    def spent(sigma: float) -> float:
        return _spent(sigma, runs, prior, delta, accountant)

    _check_reachable(target_epsilon, delta, runs, prior, accountant)
    low = 0.0
    high = 1.0
    while spent(high) > target_epsilon:
        low, high = high, min(2 * high, MAX_NOISE_MULTIPLIER)
    while high - low > CALIBRATION_TOLERANCE * high:
        mid = (low + high) / 2
        if spent(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
