"""Classification metrics at a fixed decision threshold.

AUROC and AUPRC come from scikit-learn; accuracy, sensitivity, specificity and F1
are counted from the confusion matrix with numpy. The decision rule everywhere is
``prediction = scores >= threshold``. Choose the threshold on the validation split
with :func:`youden_threshold` and pass it unchanged to the test split.

Undefined metrics are returned as ``nan`` rather than raised, so the caller decides:
AUROC/AUPRC when ``y_true`` holds one class, sensitivity without positives,
specificity without negatives, F1 without positives and without predicted positives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from privmed.errors import PrivmedError

METRIC_NAMES = ("auroc", "auprc", "accuracy", "sensitivity", "specificity", "f1")
RANK_METRICS = ("auroc", "auprc")
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "f1")
MEAN_KEY = "mean"

EMPTY_INPUT = "y_true is empty (shape {shape}); need at least one sample and one label."
BAD_NDIM = "{name} has shape {shape}; {func} needs a {expected} array."
LENGTH_MISMATCH = "y_true has {n_true} samples but {name} has {n_other}; pass exactly one entry per sample."
SHAPE_MISMATCH = "y_true has shape {y_shape} but {name} has shape {other_shape}; they must have the same shape."
NON_BINARY_LABELS = "y_true must hold only 0/1 labels (or booleans); found {values}."
NON_NUMERIC_SCORES = "{name} must be numeric, got dtype {dtype}."
NON_FINITE_SCORES = (
    "{name} holds {count} NaN or infinite value(s) (first at position {position}); "
    "fix the model outputs or drop those samples before evaluating."
)
BAD_THRESHOLD = "threshold must be a real number (not NaN), got {threshold!r}."
THRESHOLDS_SHAPE = "thresholds has shape {shape}; pass one real (non-NaN) threshold per label, shape ({n_labels},)."
LABEL_NAMES_LENGTH = "label_names has {n_names} names for {n_labels} labels; give exactly one name per column of y_true."
LABEL_NAMES_INVALID = "label_names must be unique strings and must not include '{reserved}' (reserved for the average); got {names}."
ONE_CLASS = (
    "youden_threshold needs both classes, but all {n} labels in y_true are {cls}. "
    "Choose the threshold on a split that contains positives and negatives."
)

_SHAPES = {1: "1-D (samples,)", 2: "2-D (samples, labels)"}


class MetricInputError(PrivmedError, ValueError):
    """Invalid input to an evaluation function.

    A :class:`ValueError` for library callers and a :class:`PrivmedError` so the CLI
    prints the message instead of a traceback.
    """


def youden_threshold(*, y_true: np.ndarray, scores: np.ndarray) -> float:
    """Return the score cut that maximises Youden's J = sensitivity + specificity - 1.

    Candidates are the distinct score values (``roc_curve`` with
    ``drop_intermediate=False``); predictions are ``scores >= threshold``. The first
    ROC point (threshold ``inf``, nothing predicted positive) is never chosen. Ties
    go to the highest threshold, i.e. the fewest predicted positives. Raises
    :class:`MetricInputError` unless ``y_true`` holds both classes.
    """
    y, s = check_pair(y_true, scores, ndim=1, func="youden_threshold")
    if y.all() or not y.any():
        raise MetricInputError(ONE_CLASS.format(n=y.size, cls=int(y[0])))
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    youden = (tpr - fpr)[1:]  # drop the (0, 0) point whose threshold is inf
    return float(thresholds[1:][np.argmax(youden)])


def binary_metrics(*, y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Return every metric in :data:`METRIC_NAMES` for one binary task.

    ``y_true`` holds 0/1 labels, ``scores`` any real-valued scores (probabilities,
    logits) with higher meaning more likely positive, and ``threshold`` the cut
    (predict positive where ``scores >= threshold``), normally chosen on the
    validation split. Undefined metrics are ``nan`` (see the module docstring).
    """
    y, s = check_pair(y_true, scores, ndim=1, func="binary_metrics")
    cut = check_threshold(threshold)
    pred = s >= cut
    counts = [np.count_nonzero(pred & y), np.count_nonzero(pred & ~y),
              np.count_nonzero(~pred & y), np.count_nonzero(~pred & ~y)]
    values = {"auroc": _rank_metric(roc_auc_score, y, s), "auprc": _rank_metric(average_precision_score, y, s)}
    values.update(rates_from_counts(*(np.float64(c) for c in counts)))
    return {name: float(values[name]) for name in METRIC_NAMES}


def multilabel_metrics(
    *, y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, label_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Return ``{label: {metric: value}, ..., "mean": {metric: mean over labels}}``.

    ``y_true`` and ``scores`` have shape ``(samples, labels)``, ``thresholds`` one cut
    per label. The mean is a plain mean, so it is ``nan`` when a metric is undefined
    for any label (use the per-label values to see which).
    """
    y, s = check_pair(y_true, scores, ndim=2, func="multilabel_metrics")
    names = check_label_names(label_names, y.shape[1])
    cuts = check_thresholds(thresholds, y.shape[1])
    result = {name: binary_metrics(y_true=y[:, j], scores=s[:, j], threshold=cuts[j]) for j, name in enumerate(names)}
    result[MEAN_KEY] = {m: float(np.mean([result[name][m] for name in names])) for m in METRIC_NAMES}
    return result


def rates_from_counts(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    """Threshold metrics from confusion counts (float arrays or numpy scalars); 0/0 gives nan."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def _rank_metric(fn, y: np.ndarray, s: np.ndarray) -> float:
    return float("nan") if y.all() or not y.any() else float(fn(y, s))


def check_pair(y_true, scores, *, ndim: int | None, func: str, name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores; return ``(bool labels, float64 scores)`` of equal shape."""
    y, s = np.asarray(y_true), np.asarray(scores)
    if y.ndim not in (1, 2) or (ndim is not None and y.ndim != ndim):
        expected = _SHAPES.get(ndim, "1-D (samples,) or 2-D (samples, labels)")
        raise MetricInputError(BAD_NDIM.format(name="y_true", shape=y.shape, func=func, expected=expected))
    if y.size == 0:
        raise MetricInputError(EMPTY_INPUT.format(shape=y.shape))
    if s.shape != y.shape:
        if s.ndim >= 1 and s.shape[0] != y.shape[0]:
            raise MetricInputError(LENGTH_MISMATCH.format(n_true=y.shape[0], name=name, n_other=s.shape[0]))
        raise MetricInputError(SHAPE_MISMATCH.format(y_shape=y.shape, name=name, other_shape=s.shape))
    return check_labels(y), check_scores(s, name)


def check_labels(y: np.ndarray) -> np.ndarray:
    """Return ``y`` as booleans; raise unless every entry is 0 or 1."""
    if y.dtype.kind == "b":
        return y
    if y.dtype.kind not in "iuf":
        raise MetricInputError(NON_BINARY_LABELS.format(values=y.ravel()[:5].tolist()))
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        raise MetricInputError(NON_BINARY_LABELS.format(values=np.unique(y[bad])[:5].tolist()))
    return y == 1


def check_scores(s: np.ndarray, name: str) -> np.ndarray:
    """Return ``s`` as float64; raise on non-numeric dtype or NaN/inf entries."""
    if s.dtype.kind not in "biuf":
        raise MetricInputError(NON_NUMERIC_SCORES.format(name=name, dtype=s.dtype))
    values = s.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        position = position[0] if len(position) == 1 else position
        raise MetricInputError(NON_FINITE_SCORES.format(name=name, count=int(bad.sum()), position=position))
    return values


def check_threshold(threshold) -> float:
    """Return ``threshold`` as a float; raise on NaN or non-scalar input."""
    try:
        value = float(threshold) if np.ndim(threshold) == 0 and not isinstance(threshold, (str, bytes)) else None
    except (TypeError, ValueError):
        value = None
    if value is None or np.isnan(value):
        raise MetricInputError(BAD_THRESHOLD.format(threshold=threshold))
    return value


def check_thresholds(thresholds, n_labels: int) -> np.ndarray:
    """Return one float threshold per label; raise on wrong shape or NaN."""
    try:
        cuts = np.asarray(thresholds, dtype=np.float64)
    except (TypeError, ValueError):
        cuts = np.full(0, np.nan)
    if cuts.shape != (n_labels,) or np.isnan(cuts).any():
        raise MetricInputError(THRESHOLDS_SHAPE.format(shape=np.shape(thresholds), n_labels=n_labels))
    return cuts


def check_label_names(label_names: Sequence[str], n_labels: int) -> list[str]:
    """Return the names as a list; raise unless there is one unique, non-reserved string per label."""
    names = [label_names] if isinstance(label_names, str) else list(label_names)
    if len(names) != n_labels:
        raise MetricInputError(LABEL_NAMES_LENGTH.format(n_names=len(names), n_labels=n_labels))
    if len(set(names)) != len(names) or MEAN_KEY in names or not all(isinstance(n, str) for n in names):
        raise MetricInputError(LABEL_NAMES_INVALID.format(reserved=MEAN_KEY, names=names))
    return names
