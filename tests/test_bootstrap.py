"""Bootstrap resampling, confidence intervals and the paired comparison."""

import math
import re
import time

import numpy as np
import pytest

from privmed.evaluation import (
    METRIC_NAMES,
    MetricCI,
    binary_metrics,
    bootstrap_indices,
    bootstrap_metrics,
    multilabel_metrics,
    paired_bootstrap,
)
from privmed.evaluation.bootstrap import (
    BAD_CONFIDENCE,
    BAD_COUNT,
    GROUPS_MISSING,
    GROUPS_SHAPE,
    LABEL_NAMES_BINARY,
    THRESHOLD_REQUIRED,
    UNKNOWN_METRIC,
    _prepare,
    _resample_values,
)
from privmed.evaluation.metrics import LENGTH_MISMATCH, NON_BINARY_LABELS, NON_FINITE_SCORES


def _task(n, *, seed=0, prevalence=0.3, signal=1.0, labels=None):
    rng = np.random.default_rng(seed)
    shape = (n,) if labels is None else (n, labels)
    y = (rng.random(shape) < prevalence).astype(int)
    scores = np.round(rng.normal(size=shape) + signal * y, 1)  # rounding creates ties
    groups = rng.integers(0, max(1, n // 4), size=n)  # ~4 images per patient
    return y, scores, groups


def _patients(n_patients=30, seed=1):
    sizes = np.random.default_rng(seed).integers(1, 6, size=n_patients)
    return np.repeat([f"p{i}" for i in range(n_patients)], sizes)


# --- resample indices ----------------------------------------------------------------


def test_indices_are_deterministic_from_seed():
    for groups in (None, _patients()):
        n = 100 if groups is None else len(groups)
        first = bootstrap_indices(n=n, groups=groups, n_resamples=20, seed=3)
        again = bootstrap_indices(n=n, groups=groups, n_resamples=20, seed=3)
        other = bootstrap_indices(n=n, groups=groups, n_resamples=20, seed=4)
        assert len(first) == 20
        assert all(np.array_equal(a, b) for a, b in zip(first, again))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_sample_level_resamples_have_n_indices_in_range():
    for idx in bootstrap_indices(n=50, groups=None, n_resamples=10, seed=0):
        assert idx.shape == (50,) and idx.min() >= 0 and idx.max() < 50


def test_patient_level_resamples_are_unions_of_whole_patients():
    groups = _patients()
    # shuffle so a patient's images are not contiguous
    groups = groups[np.random.default_rng(2).permutation(len(groups))]
    patients = {p: np.flatnonzero(groups == p) for p in np.unique(groups)}
    for idx in bootstrap_indices(n=len(groups), groups=groups, n_resamples=50, seed=0):
        counts = np.bincount(idx, minlength=len(groups))
        draws = 0
        for members in patients.values():
            # every image of a patient appears equally often: the patient was drawn k times, whole
            assert len(set(counts[members])) == 1
            draws += counts[members[0]]
        assert draws == len(patients)  # as many patient draws as patients


def test_bad_groups_and_counts():
    with pytest.raises(ValueError, match=re.escape(GROUPS_SHAPE.format(shape=(3,), n=4))):
        bootstrap_indices(n=4, groups=np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=re.escape(GROUPS_MISSING.format(count=1, position=2))):
        bootstrap_indices(n=3, groups=np.array(["a", "b", None], dtype=object))
    with pytest.raises(ValueError, match=re.escape(BAD_COUNT.format(name="n_resamples", value=0))):
        bootstrap_indices(n=3, groups=None, n_resamples=0)


# --- vectorised metrics equal scikit-learn -------------------------------------------


@pytest.mark.parametrize("grouped", [False, True])
def test_fast_resample_metrics_equal_binary_metrics_on_each_resample(grouped):
    y, s, groups = _task(300, seed=5)
    groups = groups if grouped else None
    yy, ss, cuts, _ = _prepare(y, s, 0.4, None, func="test")
    fast = _resample_values([(yy, ss, cuts)], groups=groups, n_resamples=30, seed=7)[0]
    for b, idx in enumerate(bootstrap_indices(n=300, groups=groups, n_resamples=30, seed=7)):
        ref = binary_metrics(y_true=y[idx], scores=s[idx], threshold=0.4)  # sklearn AUROC/AUPRC
        np.testing.assert_allclose(fast[b, 0], [ref[m] for m in METRIC_NAMES], rtol=1e-12, atol=1e-12)


def test_fast_resample_metrics_equal_multilabel_metrics():
    y, s, groups = _task(200, seed=6, labels=3)
    cuts = np.array([0.0, 0.5, 1.0])
    yy, ss, cc, names = _prepare(y, s, cuts, None, func="test")
    fast = _resample_values([(yy, ss, cc)], groups=groups, n_resamples=10, seed=1)[0]
    for b, idx in enumerate(bootstrap_indices(n=200, groups=groups, n_resamples=10, seed=1)):
        ref = multilabel_metrics(y_true=y[idx], scores=s[idx], thresholds=cuts, label_names=names)
        for j, name in enumerate(names):
            np.testing.assert_allclose(fast[b, j], [ref[name][m] for m in METRIC_NAMES], rtol=1e-12)


# --- confidence intervals -----------------------------------------------------------


def test_binary_ci_contains_point_estimate_and_is_deterministic():
    y, s, groups = _task(400)
    result = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, groups=groups, n_resamples=300)
    point = binary_metrics(y_true=y, scores=s, threshold=0.5)
    assert list(result) == list(METRIC_NAMES)
    for metric, ci in result.items():
        assert isinstance(ci, MetricCI)
        assert ci.value == point[metric]
        assert ci.ci_low < ci.value < ci.ci_high
        assert ci.to_dict() == {"value": ci.value, "ci_low": ci.ci_low, "ci_high": ci.ci_high}
    again = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, groups=groups, n_resamples=300)
    assert again == result


def test_ci_narrows_as_n_grows():
    widths = []
    for n in (200, 3200):
        y, s, _ = _task(n, seed=1)
        ci = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, n_resamples=300)["auroc"]
        widths.append(ci.ci_high - ci.ci_low)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(16) = 1/4 expected


def test_patient_level_ci_is_wider_with_correlated_images():
    # each patient's images share one score and label: the effective sample size is the patient count
    rng = np.random.default_rng(0)
    y_pat = rng.random(100) < 0.4
    s_pat = rng.normal(size=100) + y_pat
    groups = np.repeat(np.arange(100), 8)
    y, s = y_pat[groups], s_pat[groups] + 0.01 * rng.normal(size=800)
    naive = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, n_resamples=300)["auroc"]
    patient = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, groups=groups, n_resamples=300)["auroc"]
    assert patient.ci_high - patient.ci_low > 1.5 * (naive.ci_high - naive.ci_low)


def test_multilabel_structure_and_mean():
    y, s, groups = _task(300, labels=3)
    cuts = np.zeros(3)
    result = bootstrap_metrics(y_true=y, scores=s, threshold=cuts, groups=groups,
                               label_names=["edema", "effusion", "nodule"], n_resamples=200)
    assert list(result) == ["edema", "effusion", "nodule", "mean"]
    point = multilabel_metrics(y_true=y, scores=s, thresholds=cuts, label_names=["edema", "effusion", "nodule"])
    for label, metrics in result.items():
        assert {m: ci.value for m, ci in metrics.items()} == point[label]
        assert all(ci.ci_low <= ci.value <= ci.ci_high for ci in metrics.values())
    default = bootstrap_metrics(y_true=y, scores=s, threshold=cuts, n_resamples=20)
    assert list(default) == ["label_0", "label_1", "label_2", "mean"]


def test_undefined_resamples_are_skipped_not_propagated():
    # one positive in 20: many resamples miss it, AUROC is undefined there and skipped
    y = np.zeros(20, dtype=int)
    y[3] = 1
    s = np.linspace(0, 1, 20)
    ci = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, n_resamples=200)["auroc"]
    assert not math.isnan(ci.ci_low) and 0 <= ci.ci_low <= ci.ci_high <= 1


def test_all_resamples_undefined_gives_nan_interval():
    ci = bootstrap_metrics(y_true=np.zeros(10), scores=np.arange(10.0), threshold=5, n_resamples=20)["auroc"]
    assert math.isnan(ci.value) and math.isnan(ci.ci_low) and math.isnan(ci.ci_high)


def test_confidence_level_changes_width():
    y, s, _ = _task(300)
    wide = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, n_resamples=300, confidence=0.99)["auroc"]
    narrow = bootstrap_metrics(y_true=y, scores=s, threshold=0.5, n_resamples=300, confidence=0.5)["auroc"]
    assert narrow.ci_high - narrow.ci_low < wide.ci_high - wide.ci_low


def test_1000_resamples_of_2000_samples_are_fast():
    y, s, groups = _task(2000)
    start = time.perf_counter()
    bootstrap_metrics(y_true=y, scores=s, threshold=0.5, groups=groups, n_resamples=1000)
    assert time.perf_counter() - start < 10  # ~0.3 s on a laptop core; loose for shared machines


def test_bootstrap_input_errors():
    y, s, _ = _task(10)
    with pytest.raises(ValueError, match=re.escape(LENGTH_MISMATCH.format(n_true=10, name="scores", n_other=9))):
        bootstrap_metrics(y_true=y, scores=s[:9], threshold=0.5)
    bad = s.astype(float)
    bad[4] = np.nan
    with pytest.raises(ValueError, match=re.escape(NON_FINITE_SCORES.format(name="scores", count=1, position=4))):
        bootstrap_metrics(y_true=y, scores=bad, threshold=0.5)
    with pytest.raises(ValueError, match=re.escape(NON_BINARY_LABELS.format(values=[2]))):
        bootstrap_metrics(y_true=np.where(y == 1, 2, 0), scores=s, threshold=0.5)
    with pytest.raises(ValueError, match=re.escape(LABEL_NAMES_BINARY)):
        bootstrap_metrics(y_true=y, scores=s, threshold=0.5, label_names=["a"])
    with pytest.raises(ValueError, match=re.escape(BAD_CONFIDENCE.format(value=95))):
        bootstrap_metrics(y_true=y, scores=s, threshold=0.5, confidence=95)
    with pytest.raises(ValueError, match=re.escape(GROUPS_SHAPE.format(shape=(3,), n=10))):
        bootstrap_metrics(y_true=y, scores=s, threshold=0.5, groups=[1, 2, 3])


# --- paired comparison --------------------------------------------------------------


def test_paired_small_p_when_a_is_clearly_better():
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.4).astype(int)
    good, poor = y + 0.7 * rng.normal(size=500), y + 3.0 * rng.normal(size=500)
    groups = np.arange(500) // 2
    result = paired_bootstrap(y_true=y, scores_a=good, scores_b=poor, groups=groups, n_resamples=500)
    assert set(result) == {"metric", "a", "b", "difference", "ci_low", "ci_high", "p_value"}
    assert result["metric"] == "auroc"
    assert result["a"] == pytest.approx(binary_metrics(y_true=y, scores=good, threshold=0)["auroc"])
    assert result["difference"] == pytest.approx(result["a"] - result["b"])
    assert 0 < result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["p_value"] == pytest.approx(1 / 501)  # floor 1/(B+1): no resample favours B
    swapped = paired_bootstrap(y_true=y, scores_a=poor, scores_b=good, groups=groups, n_resamples=500)
    assert swapped["difference"] == pytest.approx(-result["difference"]) and swapped["p_value"] < 0.01


def test_paired_large_p_for_same_scores_with_noise():
    # A and B are the same scores, each with its own noise of equal size: no real difference.
    # Over 20 data sets the p-values should look like a null distribution, not like a detection.
    p_values = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = (rng.random(300) < 0.4).astype(int)
        scores = y + rng.normal(size=300)
        a, b = scores + 0.3 * rng.normal(size=300), scores + 0.3 * rng.normal(size=300)
        result = paired_bootstrap(y_true=y, scores_a=a, scores_b=b, n_resamples=200, seed=seed)
        p_values.append(result["p_value"])
        if result["p_value"] > 0.2:
            assert result["ci_low"] < 0 < result["ci_high"]
    assert np.median(p_values) > 0.2
    assert np.mean(np.array(p_values) < 0.05) <= 0.15
    identical = paired_bootstrap(y_true=y, scores_a=scores, scores_b=scores, n_resamples=100)
    assert identical["p_value"] == 1.0 and identical["difference"] == 0.0


def test_paired_threshold_metric_and_multilabel_mean():
    y, s, groups = _task(300, labels=2)
    result = paired_bootstrap(y_true=y, scores_a=s, scores_b=-s, groups=groups, metric="f1",
                              threshold_a=[0.5, 0.5], threshold_b=[-0.5, -0.5], n_resamples=200)
    point_a = multilabel_metrics(y_true=y, scores=s, thresholds=[0.5, 0.5], label_names=["x", "z"])["mean"]["f1"]
    assert result["a"] == pytest.approx(point_a)
    assert result["difference"] > 0 and result["p_value"] < 0.05


def test_paired_is_deterministic_and_uses_same_resamples():
    y, s, groups = _task(200)
    kwargs = dict(y_true=y, scores_a=s, scores_b=s[::-1].copy(), groups=groups, n_resamples=100, seed=9)
    assert paired_bootstrap(**kwargs) == paired_bootstrap(**kwargs)


def test_paired_input_errors():
    y, s, _ = _task(10)
    with pytest.raises(ValueError, match=re.escape(UNKNOWN_METRIC.format(metric="auc", names=", ".join(METRIC_NAMES)))):
        paired_bootstrap(y_true=y, scores_a=s, scores_b=s, metric="auc")
    with pytest.raises(ValueError, match=re.escape(THRESHOLD_REQUIRED.format(metric="accuracy"))):
        paired_bootstrap(y_true=y, scores_a=s, scores_b=s, metric="accuracy", threshold_a=0.5)
    with pytest.raises(ValueError, match=re.escape(LENGTH_MISMATCH.format(n_true=10, name="scores_b", n_other=8))):
        paired_bootstrap(y_true=y, scores_a=s, scores_b=s[:8])
