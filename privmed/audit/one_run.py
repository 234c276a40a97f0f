"""One-run auditing (Steinke, Nasr & Jagielski, NeurIPS 2023): an ε lower bound from ONE training run.

m canaries are each included in training by an independent fair coin. After the one run
the auditor guesses "in" for the canaries it is most confident were included and "out"
for those it is most confident were not, and abstains on the rest. Their Theorem (as in
the authors' reference code): if training is (ε, δ)-DP with respect to each canary, the
number of correct guesses v among r guesses satisfies

    P[V >= v] <= P[Binomial(r, q) >= v] + 2 m δ · max_i P[v - i <= Binomial(r, q) < v] / i,

with ``q = e^ε / (1 + e^ε)``. The bound is the largest ε whose p-value is at most alpha.
The attack may be anything that does not look at the coins (loss, LiRA with shadows
trained on independent data, distance to synthetic images).

The number of guesses r is taken from a fixed grid of fractions of m, each tried at
alpha / (size of the grid) (Bonferroni), so choosing the best r keeps the confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

#: guesses tried, as fractions of the canaries (half "in" at the top, half "out" at the bottom)
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: tie-breaking draws from its own random stream, never the coins' (even with the same seed)
TIE_STREAM = 0x71E5


@dataclass(frozen=True)
class OneRunBound:
    """The bound and the guesses that gave it."""

    eps_lower_bound: float
    canaries: int
    guesses: int
    correct: int
    confidence: float


def guess_counts(canaries: int) -> list[int]:
    """The numbers of guesses tried (:data:`GUESS_FRACTIONS` of the canaries, at least 2 each); the
    confidence is shared among them (Bonferroni)."""
    return sorted({max(2, round(f * canaries)) for f in GUESS_FRACTIONS})


def one_run_p_value(*, canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """Probability of at least ``correct`` right guesses out of ``guesses`` under (ε, δ)-DP."""
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries ({canaries})")
    q = float(special.expit(epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return tail
    i = np.arange(1, correct + 1)
    window = stats.binom.sf(correct - i - 1, guesses, q) - tail  # P[correct - i <= B < correct]
    return min(1.0, tail + 2 * canaries * delta * float(np.max(window / i)))


def epsilon_from_guesses(*, canaries: int, guesses: int, correct: int, delta: float, alpha: float) -> float:
    """Largest ε whose (ε, δ) claim these guesses reject at level alpha (0 if none is rejected)."""
    def margin(eps: float) -> float:
        return alpha - one_run_p_value(canaries=canaries, guesses=guesses, correct=correct, epsilon=eps, delta=delta)

    if guesses == 0 or margin(0.0) <= 0:
        return 0.0
    high = 1.0
    while margin(high) > 0:  # ends: as ε grows every guess becomes likely and the p-value tends to 1
        high *= 2
    return float(optimize.brentq(margin, high / 2 if high > 1 else 0.0, high, xtol=1e-6))


def one_run_epsilon(scores: np.ndarray, is_member: np.ndarray, *, delta: float, alpha: float = 0.05,
                    seed: int = 0) -> OneRunBound:
    """A (1 - alpha)-confidence ε lower bound from the canaries of one training run.

    Args:
        scores: one attack score per canary, higher = more likely included.
        is_member: the canary's coin (True = it was in training).
        delta: the δ of the claim being tested.
        alpha: 1 - confidence, shared (Bonferroni) by the guess counts of :data:`GUESS_FRACTIONS`.
        seed: breaks ties between equal scores at random (independently of the coins).
    """
    scores, is_member = np.asarray(scores, dtype=np.float64), np.asarray(is_member, dtype=bool)
    m = len(scores)
    if m < 2 or len(is_member) != m:
        raise ValueError(f"need one coin per canary and at least 2 canaries, got {m} scores, {len(is_member)} coins")
    shuffle = np.random.default_rng((seed, TIE_STREAM)).permutation(m)
    ranked = is_member[shuffle][np.argsort(-scores[shuffle], kind="stable")]  # most confident "in" first
    counts = guess_counts(m)
    level = alpha / len(counts)
    best = OneRunBound(0.0, m, 0, 0, 1 - alpha)
    for r in counts:
        top, bottom = r - r // 2, r // 2
        correct = int(ranked[:top].sum() + (~ranked[m - bottom:]).sum())
        eps = epsilon_from_guesses(canaries=m, guesses=r, correct=correct, delta=delta, alpha=level)
        if eps > best.eps_lower_bound:
            best = OneRunBound(eps, m, r, correct, 1 - alpha)
    return best


def largest_showable_bound(*, canaries: int, delta: float, alpha: float = 0.05) -> float:
    """The largest bound :func:`one_run_epsilon` could give with ``canaries`` canaries at ``delta``: a
    perfect attack (every guess right). An audit whose claimed ε is far above it has too little power to
    contradict that claim, whatever the model leaks."""
    counts = guess_counts(canaries)
    return max(epsilon_from_guesses(canaries=canaries, guesses=r, correct=r, delta=delta, alpha=alpha / len(counts))
               for r in counts)
