"""Membership-inference attack scores: pure functions of model outputs.

Higher score = "more likely a member" everywhere in this module.

* :func:`loss_attack_scores` — the loss/confidence threshold attack (Yeom et al. 2018):
  a training sample tends to have a lower loss, so the score is minus the loss.
* :func:`lira_scores` — the likelihood-ratio attack (Carlini et al. 2022). For every
  sample, shadow models trained with it (IN) and without it (OUT) give two
  distributions of the logit-scaled confidence ``log(p / (1 - p))`` of its label; the
  score is the log-likelihood ratio of the target model's confidence under a Gaussian
  fitted to each. With few shadows the variances are pooled over samples (the paper's
  "fixed variance" variant). When some sample has no IN shadow (likely with very few
  shadows), every sample is scored with the offline test instead (how far above its OUT
  distribution the target's confidence lies), so that all scores share one scale.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: probabilities are clipped to [EPS, 1 - EPS] before logs
EPS = 1e-7


def label_probability(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Probability the model gives each sample's own label; binary scores of shape (N,) or (N, 1)."""
    p = np.clip(np.asarray(scores, dtype=np.float64).reshape(len(labels), -1)[:, 0], EPS, 1 - EPS)
    y = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    return np.where(y == 1, p, 1 - p)


def logit_confidence(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y))``: the statistic LiRA models as Gaussian."""
    p = label_probability(scores, labels)
    return np.log(p) - np.log1p(-p)


def loss_attack_scores(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the cross-entropy loss of each sample (higher = more likely a member)."""
    return np.log(label_probability(scores, labels))


def lira_scores(target_confidence: np.ndarray, shadow_confidence: np.ndarray, shadow_in: np.ndarray) -> np.ndarray:
    """LiRA log-likelihood ratios.

    Args:
        target_confidence: (N,) logit confidences of the target model.
        shadow_confidence: (K, N) logit confidences of K shadow models on the same samples.
        shadow_in: (K, N) bool, True where sample n was in shadow k's training set.
    """
    conf = np.asarray(shadow_confidence, dtype=np.float64)
    is_in = np.asarray(shadow_in, dtype=bool)
    if conf.shape != is_in.shape or conf.shape[1] != len(target_confidence):
        raise ValueError(f"shapes differ: target {np.shape(target_confidence)}, shadows {conf.shape}, "
                         f"membership {is_in.shape}")
    mu_in, n_in = _masked_mean(conf, is_in)
    mu_out, n_out = _masked_mean(conf, ~is_in)
    sd_in = _pooled_sd(conf, is_in, mu_in)
    sd_out = _pooled_sd(conf, ~is_in, mu_out)
    t = np.asarray(target_confidence, dtype=np.float64)
    online = stats.norm.logpdf(t, mu_in, sd_in) - stats.norm.logpdf(t, mu_out, sd_out)
    offline = stats.norm.logcdf(t, mu_out, sd_out)  # P(OUT confidence below the target's)
    if np.any(n_out == 0):
        raise ValueError("every sample needs at least one shadow model trained without it")
    return online if np.all(n_in > 0) else offline


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(0)
    total = np.where(mask, values, 0.0).sum(0)
    return np.divide(total, count, out=np.zeros(values.shape[1]), where=count > 0), count


def _pooled_sd(values: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    """One standard deviation for all samples: few shadows make per-sample variances unreliable."""
    resid = np.where(mask, values - mean, 0.0)
    dof = max(int(mask.sum() - (mask.sum(0) > 0).sum()), 1)
    return float(max(np.sqrt((resid**2).sum() / dof), 1e-3))
