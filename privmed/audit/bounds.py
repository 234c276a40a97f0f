"""Clopper–Pearson ε lower bound from independent membership trials, both DP inequalities.

The hypothesis-testing view of DP (Kairouz et al. 2015; Jagielski et al. 2020; Nasr et al.
2021): any (ε, δ)-DP mechanism forces every membership test to satisfy both

    TPR <= e^ε FPR + δ   and   TNR <= e^ε FNR + δ,

so ``ε >= log((TPR - δ) / FPR)`` and ``ε >= log((TNR - δ) / FNR)``. The samples are split at
random in two halves: the test (threshold and direction, "member iff score >= t" or
"member iff score <= t") is chosen on the first; on the second TPR is replaced by its
one-sided Clopper–Pearson lower bound and FPR by its upper bound (alpha/2 each). Both
inequalities hold on the same event, so the larger of the two is a (1 - alpha)-confidence
lower bound.

The trials must be independent (one mechanism run per trial, membership by coin). Canaries
scored in ONE training run are not independent trials: for those use
:func:`privmed.audit.one_run.one_run_epsilon`, whose theorem does not need independence.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: thresholds tried on the selection half (quantiles of its scores)
MAX_THRESHOLDS = 400
#: the half split draws from its own random stream, so that it can never repeat the coins
#: of a design seeded with the same number (which would make the split equal membership)
SPLIT_STREAM = 0x5EED_C0DE


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two one-sided (1 - alpha) Clopper–Pearson bounds (lower, upper) of a binomial rate."""
    low, high = clopper_pearson_many(np.array([successes]), trials, alpha)
    return float(low[0]), float(high[0])


def clopper_pearson_many(successes: np.ndarray, trials: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clopper_pearson` for an array of success counts out of the same number of trials."""
    k = np.asarray(successes, dtype=np.float64)
    if trials == 0:
        return np.zeros_like(k), np.ones_like(k)
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), trials - k + 1), 0.0)
        high = np.where(k < trials, stats.beta.ppf(1 - alpha, k + 1, np.maximum(trials - k, 1)), 1.0)
    return low, high


def epsilon_from_rates(tpr_low: np.ndarray, fpr_high: np.ndarray, delta: float) -> np.ndarray:
    """The larger of the two DP inequalities' ε bounds, given TPR's lower and FPR's upper bound (>= 0)."""
    tpr_low, fpr_high = np.asarray(tpr_low, dtype=np.float64), np.asarray(fpr_high, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        positives = np.log(np.maximum(tpr_low - delta, 0.0)) - np.log(fpr_high)  # TPR <= e^ε FPR + δ
        negatives = np.log(np.maximum(1 - fpr_high - delta, 0.0)) - np.log(1 - tpr_low)  # TNR <= e^ε FNR + δ
    best = np.fmax(positives, negatives)
    return np.where(np.isnan(best), 0.0, np.maximum(best, 0.0))


def clopper_pearson_epsilon(scores: np.ndarray, is_member: np.ndarray, *, delta: float, alpha: float = 0.05,
                            seed: int = 0) -> float:
    """A (1 - alpha)-confidence lower bound on ε from independent trials (0 when nothing is shown).

    Args:
        scores: one attack score per trial (higher = "member" for direction +1; both
            directions are tried).
        is_member: the trial's true membership, drawn by a fair coin independently of
            everything else.
        delta: the δ of the (ε, δ) claim being tested.
        alpha: 1 - confidence.
        seed: the random half split that chooses the test.
    """
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    choose = np.random.default_rng((seed, SPLIT_STREAM)).random(len(scores)) < 0.5
    best = (0.0, None, None)
    for direction in (1.0, -1.0):
        chosen = scores[choose] * direction
        thresholds = _candidate_thresholds(chosen)
        eps = _bounds_at(chosen, is_member[choose], thresholds, delta, alpha)
        if len(eps) and eps.max() > best[0]:
            best = (float(eps.max()), direction, thresholds[int(eps.argmax())])
    _, direction, threshold = best
    if direction is None:
        return 0.0
    return float(_bounds_at(scores[~choose] * direction, is_member[~choose], np.array([threshold]), delta, alpha)[0])


def _candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    unique = np.unique(scores)
    if len(unique) <= MAX_THRESHOLDS:
        return unique
    return np.unique(np.quantile(scores, np.linspace(0, 1, MAX_THRESHOLDS)))


def _bounds_at(scores: np.ndarray, is_member: np.ndarray, thresholds: np.ndarray, delta: float,
               alpha: float) -> np.ndarray:
    """ε bound of each test "member iff score >= threshold" on these samples."""
    members, others = np.sort(scores[is_member]), np.sort(scores[~is_member])
    tp = len(members) - np.searchsorted(members, thresholds, side="left")
    fp = len(others) - np.searchsorted(others, thresholds, side="left")
    tpr_low, _ = clopper_pearson_many(tp, len(members), alpha / 2)
    _, fpr_high = clopper_pearson_many(fp, len(others), alpha / 2)
    return epsilon_from_rates(tpr_low, fpr_high, delta)
