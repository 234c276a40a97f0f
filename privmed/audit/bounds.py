"""From attack scores to what an auditor reports: AUC, TPR at low FPR, and an ε lower bound.

The empirical ε lower bound follows the hypothesis-testing view of DP (Kairouz et al.
2015; Jagielski et al. 2020; Nasr et al. 2021): any (ε, δ)-DP mechanism forces every
membership test to satisfy ``TPR <= e^ε FPR + δ`` and ``TNR <= e^ε FNR + δ``. So

    ε >= log((TPR - δ) / FPR)   and   ε >= log((TNR - δ) / FNR).

To make this a statistically valid bound, the samples are split at random in two
halves: the threshold (and direction) is chosen on the first, and on the second TPR is
replaced by its one-sided Clopper–Pearson lower bound and FPR by its upper bound, at
overall confidence ``1 - alpha``. With high probability the result never exceeds the
true ε of the mechanism, however strong the attack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from privmed.evaluation.bootstrap import bootstrap_indices

FPR_LEVELS = (0.01, 0.001)


@dataclass(frozen=True)
class AttackSummary:
    """One attack's result on one set of members and non-members."""

    attack: str
    n_members: int
    n_non_members: int
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci: tuple[float, float]
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: tuple[float, float]
    eps_lower_bound: float
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr_level: float) -> float:
    """Largest TPR among thresholds whose FPR is at most ``fpr_level``."""
    fpr, tpr, _ = roc_curve(is_member, scores)
    ok = fpr <= fpr_level
    return float(tpr[ok].max()) if ok.any() else 0.0


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """Two one-sided (1 - alpha) Clopper–Pearson bounds (lower, upper) of a binomial rate."""
    if trials == 0:
        return 0.0, 1.0
    low = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha, successes + 1, trials - successes))
    return low, high


def epsilon_lower_bound(scores: np.ndarray, is_member: np.ndarray, *, delta: float, alpha: float = 0.05,
                        seed: int = 0) -> float:
    """A (1 - alpha)-confidence lower bound on ε from one attack's scores (0 when nothing is shown).

    Threshold and direction are chosen on a random half (the one whose Clopper–Pearson
    bound is largest there, so a lucky handful of extreme scores does not win); the bound
    is then computed on the other half alone, alpha/2 each for TPR and FPR.
    """
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    choose = np.random.default_rng(seed).random(len(scores)) < 0.5
    best, best_eps = None, 0.0
    for direction in (1, -1):
        for threshold in _candidate_thresholds(scores[choose] * direction):
            eps = _bound_at(scores[choose] * direction, is_member[choose], threshold, delta, alpha)
            if eps > best_eps:
                best, best_eps = (threshold, direction), eps
    if best is None:
        return 0.0
    threshold, direction = best
    return _bound_at(scores[~choose] * direction, is_member[~choose], threshold, delta, alpha)


def _candidate_thresholds(scores: np.ndarray, max_candidates: int = 400) -> np.ndarray:
    unique = np.unique(scores)
    if len(unique) <= max_candidates:
        return unique
    return np.unique(np.quantile(scores, np.linspace(0, 1, max_candidates)))


def _bound_at(scores: np.ndarray, is_member: np.ndarray, threshold: float, delta: float, alpha: float) -> float:
    """Clopper–Pearson ε bound of the test "member iff score >= threshold" on these samples."""
    guess = scores >= threshold
    tpr_low, _ = clopper_pearson(int((guess & is_member).sum()), int(is_member.sum()), alpha / 2)
    _, fpr_high = clopper_pearson(int((guess & ~is_member).sum()), int((~is_member).sum()), alpha / 2)
    if tpr_low - delta <= 0 or fpr_high <= 0:
        return 0.0
    return max(0.0, math.log((tpr_low - delta) / fpr_high))


def largest_showable_bound(n_members: int, n_non_members: int, *, alpha: float = 0.05) -> float:
    """The largest ε lower bound :func:`epsilon_lower_bound` could give with this many scored samples:
    a perfect attack (every member found, no non-member) on the evaluation half, at δ = 0. An audit
    whose claimed ε is far above it has too little power to show anything about that claim."""
    m, n = max(1, n_members // 2), max(1, n_non_members // 2)
    tpr_low, _ = clopper_pearson(m, m, alpha / 2)
    _, fpr_high = clopper_pearson(0, n, alpha / 2)
    return max(0.0, math.log(tpr_low / fpr_high))


def summarize_attack(attack: str, scores: np.ndarray, is_member: np.ndarray, *, delta: float, alpha: float = 0.05,
                     n_resamples: int = 1000, seed: int = 0) -> AttackSummary:
    """AUC and TPR at 1% / 0.1% FPR with 95% bootstrap CIs, and the ε lower bound."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if is_member.all() or not is_member.any():
        raise ValueError("an attack needs both members and non-members")
    point = (roc_auc_score(is_member, scores), *(tpr_at_fpr(scores, is_member, f) for f in FPR_LEVELS))
    draws = []
    for idx in bootstrap_indices(n=len(scores), groups=None, n_resamples=n_resamples, seed=seed):
        m = is_member[idx]
        if m.all() or not m.any():
            continue
        draws.append((roc_auc_score(m, scores[idx]), *(tpr_at_fpr(scores[idx], m, f) for f in FPR_LEVELS)))
    low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
    ci = [(round(float(a), 4), round(float(b), 4)) for a, b in zip(low, high)]
    return AttackSummary(
        attack=attack, n_members=int(is_member.sum()), n_non_members=int((~is_member).sum()),
        auc=round(float(point[0]), 4), auc_ci=ci[0],
        tpr_at_1pct_fpr=round(float(point[1]), 4), tpr_at_1pct_fpr_ci=ci[1],
        tpr_at_01pct_fpr=round(float(point[2]), 4), tpr_at_01pct_fpr_ci=ci[2],
        eps_lower_bound=round(epsilon_lower_bound(scores, is_member, delta=delta, alpha=alpha, seed=seed), 4),
        confidence=1 - alpha,
    )
