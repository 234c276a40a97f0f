"""Subgroup fairness: metrics by hand, suppression, parity differences, fairlearn, Pearson."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from privmed.errors import PrivmedError
from privmed.evaluation.fairness import (
    fairlearn_differences,
    parity_differences,
    pearson,
    subgroup_metrics,
)


def data(seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array(["a"] * 60 + ["b"] * 40 + ["c"] * 5, dtype=object)
    y = rng.integers(0, 2, len(groups))
    scores = y * np.where(groups == "a", 1.5, 0.3) + rng.normal(size=len(groups))
    return y, scores, groups


def test_subgroup_metrics_match_a_hand_computation_and_suppress_small_groups():
    y, s, g = data()
    table = subgroup_metrics(y_true=y, scores=s, threshold=0.5, groups=g, n_resamples=200).set_index("group")
    for name in ("a", "b"):
        m = g == name
        pred = s[m] >= 0.5
        assert table.loc[name, "n"] == m.sum()
        assert table.loc[name, "auroc"] == pytest.approx(roc_auc_score(y[m], s[m]))
        assert table.loc[name, "accuracy"] == pytest.approx((pred == y[m]).mean())
        assert table.loc[name, "sensitivity"] == pytest.approx(pred[y[m] == 1].mean())
        assert table.loc[name, "specificity"] == pytest.approx((~pred[y[m] == 0]).mean())
        assert table.loc[name, "auroc_ci_low"] <= table.loc[name, "auroc"] <= table.loc[name, "auroc_ci_high"]
    c = table.loc["c"]
    assert c["suppressed"] and math.isnan(c["n"]) and all(math.isnan(c[k]) for k in ("auroc", "accuracy"))
    assert table.loc["a", "auroc"] > table.loc["b", "auroc"]  # the signal is stronger in group a


def test_parity_difference_is_minus_the_weighted_mean_of_the_others():
    y, s, g = data()
    table = subgroup_metrics(y_true=y, scores=s, threshold=0.5, groups=g, n_resamples=100)
    spd = parity_differences(table=table, metric="auroc")
    a, b = table.set_index("group").loc[["a", "b"], "auroc"]
    assert spd["a"] == pytest.approx(a - b) and spd["b"] == pytest.approx(b - a)  # two shown groups
    assert math.isnan(spd["c"])  # suppressed


def test_parity_difference_weights_the_other_groups_by_size():
    import pandas as pd

    table = pd.DataFrame({"group": ["x", "y", "z"], "n": [10, 30, 10], "suppressed": [False] * 3,
                          "auroc": [0.6, 0.8, 0.7]})
    spd = parity_differences(table=table, metric="auroc")
    assert spd["x"] == pytest.approx(0.6 - (30 * 0.8 + 10 * 0.7) / 40)


def test_fairlearn_differences_by_hand_on_shown_groups():
    y, s, g = data()
    diff = fairlearn_differences(y_true=y, scores=s, threshold=0.5, groups=g)
    rate = {k: (s[g == k] >= 0.5).mean() for k in "ab"}
    tpr = {k: (s[(g == k) & (y == 1)] >= 0.5).mean() for k in "ab"}
    assert diff.demographic_parity == pytest.approx(abs(rate["a"] - rate["b"]))
    assert diff.equal_opportunity == pytest.approx(abs(tpr["a"] - tpr["b"]))
    assert diff.equalized_odds >= diff.equal_opportunity


def test_pearson_matches_scipy_and_ignores_missing_values():
    x = np.array([1, 6, 12, 20, np.nan])
    y = np.array([0.1, 0.05, 0.02, 0.0, 0.3])
    r, p = pearson(x=x, y=y)
    assert r == pytest.approx(np.corrcoef(x[:4], y[:4])[0, 1]) and 0 < p < 1
    assert all(math.isnan(v) for v in pearson(x=[1, 2], y=[3, 4]))


def test_mismatched_lengths_are_a_clear_error():
    with pytest.raises(PrivmedError, match="one entry per sample"):
        subgroup_metrics(y_true=[0, 1], scores=[0.1], threshold=0.5, groups=["a", "b"])
