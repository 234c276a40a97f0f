"""Gaussian-DP estimate of an attack: μ from its ROC, and the ε that μ-GDP means at δ.

If training behaves like the Gaussian mechanism (μ-GDP, Dong, Roth & Su 2022), every
attack's ROC lies on or below the binormal curve ``TPR = Φ(Φ⁻¹(FPR) + μ)``, whose AUC is
``Φ(μ / √2)``. So the attack's AUC gives ``μ̂ = √2 Φ⁻¹(AUC)``, and μ̂-GDP corresponds to an
(ε, δ) curve (Dong et al., Corollary 2.13). This is an ESTIMATE under the Gaussian
assumption, shown beside the one-run lower bound; it is not itself a bound.
"""

from __future__ import annotations

import math

from opacus.accountants.analysis.gdp import delta_eps_mu, eps_from_mu
from scipy import stats


def mu_from_auc(auc: float) -> float:
    """μ of the binormal ROC with this AUC (0 for an attack no better than chance)."""
    if not 0 <= auc <= 1:
        raise ValueError(f"AUC {auc} is not in [0, 1]")
    return max(0.0, math.sqrt(2) * float(stats.norm.ppf(min(auc, 1 - 1e-12))))


def epsilon_from_mu(mu: float, *, delta: float) -> float:
    """The ε at which μ-GDP is (ε, δ)-DP (0 when μ-GDP already gives δ at ε = 0)."""
    if mu <= 0 or delta_eps_mu(eps=0.0, mu=mu) <= delta:
        return 0.0
    return float(eps_from_mu(mu=mu, delta=delta))
