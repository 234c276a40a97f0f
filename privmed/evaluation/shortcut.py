"""Shortcut diagnostics: does a model read the lesion, or the scanner?

A data set can carry an *acquisition shortcut*: whole-image grey-level statistics (how bright,
how spread, how noisy an image is) that differ between the classes because of how, where or on
which machine the images were taken, not because of the disease. CBIS-DDSM's malignant patches are
brighter than its benign ones; a model that learns that scores well there and below chance at a
hospital whose scanner differs. Three figures tell such a model apart, for one evaluated split:

* ``acquisition_baseline_auroc``: how well acquisition statistics alone (:func:`acquisition_statistics`:
  grey-level quantiles, spread, noise level; nothing lesion-specific) predict the label *within the
  evaluated split*: a logistic regression cross-fitted over patient-grouped folds of that split
  (:func:`acquisition_scores`). It reads no training data, costs no epsilon and needs nothing kept in
  the run.
* ``deconfounded_auroc``: the model's AUROC among the positive-negative pairs that share a stratum
  of that cross-fitted acquisition score (quantile strata; :func:`stratified_auroc`): what the model
  knows beyond the scanner. Strata holding one class add no pair; the share of samples in strata with
  both classes is reported (``deconfounded_coverage``).
* ``lesion_masked_auroc``: the model's AUROC when the lesion region (for lesion-centred data the
  central square, :func:`lesion_region`) is replaced by its surround (:func:`mask_lesion`); a model
  that reads the lesion falls towards 0.5.

Confidence intervals are patient-level bootstraps (images when the data has no patient ids) over
the same resamples as privmed's other metrics; the strata stay as cross-fitted on the full split.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from privmed.evaluation.bootstrap import percentile_interval, resample_weights, weighted_auroc

#: grey-level quantiles in the acquisition statistics
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
STATISTIC_NAMES = (*(f"q{int(q * 100):02d}" for q in QUANTILES), "mean", "std", "noise")
DEFAULT_STRATA = 5
DEFAULT_FOLDS = 5
#: the central fraction of each side that is the lesion, for lesion-centred data (CBIS-DDSM's patches)
DEFAULT_LESION_FRACTION = 0.5

NOT_ABOVE_BASELINE = ("the model is not above the acquisition baseline on '{split}' (AUROC {model:.3f} against "
                      "{baseline:.3f}; the paired 95% CI of the difference, [{low:+.3f}, {high:+.3f}], includes 0): "
                      "it may read the scanner rather than the lesion.")
#: why an AUROC can lie below chance, in every sentence that says one does
BELOW_CHANCE_WHY = "a shortcut, a label-polarity mismatch or a shift"
BELOW_CHANCE = "'{split}' AUROC {value:.3f} [{low:.3f}, {high:.3f}] lies below chance: " + BELOW_CHANCE_WHY + "."
#: the shortcut figures of a binary split's metrics, with the short names the summary, results.csv and report use
FIGURES = {"acquisition_baseline_auroc": "acquisition baseline", "deconfounded_auroc": "deconfounded",
           "lesion_masked_auroc": "lesion masked"}


def acquisition_statistics(images) -> np.ndarray:
    """Whole-image acquisition statistics, (N, len(STATISTIC_NAMES)): the grey-level quantiles
    :data:`QUANTILES`, mean, standard deviation and a noise level (the median absolute difference of
    neighbouring pixels along the last axis, a robust high-frequency spread). Works for 2D images and
    3D volumes, in memory or read on access (one image at a time)."""
    rows = []
    for image in images:
        x = np.asarray(image, dtype=np.float64).reshape(-1, np.shape(image)[-1])
        flat = x.ravel()
        noise = np.median(np.abs(np.diff(x, axis=1))) if x.shape[1] > 1 else 0.0
        rows.append([*np.quantile(flat, QUANTILES), flat.mean(), flat.std(), noise])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(STATISTIC_NAMES))


def acquisition_scores(statistics: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, *,
                       folds: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold probabilities of a logistic regression from ``statistics`` to ``labels`` (0/1), over
    folds that keep each patient's images together and each fold's class balance (``groups``: patient
    ids; None: every image its own group). None when a class has fewer than two patients (no fold could
    hold it out)."""
    y = np.asarray(labels).astype(int).ravel()
    ids = np.arange(len(y)) if groups is None else np.asarray(groups)
    patients_per_class = [len(np.unique(ids[y == c])) for c in (0, 1)]
    k = min(folds, *patients_per_class)
    if k < 2:
        return None
    scores = np.zeros(len(y))
    split = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fit, held in split.split(statistics, y, ids):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        if len(np.unique(y[fit])) < 2:  # a fold without one class: no model, no information
            scores[held] = y[fit].mean()
            continue
        model.fit(statistics[fit], y[fit])
        scores[held] = model.predict_proba(statistics[held])[:, 1]
    return scores


def acquisition_strata(scores: np.ndarray, *, strata: int = DEFAULT_STRATA) -> np.ndarray:
    """Stratum of each sample: the quantile bin of its acquisition score (ties stay together)."""
    ranks = np.searchsorted(np.sort(scores), scores, side="left") / max(len(scores), 1)
    return np.minimum((ranks * strata).astype(int), strata - 1)


def stratified_auroc(labels: np.ndarray, scores: np.ndarray, strata: np.ndarray,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """AUROC over the positive-negative pairs that share a stratum (ties count one half), for each row
    of ``weights`` (R, N) of per-sample multiplicities (one row of ones when None); ``nan`` where no
    stratum holds both classes. One stratum for every sample gives the plain AUROC. Each stratum's AUROC
    is :func:`~privmed.evaluation.bootstrap.weighted_auroc`, pooled by its weighted pairs."""
    y, s = np.asarray(labels).astype(bool).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(weights).astype(np.float64)
    concordant = np.zeros(w.shape[0])
    pairs = np.zeros(w.shape[0])
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        if y[members].all() or not y[members].any():
            continue
        ws, ys = w[:, members], y[members]
        stratum_pairs = (ws @ ys) * (ws @ ~ys)
        concordant += np.nan_to_num(weighted_auroc(ws, ys, s[members])) * stratum_pairs
        pairs += stratum_pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / np.where(pairs > 0, pairs, 1), np.nan)


def lesion_region(shape: tuple[int, ...], fraction: float = DEFAULT_LESION_FRACTION) -> np.ndarray:
    """Boolean mask of the central box whose sides are ``fraction`` of the image's (2D or 3D)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the lesion fraction must lie strictly between 0 and 1, got {fraction}")
    mask = np.zeros(shape, dtype=bool)
    box = []
    for side in shape:
        width = max(1, int(round(side * fraction)))
        start = (side - width) // 2
        box.append(slice(start, start + width))
    mask[tuple(box)] = True
    return mask


def mask_lesion(images: torch.Tensor, region: np.ndarray) -> torch.Tensor:
    """``images`` (N, C, *spatial) with the lesion ``region`` of each replaced by the mean of its
    surround (every pixel outside the region), per image and channel."""
    inside = torch.from_numpy(region).to(images.device)
    flat = images.flatten(2)
    surround = flat[..., ~inside.flatten()].mean(-1, keepdim=True)
    masked = torch.where(inside.flatten(), surround, flat)
    return masked.view_as(images)


def shortcut_metrics(*, labels: np.ndarray, scores: np.ndarray, statistics: np.ndarray,
                     groups: np.ndarray | None, masked_scores: np.ndarray | None = None,
                     strata: int = DEFAULT_STRATA, n_resamples: int = 1000, seed: int = 0) -> dict:
    """The three shortcut figures of one binary split, each ``{"value", "ci_low", "ci_high"}`` (the
    deconfounded one with its ``coverage``), and the paired bootstrap of model minus baseline AUROC.
    ``statistics``: :func:`acquisition_statistics` of the split's images; ``masked_scores``: the
    model's scores on :func:`mask_lesion` images (None: not lesion-centred, no such figure)."""
    y = np.asarray(labels).astype(int).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    acquisition = acquisition_scores(statistics, y, groups, seed=seed)
    if acquisition is None:
        return {"acquisition_baseline_auroc": None, "deconfounded_auroc": None,
                "reason": "a class has fewer than two patients in this split"}
    bins = acquisition_strata(acquisition, strata=strata)
    everyone = np.zeros(len(y), dtype=int)
    weights = resample_weights(n=len(y), groups=groups, n_resamples=n_resamples, seed=seed)
    columns = {"acquisition_baseline_auroc": (acquisition, everyone), "deconfounded_auroc": (s, bins),
               "_model_auroc": (s, everyone)}
    if masked_scores is not None:
        columns["lesion_masked_auroc"] = (np.asarray(masked_scores, dtype=np.float64).ravel(), everyone)
    values = {name: (stratified_auroc(y, x, b)[0], stratified_auroc(y, x, b, weights))
              for name, (x, b) in columns.items()}
    result = {name: _interval(point, draws) for name, (point, draws) in values.items() if not name.startswith("_")}
    result["deconfounded_auroc"]["coverage"] = _coverage(y, bins)
    result["deconfounded_auroc"]["strata"] = strata
    diff = values["_model_auroc"][1] - values["acquisition_baseline_auroc"][1]
    point = values["_model_auroc"][0] - values["acquisition_baseline_auroc"][0]
    result["model_minus_baseline_auroc"] = _interval(point, diff)
    return result


def _interval(point: float, draws: np.ndarray) -> dict:
    low, high = percentile_interval(draws, 0.95)
    return {"value": float(point), "ci_low": low, "ci_high": high}


def _coverage(y: np.ndarray, bins: np.ndarray) -> float:
    """Share of samples in strata that hold both classes."""
    mixed = [b for b in np.unique(bins) if 0 < y[bins == b].mean() < 1]
    return float(np.isin(bins, mixed).mean())


def shortcut_sentences(split: str, split_metrics: dict) -> list[str]:
    """The sentences a split's figures call for: not above the acquisition baseline; below chance."""
    out = []
    diff, baseline = split_metrics.get("model_minus_baseline_auroc"), split_metrics.get("acquisition_baseline_auroc")
    auroc = split_metrics.get("auroc")
    if diff and baseline and auroc and diff["ci_low"] <= 0:
        out.append(NOT_ABOVE_BASELINE.format(split=split, model=auroc["value"], baseline=baseline["value"],
                                             low=diff["ci_low"], high=diff["ci_high"]))
    if auroc and auroc.get("ci_high", 1.0) < 0.5:
        out.append(BELOW_CHANCE.format(split=split, value=auroc["value"], low=auroc["ci_low"], high=auroc["ci_high"]))
    return out


def acquisition_clusters(statistics: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, *,
                         clusters: int = 4, min_minority: float = 0.2, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Pseudo-sites for leave-one-acquisition-cluster-out validation: k-means (``clusters``) on the
    standardised acquisition statistics, each patient put wholly in the cluster most of their images
    fall in; returns the cluster of each sample and the clusters fit to hold out (their minority class
    at least ``min_minority`` of their samples)."""
    from sklearn.cluster import KMeans

    z = StandardScaler().fit_transform(statistics)
    found = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(z)
    ids = np.arange(len(found)) if groups is None else np.asarray(groups)
    by_patient = {}
    for patient in np.unique(ids):
        values, counts = np.unique(found[ids == patient], return_counts=True)
        by_patient[patient] = values[np.argmax(counts)]
    site = np.array([by_patient[p] for p in ids])
    y = np.asarray(labels).astype(int).ravel()
    eligible = [int(c) for c in np.unique(site) if min(y[site == c].mean(), 1 - y[site == c].mean()) >= min_minority]
    return site, eligible
