"""Subgroup fairness of one model's predictions: per-group metrics, parity differences, suppression.

For one attribute (density, view, age group, sex, ...):

* :func:`subgroup_metrics`: per group, AUROC, accuracy, sensitivity, specificity and the
  positive-prediction rate with (patient-level) bootstrap CIs. Groups with fewer than
  :data:`MIN_GROUP_SIZE` patients (samples, without patient ids) are suppressed, however many
  images they hold: their row says so and carries no number at all, not even the count;
* :func:`parity_differences`: Tayebi Arasteh et al.'s statistical parity difference for
  any metric: a group's value minus the sample-size-weighted mean of the other groups'
  values (for two groups, the plain difference);
* :func:`fairlearn_differences`: demographic parity, equal opportunity and equalized odds
  differences at the decision threshold, from fairlearn;
* :func:`pearson`: Pearson's r with its p-value (SciPy) for trends across runs, e.g. between
  epsilon and a group's parity difference.

Every function takes keyword arguments, checks its input up front and returns one shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from privmed.errors import PrivmedError

from .bootstrap import bootstrap_metrics

#: smallest group whose numbers are shown
MIN_GROUP_SIZE = 10
GROUP_METRICS = ("auroc", "accuracy", "sensitivity", "specificity", "positive_rate")
SUPPRESSED = f"suppressed (< {MIN_GROUP_SIZE} patients)"
LENGTHS_DIFFER = "y_true, scores and groups must have one entry per sample; got lengths {lengths}."
NO_GROUPS = "the attribute has no values (all missing); choose an attribute column that is filled in."


def subgroup_metrics(*, y_true: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray,
                     patient_ids: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0,
                     min_size: int = MIN_GROUP_SIZE) -> pd.DataFrame:
    """One row per group (sorted): ``group, n, suppressed`` and, for each of :data:`GROUP_METRICS`,
    ``metric, metric_ci_low, metric_ci_high``. Samples with a missing group are left out. A group with
    fewer than ``min_size`` patients (``patient_ids``; else samples) is suppressed: its row has ``n`` and
    every metric set to NaN (twelve images of two patients describe two people)."""
    y, s, g = _check(y_true, scores, groups)
    sizes = group_sizes(groups=g, patient_ids=patient_ids)
    rows = []
    for group in sorted(pd.unique(g[pd.notna(g)]), key=str):
        mask = g == group
        row: dict = {"group": str(group), "n": int(mask.sum()), "suppressed": bool(sizes[group] < min_size)}
        if row["suppressed"]:
            row["n"] = math.nan
            row.update({k: math.nan for m in GROUP_METRICS for k in (m, f"{m}_ci_low", f"{m}_ci_high")})
        else:
            row.update(_group_values(y[mask], s[mask], threshold, None if patient_ids is None
                                     else np.asarray(patient_ids)[mask], n_resamples, seed))
        rows.append(row)
    if not rows:
        raise PrivmedError(NO_GROUPS)
    return pd.DataFrame(rows)


def group_sizes(*, groups: np.ndarray, patient_ids: np.ndarray | None = None) -> pd.Series:
    """How many people each group holds: distinct ``patient_ids`` (samples, without ids). Indexed by group."""
    frame = pd.DataFrame({"group": np.asarray(groups, object),
                          "unit": np.arange(len(groups)) if patient_ids is None else np.asarray(patient_ids, object)})
    return frame.dropna(subset=["group"]).groupby("group")["unit"].nunique()


def suppress_complements(table: pd.DataFrame, *, train_sizes: pd.Series, min_size: int = MIN_GROUP_SIZE,
                         train_patients: pd.Series | None = None) -> pd.DataFrame:
    """Add ``train_n`` (each shown group's training-set size) and hide counts that would give away a
    suppressed one: when any group has fewer than ``min_size`` test patients or training patients
    (``train_patients``, from :func:`group_sizes`; without it, ``train_sizes``' samples), the test ``n``
    and ``train_n`` of every group are blanked (the other groups' counts and the total would yield the
    small one by subtraction), and so is the positive rate's interval (from which n follows), and
    ``counts_suppressed`` is set. The other metrics of shown groups stay."""
    table = table.copy()
    table["train_n"] = [math.nan if s else float(train_sizes.get(g, 0))
                        for g, s in zip(table["group"], table["suppressed"])]
    people = train_sizes if train_patients is None else train_patients
    small_train = [float(people.get(g, 0)) < min_size for g in table["group"]]
    hide = bool(table["suppressed"].any() or any(small_train))
    if hide:  # the positive rate's normal interval gives n back (half-width 1.96 sqrt(p (1 - p) / n)): blank it too
        table[["n", "train_n", "positive_rate_ci_low", "positive_rate_ci_high"]] = math.nan
    table["counts_suppressed"] = hide
    return table


def parity_differences(*, table: pd.DataFrame, metric: str) -> pd.Series:
    """Per shown group: its ``metric`` minus the n-weighted mean of the other shown groups'
    (NaN for suppressed groups or undefined values). Indexed by group."""
    shown = table[~table["suppressed"] & table[metric].notna()]
    out = pd.Series(math.nan, index=table["group"], name=f"{metric}_parity_difference")
    for _, row in shown.iterrows():
        others = shown[shown["group"] != row["group"]]
        if len(others):
            out[row["group"]] = row[metric] - np.average(others[metric], weights=others["n"])
    return out


@dataclass(frozen=True)
class FairlearnDifferences:
    """Largest between-group gaps at the decision threshold (fairlearn's definitions)."""

    demographic_parity: float
    equal_opportunity: float
    equalized_odds: float


def fairlearn_differences(*, y_true: np.ndarray, scores: np.ndarray, threshold: float, groups: np.ndarray,
                          min_size: int = MIN_GROUP_SIZE, patient_ids: np.ndarray | None = None
                          ) -> FairlearnDifferences:
    """Demographic parity, equal opportunity and equalized odds differences over the groups
    with at least ``min_size`` patients (``patient_ids``; else samples): suppressed groups do not take part."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        equal_opportunity_difference,
        equalized_odds_difference,
    )

    y, s, g = _check(y_true, scores, groups)
    sizes = group_sizes(groups=g, patient_ids=patient_ids)
    keep = pd.notna(g) & np.isin(g, sizes[sizes >= min_size].index)
    y, pred, g = y[keep].astype(int), (s[keep] >= threshold).astype(int), g[keep].astype(str)
    kwargs = {"y_true": y, "y_pred": pred, "sensitive_features": g}
    return FairlearnDifferences(float(demographic_parity_difference(**kwargs)),
                                float(equal_opportunity_difference(**kwargs)),
                                float(equalized_odds_difference(**kwargs)))


def pearson(*, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value over the pairs where both are finite (NaN when < 3 pairs)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan
    result = stats.pearsonr(x[ok], y[ok])
    return float(result.statistic), float(result.pvalue)


def _check(y_true, scores, groups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, s, g = np.asarray(y_true).reshape(-1), np.asarray(scores, float).reshape(-1), np.asarray(groups, object)
    if not (len(y) == len(s) == len(g)):
        raise PrivmedError(LENGTHS_DIFFER.format(lengths=[len(y), len(s), len(g)]))
    return y, s, g


def _group_values(y, s, threshold, patients, n_resamples, seed) -> dict:
    values: dict = {}
    if 0 < y.sum() < len(y):
        ci = bootstrap_metrics(y_true=y, scores=s, threshold=threshold, groups=patients, n_resamples=n_resamples,
                               seed=seed)
        for m in GROUP_METRICS[:-1]:
            values.update({m: ci[m].value, f"{m}_ci_low": ci[m].ci_low, f"{m}_ci_high": ci[m].ci_high})
    else:  # one class only: AUROC and one of sensitivity/specificity are undefined
        values.update({k: math.nan for m in GROUP_METRICS[:-1] for k in (m, f"{m}_ci_low", f"{m}_ci_high")})
    pred = s >= threshold
    rate = pred.mean()
    half = 1.96 * math.sqrt(rate * (1 - rate) / len(pred))  # normal interval; the rate is a mean of 0/1
    values.update({"positive_rate": float(rate), "positive_rate_ci_low": float(max(0.0, rate - half)),
                   "positive_rate_ci_high": float(min(1.0, rate + half))})
    return values
