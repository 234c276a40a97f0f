"""Metrics against hand computations on tiny cases, threshold handling and input checks."""

import math
import re

import numpy as np
import pytest

from privmed.evaluation import METRIC_NAMES, MetricInputError, binary_metrics, multilabel_metrics, youden_threshold
from privmed.evaluation.metrics import (
    BAD_THRESHOLD,
    LABEL_NAMES_INVALID,
    LABEL_NAMES_LENGTH,
    LENGTH_MISMATCH,
    MEAN_KEY,
    NON_BINARY_LABELS,
    NON_FINITE_SCORES,
    ONE_CLASS,
    SHAPE_MISMATCH,
    THRESHOLDS_SHAPE,
)

# 8 samples, deliberately unsorted, with one positive/negative tie at 0.6.
#   positives: 0.35, 0.6, 0.8, 0.9      negatives: 0.1, 0.2, 0.3, 0.6
Y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
S = np.array([0.6, 0.35, 0.1, 0.9, 0.3, 0.6, 0.2, 0.8])

# AUROC by counting (positive, negative) pairs, a tie counting 1/2:
#   0.35 beats 0.1, 0.2, 0.3 -> 3;  0.6 beats 3 and ties 1 -> 3.5;  0.8 -> 4;  0.9 -> 4
HAND_AUROC = (3 + 3.5 + 4 + 4) / (4 * 4)
# Average precision: recall rises by 1/4 at each positive; precision at that cut:
#   0.9 -> 1/1, 0.8 -> 2/2, 0.6 -> 3/4 (the tied negative enters too), 0.35 -> 4/5
HAND_AUPRC = (1 + 1 + 3 / 4 + 4 / 5) / 4


def test_tiny_case_at_youden_cut_matches_hand_confusion_matrix():
    # threshold 0.35: predicted positive = {0.35, 0.6, 0.6, 0.8, 0.9}
    tp, fp, fn, tn = 4, 1, 0, 3
    got = binary_metrics(y_true=Y, scores=S, threshold=0.35)
    assert set(got) == set(METRIC_NAMES)
    assert got["auroc"] == pytest.approx(HAND_AUROC)
    assert got["auprc"] == pytest.approx(HAND_AUPRC)
    assert got["accuracy"] == pytest.approx((tp + tn) / 8)
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_tiny_case_at_another_cut():
    # threshold 0.5: predicted positive = {0.6 (neg), 0.6, 0.8, 0.9}; positive 0.35 missed
    tp, fp, fn, tn = 3, 1, 1, 3
    got = binary_metrics(y_true=Y, scores=S, threshold=0.5)
    assert got["accuracy"] == pytest.approx((tp + tn) / 8)
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["auroc"] == pytest.approx(HAND_AUROC)  # threshold-free


def test_prediction_rule_is_greater_or_equal():
    got = binary_metrics(y_true=[0, 1], scores=[0.2, 0.7], threshold=0.7)
    assert got["sensitivity"] == 1.0 and got["specificity"] == 1.0


def test_youden_picks_hand_computed_cut():
    # J = TPR - FPR at each cut: 0.9 -> 1/4, 0.8 -> 2/4, 0.6 -> 3/4 - 1/4, 0.35 -> 1 - 1/4 (best),
    # 0.3 -> 1 - 2/4, 0.2 -> 1 - 3/4, 0.1 -> 0
    assert youden_threshold(y_true=Y, scores=S) == pytest.approx(0.35)


def test_youden_never_returns_inf_and_breaks_ties_high():
    # J = 0.5 at cuts 0.8 and 0.4; the higher one wins
    assert youden_threshold(y_true=[0, 1, 0, 1], scores=[0.1, 0.8, 0.5, 0.4]) == pytest.approx(0.8)
    # constant scores: the only finite cut
    assert youden_threshold(y_true=[0, 1, 0, 1], scores=[0.5] * 4) == 0.5


def test_youden_needs_both_classes():
    with pytest.raises(MetricInputError, match=re.escape(ONE_CLASS.format(n=3, cls=1))):
        youden_threshold(y_true=[1, 1, 1], scores=[0.1, 0.2, 0.3])


def test_threshold_chosen_on_val_is_applied_unchanged_to_test():
    cut = youden_threshold(y_true=[0, 0, 1, 1], scores=[0.1, 0.2, 0.6, 0.9])
    assert cut == pytest.approx(0.6)
    # test split's own best cut would differ (0.7); with 0.6: tp 0.7, fp 0.65, fn 0.55, tn 0.5
    y_test, s_test = np.array([0, 1, 0, 1]), np.array([0.5, 0.55, 0.65, 0.7])
    assert youden_threshold(y_true=y_test, scores=s_test) != pytest.approx(cut)
    got = binary_metrics(y_true=y_test, scores=s_test, threshold=cut)
    assert (got["accuracy"], got["sensitivity"], got["specificity"], got["f1"]) == (0.5, 0.5, 0.5, 0.5)


def test_one_class_gives_nan_rank_metrics_without_raising():
    got = binary_metrics(y_true=[0, 0, 0], scores=[0.1, 0.5, 0.9], threshold=0.5)
    assert math.isnan(got["auroc"]) and math.isnan(got["auprc"]) and math.isnan(got["sensitivity"])
    assert got["specificity"] == pytest.approx(1 / 3)
    assert got["accuracy"] == pytest.approx(1 / 3)


def test_multilabel_mean_is_mean_of_per_label():
    rng = np.random.default_rng(0)
    y = rng.random((50, 3)) < 0.4
    s = rng.normal(size=(50, 3)) + y
    cuts = np.array([0.0, 0.5, 1.0])
    got = multilabel_metrics(y_true=y, scores=s, thresholds=cuts, label_names=["a", "b", "c"])
    assert list(got) == ["a", "b", "c", MEAN_KEY]
    for j, name in enumerate("abc"):
        assert got[name] == binary_metrics(y_true=y[:, j], scores=s[:, j], threshold=cuts[j])
    for metric in METRIC_NAMES:
        assert got[MEAN_KEY][metric] == pytest.approx(np.mean([got[n][metric] for n in "abc"]))


def test_multilabel_mean_is_nan_when_a_label_is_undefined():
    y = np.array([[0, 1], [1, 1], [0, 1]])
    got = multilabel_metrics(y_true=y, scores=np.ones((3, 2)), thresholds=[0.5, 0.5], label_names=["a", "b"])
    assert math.isnan(got["b"]["auroc"]) and math.isnan(got[MEAN_KEY]["auroc"])
    assert not math.isnan(got[MEAN_KEY]["accuracy"])


def test_mismatched_lengths():
    with pytest.raises(ValueError, match=re.escape(LENGTH_MISMATCH.format(n_true=8, name="scores", n_other=7))):
        binary_metrics(y_true=Y, scores=S[:7], threshold=0.5)
    with pytest.raises(ValueError, match=re.escape(SHAPE_MISMATCH.format(y_shape=(4, 2), name="scores", other_shape=(4, 3)))):
        multilabel_metrics(y_true=np.zeros((4, 2)), scores=np.zeros((4, 3)), thresholds=[0, 0], label_names=["a", "b"])


def test_nan_scores():
    s = S.copy()
    s[[2, 5]] = np.nan
    with pytest.raises(ValueError, match=re.escape(NON_FINITE_SCORES.format(name="scores", count=2, position=2))):
        binary_metrics(y_true=Y, scores=s, threshold=0.5)
    with pytest.raises(ValueError, match="NaN or infinite"):
        youden_threshold(y_true=Y, scores=s)


@pytest.mark.parametrize("labels, shown", [([0, 1, 2, 1], [2]), ([0.0, 0.5, 1.0, 1.0], [0.5]), (["a", "b", "a", "b"], ["a", "b", "a", "b"])])
def test_non_binary_labels(labels, shown):
    with pytest.raises(ValueError, match=re.escape(NON_BINARY_LABELS.format(values=shown))):
        binary_metrics(y_true=labels, scores=[0.1, 0.2, 0.3, 0.4], threshold=0.5)


def test_bool_and_float_labels_are_accepted():
    as_int = binary_metrics(y_true=Y, scores=S, threshold=0.35)
    assert binary_metrics(y_true=Y.astype(bool), scores=S, threshold=0.35) == as_int
    assert binary_metrics(y_true=Y.astype(float), scores=S, threshold=0.35) == as_int


def test_bad_thresholds_and_label_names():
    with pytest.raises(ValueError, match=re.escape(BAD_THRESHOLD.format(threshold=float("nan")))):
        binary_metrics(y_true=Y, scores=S, threshold=float("nan"))
    y, s = np.zeros((4, 2)), np.zeros((4, 2))
    with pytest.raises(ValueError, match=re.escape(THRESHOLDS_SHAPE.format(shape=(3,), n_labels=2))):
        multilabel_metrics(y_true=y, scores=s, thresholds=[0, 0, 0], label_names=["a", "b"])
    with pytest.raises(ValueError, match=re.escape(LABEL_NAMES_LENGTH.format(n_names=1, n_labels=2))):
        multilabel_metrics(y_true=y, scores=s, thresholds=[0, 0], label_names=["a"])
    with pytest.raises(ValueError, match=re.escape(LABEL_NAMES_INVALID.format(reserved=MEAN_KEY, names=["a", "mean"]))):
        multilabel_metrics(y_true=y, scores=s, thresholds=[0, 0], label_names=["a", "mean"])


def test_binary_functions_reject_2d_labels():
    with pytest.raises(ValueError, match="1-D"):
        binary_metrics(y_true=np.zeros((4, 1)), scores=np.zeros((4, 1)), threshold=0.5)
