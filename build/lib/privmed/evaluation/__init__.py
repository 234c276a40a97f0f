"""Evaluation: metrics at a validation-chosen threshold, with bootstrap confidence intervals."""

from privmed.evaluation.bootstrap import MetricCI, bootstrap_indices, bootstrap_metrics, paired_bootstrap
from privmed.evaluation.metrics import (
    METRIC_NAMES,
    MetricInputError,
    binary_metrics,
    multilabel_metrics,
    youden_threshold,
)

__all__ = [
    "METRIC_NAMES",
    "MetricCI",
    "MetricInputError",
    "binary_metrics",
    "bootstrap_indices",
    "bootstrap_metrics",
    "multilabel_metrics",
    "paired_bootstrap",
    "youden_threshold",
]
