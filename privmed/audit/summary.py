"""From attack scores to what an auditor reports: AUC, TPR at low FPR, and (randomised designs only) ε.

For the ``one-run`` design (canaries in by coin, one training run) the summary carries
the one-run ε lower bound (:mod:`privmed.audit.one_run`), the Gaussian-DP estimate
(:mod:`privmed.audit.gdp`), and, for comparison, the Clopper–Pearson bound
(:mod:`privmed.audit.bounds`), which treats the canaries as independent trials: one run
gives that only approximately. For the ``train-vs-test`` design every ε field is ``None``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from sklearn.metrics import roc_auc_score

from privmed.evaluation.bootstrap import resample_weights, weighted_auroc

from .bounds import clopper_pearson_epsilon
from .design import DESCRIPTIONS, RANDOMISED
from .gdp import epsilon_from_mu, mu_from_auc
from .one_run import one_run_epsilon

FPR_LEVELS = (0.01, 0.001)


@dataclass(frozen=True)
class AttackSummary:
    """One attack's result on one set of members and non-members (canaries: one row per canary)."""

    attack: str
    design: str
    n_members: int
    n_non_members: int
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_1pct_fpr_ci: tuple[float, float]
    tpr_at_01pct_fpr: float
    tpr_at_01pct_fpr_ci: tuple[float, float]
    confidence: float
    #: one-run (Steinke et al.) lower bound; None when membership was not randomised
    eps_lower_bound: float | None = None
    guesses: int | None = None
    correct_guesses: int | None = None
    #: Gaussian-DP estimate (not a bound): μ from the AUC, and its ε at the run's δ
    gdp_mu: float | None = None
    gdp_epsilon: float | None = None
    #: Clopper–Pearson bound treating canaries as independent trials (approximate for one run)
    eps_clopper_pearson: float | None = None

    @property
    def randomised(self) -> bool:
        return RANDOMISED[self.design]

    def to_dict(self) -> dict:
        return {**asdict(self), "randomised": self.randomised, "design_description": DESCRIPTIONS[self.design]}


def tpr_at_fpr(scores: np.ndarray, is_member: np.ndarray, fpr_level: float) -> float:
    """Largest TPR among thresholds whose FPR is at most ``fpr_level`` (every distinct score a threshold)."""
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    return float(weighted_tpr_at_fpr(np.ones((1, scores.size)), is_member, scores, fpr_level)[0])


def weighted_tpr_at_fpr(weights: np.ndarray, is_member: np.ndarray, scores: np.ndarray,
                        fpr_level: float) -> np.ndarray:
    """:func:`tpr_at_fpr` per row of ``weights`` (R, n) of sample multiplicities (a bootstrap resample each);
    ``nan`` where a row leaves members or non-members without weight."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # last position of each tied score
    w = weights[:, order]
    hits = np.cumsum(w * is_member[order], axis=1)[:, ends]
    false_alarms = np.cumsum(w * ~is_member[order], axis=1)[:, ends]
    members, non_members = hits[:, -1:], false_alarms[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = hits / members, false_alarms / non_members
        best = np.where(fpr <= fpr_level, tpr, 0.0).max(axis=1)
    return np.where((members[:, 0] > 0) & (non_members[:, 0] > 0), best, np.nan)


def summarize_attack(attack: str, scores: np.ndarray, is_member: np.ndarray, *, design: str, delta: float,
                     alpha: float = 0.05, n_resamples: int = 1000, seed: int = 0) -> AttackSummary:
    """AUC and TPR at 1% / 0.1% FPR with 95% bootstrap CIs; ε figures when ``design`` randomises membership.

    ``scores`` are higher for "more likely a member"; for the one-run design there is one
    score and one coin per canary (see :func:`privmed.audit.design.group_scores`).
    """
    if design not in RANDOMISED:
        raise ValueError(f"unknown design {design!r}; use one of {sorted(RANDOMISED)}")
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    if is_member.all() or not is_member.any():
        raise ValueError("an attack needs both members and non-members")
    point = (roc_auc_score(is_member, scores), *(tpr_at_fpr(scores, is_member, f) for f in FPR_LEVELS))
    low, high = _bootstrap_cis(scores, is_member, n_resamples=n_resamples, seed=seed)
    ci = [(round(float(a), 4), round(float(b), 4)) for a, b in zip(low, high)]
    summary = AttackSummary(
        attack=attack, design=design, n_members=int(is_member.sum()), n_non_members=int((~is_member).sum()),
        auc=round(float(point[0]), 4), auc_ci=ci[0],
        tpr_at_1pct_fpr=round(float(point[1]), 4), tpr_at_1pct_fpr_ci=ci[1],
        tpr_at_01pct_fpr=round(float(point[2]), 4), tpr_at_01pct_fpr_ci=ci[2], confidence=1 - alpha)
    if not RANDOMISED[design]:
        return summary
    one_run = one_run_epsilon(scores, is_member, delta=delta, alpha=alpha, seed=seed)
    mu = mu_from_auc(float(point[0]))
    return replace(
        summary, eps_lower_bound=round(one_run.eps_lower_bound, 4), guesses=one_run.guesses,
        correct_guesses=one_run.correct, gdp_mu=round(mu, 4), gdp_epsilon=round(epsilon_from_mu(mu, delta=delta), 4),
        eps_clopper_pearson=round(clopper_pearson_epsilon(scores, is_member, delta=delta, alpha=alpha, seed=seed), 4))


def _bootstrap_cis(scores: np.ndarray, is_member: np.ndarray, *, n_resamples: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of AUC and the TPRs over canary resamples (those with both members and
    non-members), all resamples at once."""
    weights = resample_weights(n=len(scores), groups=None, n_resamples=n_resamples, seed=seed)
    draws = np.column_stack([weighted_auroc(weights, is_member, scores),
                             *(weighted_tpr_at_fpr(weights, is_member, scores, f) for f in FPR_LEVELS)])
    draws = draws[~np.isnan(draws).any(axis=1)]
    return tuple(np.percentile(draws, [2.5, 97.5], axis=0))
