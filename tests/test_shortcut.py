"""Shortcut diagnostics (privmed.evaluation.shortcut): the acquisition baseline, the deconfounded AUROC and the
lesion-masked AUROC, on crafted data whose answer is known, and in a run's metrics.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from privmed.evaluation import shortcut as sc

SIDE = 24


def _sites(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five acquisition sites of equal size, each with its own brightness and malignancy rate (.1 ... .9);
    within a site the label says nothing about the image. Returns images, labels, patient ids."""
    site = np.repeat(np.arange(5), n // 5)
    labels = (rng.random(site.size) < (0.1 + 0.2 * site)).astype(int)
    level = 0.2 + 0.12 * site + rng.normal(0, 0.005, site.size)
    images = np.clip(level[:, None, None] + rng.normal(0, 0.04, (site.size, SIDE, SIDE)), 0, 1)
    return images.astype(np.float32), labels, np.arange(site.size) // 2


def _lesions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images whose grey-level histogram does not depend on the label: a central disc (label 1) or a central
    square of the same area (label 0) on a background whose brightness varies at random."""
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIDE, :SIDE] - (SIDE - 1) / 2
    side = 7
    radius = (xx ** 2 + yy ** 2).ravel()
    disc = np.zeros(SIDE * SIDE, dtype=bool)
    disc[np.argsort(radius, kind="stable")[:side * side]] = True  # the pixels nearest the centre: as many as the square's
    disc = disc.reshape(SIDE, SIDE)
    square = np.zeros_like(disc)
    start = (SIDE - side) // 2
    square[start:start + side, start:start + side] = True
    level = rng.uniform(0.2, 0.6, n)
    images = level[:, None, None] + rng.normal(0, 0.03, (n, SIDE, SIDE))
    shapes = np.where(labels[:, None, None] == 1, disc, square)
    images = np.where(shapes, images + 0.3, images)
    return np.clip(images, 0, 1).astype(np.float32), labels, np.arange(n)


def _corner_score(images: np.ndarray) -> np.ndarray:
    """A 'model' that reads the lesion: how dark the corners of the central square are (a disc leaves them dark)."""
    c = (SIDE - 8) // 2
    corners = images[:, [c, c, c + 7, c + 7], [c, c + 7, c, c + 7]].mean(1)
    centre = images[:, SIDE // 2 - 1:SIDE // 2 + 1, SIDE // 2 - 1:SIDE // 2 + 1].mean((1, 2))
    return centre - corners


def test_stratified_auroc_is_sklearn_auroc_in_one_stratum_and_within_pairs_otherwise():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.4, 1), 1)  # ties
    one = np.zeros(300, dtype=int)
    assert sc.stratified_auroc(y, s, one)[0] == pytest.approx(roc_auc_score(y, s))
    strata = rng.integers(0, 3, 300)
    pos, neg = [], []
    concordant = pairs = 0.0
    for k in range(3):
        ys, ss = y[strata == k], s[strata == k]
        p, q = ss[ys == 1][:, None], ss[ys == 0][None, :]
        concordant += (p > q).sum() + 0.5 * (p == q).sum()
        pairs += p.size * q.size
    assert sc.stratified_auroc(y, s, strata)[0] == pytest.approx(concordant / pairs)
    weights = rng.integers(0, 3, (4, 300)).astype(float)  # a bootstrap's multiplicities
    for row, w in zip(sc.stratified_auroc(y, s, one, weights), weights):
        keep = np.repeat(np.arange(300), w.astype(int))
        assert row == pytest.approx(roc_auc_score(y[keep], s[keep]))


def test_brightness_alone_predicts_the_label_deconfounded_is_chance():
    images, labels, patients = _sites(1000, np.random.default_rng(2))
    brightness = images.mean((1, 2))
    result = sc.shortcut_metrics(labels=labels, scores=brightness, statistics=sc.acquisition_statistics(images),
                                 groups=patients, n_resamples=200)
    assert roc_auc_score(labels, brightness) > 0.75
    assert result["acquisition_baseline_auroc"]["value"] > 0.75
    assert abs(result["deconfounded_auroc"]["value"] - 0.5) < 0.05
    assert result["deconfounded_auroc"]["coverage"] == 1.0
    # the model is no better than the scanner: the paired CI of the difference includes 0, and the summary says so
    diff = result["model_minus_baseline_auroc"]
    assert diff["ci_low"] <= 0
    split = {**result, "auroc": {"value": roc_auc_score(labels, brightness), "ci_low": 0.7, "ci_high": 0.8}}
    assert "not above the acquisition baseline" in " ".join(sc.shortcut_sentences("val", split))


def test_only_the_lesion_predicts_the_label_deconfounded_is_plain_and_masked_is_chance():
    images, labels, patients = _lesions(600, np.random.default_rng(3))
    stats = sc.acquisition_statistics(images)
    scores = _corner_score(images)
    region = sc.lesion_region((SIDE, SIDE), 0.5)
    masked = sc.mask_lesion(torch.from_numpy(images).unsqueeze(1), region)[:, 0].numpy()
    result = sc.shortcut_metrics(labels=labels, scores=scores, statistics=stats, groups=patients,
                                 masked_scores=_corner_score(masked), n_resamples=200)
    plain = roc_auc_score(labels, scores)
    assert plain > 0.9
    assert result["acquisition_baseline_auroc"]["value"] < 0.62
    assert result["deconfounded_auroc"]["value"] == pytest.approx(plain, abs=0.03)
    assert abs(result["lesion_masked_auroc"]["value"] - 0.5) < 0.1
    assert result["model_minus_baseline_auroc"]["ci_low"] > 0
    assert sc.shortcut_sentences("test", {**result, "auroc": {"value": plain, "ci_low": 0.9, "ci_high": 1}}) == []


def test_masking_replaces_the_central_box_by_the_surround_mean():
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    region = sc.lesion_region((8, 8), 0.5)
    assert region.sum() == 16 and region[2:6, 2:6].all()
    masked = sc.mask_lesion(x, region)
    outside = x[0, 0][torch.from_numpy(~region)]
    assert torch.allclose(masked[0, 0, 2:6, 2:6], outside.mean().expand(4, 4))
    assert torch.equal(masked[0, 0][torch.from_numpy(~region)], outside)
    assert sc.lesion_region((4, 8, 8), 0.5).sum() == 2 * 4 * 4  # 3D: the central box of the volume
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        sc.lesion_region((8, 8), 1.0)


def test_a_split_with_one_patient_of_a_class_gets_a_reason_not_a_figure():
    rng = np.random.default_rng(4)
    labels = np.array([1] + [0] * 20)
    result = sc.shortcut_metrics(labels=labels, scores=rng.random(21), statistics=rng.random((21, 8)),
                                 groups=np.arange(21), n_resamples=50)
    assert result["acquisition_baseline_auroc"] is None and "fewer than two patients" in result["reason"]


def test_below_chance_is_said():
    split = {"auroc": {"value": 0.42, "ci_low": 0.39, "ci_high": 0.46}}
    assert sc.shortcut_sentences("external", split) == [sc.BELOW_CHANCE.format(split="external", value=0.42,
                                                                                low=0.39, high=0.46)]


def test_acquisition_clusters_keep_patients_whole_and_hold_out_only_mixed_clusters():
    images, labels, patients = _sites(1000, np.random.default_rng(5))
    site, eligible = sc.acquisition_clusters(sc.acquisition_statistics(images), labels, patients, clusters=5)
    for p in np.unique(patients):
        assert len(set(site[patients == p])) == 1
    minority = {c: min(labels[site == c].mean(), 1 - labels[site == c].mean()) for c in np.unique(site)}
    assert eligible == [c for c in minority if minority[c] >= 0.2]
    strict = sc.acquisition_clusters(sc.acquisition_statistics(images), labels, patients, clusters=5,
                                     min_minority=0.3)[1]
    assert strict == [c for c in minority if minority[c] >= 0.3] and len(strict) < 5
