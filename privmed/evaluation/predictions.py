"""From a model and a data set to scores, a predictions table and metrics with CIs.

Thresholds are chosen once on the validation split (Youden, per label) and then
applied unchanged to every other split and to external data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from privmed.data.sources import Dataset
from privmed.evaluation.bootstrap import bootstrap_metrics
from privmed.evaluation.diagnostics import ScoreImages, split_diagnostics
from privmed.evaluation.metrics import youden_threshold


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, device: str | None = None, chunk: int = 256) -> np.ndarray:
    """Sigmoid scores, shape (N, n_labels), computed on ``device`` (default: where the model's weights are)."""
    model.eval()
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    parts = [torch.sigmoid(model(inputs[i:i + chunk].to(device))).cpu() for i in range(0, len(inputs), chunk)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 1), dtype=np.float32)


def predictions_frame(data: Dataset, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per sample: id, path, split, patient, label(s), score(s), attribute columns.

    Binary tasks get ``label`` and ``score``; multi-label tasks ``label_<name>`` and ``score_<name>``.
    """
    frames = []
    for split, split_scores in scores.items():
        part = data.split(split)
        t = part.table
        frame = pd.DataFrame({"sample_id": t["sample_id"], "split": split, "patient_id": t["patient_id"]})
        if "path" in t.columns:
            frame["path"] = t["path"]
        for j, name in enumerate(data.label_names):
            suffix = "" if len(data.label_names) == 1 else f"_{name}"
            frame[f"label{suffix}"] = t[name].astype(int).to_numpy()
            frame[f"score{suffix}"] = split_scores[:, j]
        for attr in data.attribute_columns:
            frame[attr] = t[attr].to_numpy()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def choose_thresholds(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Youden threshold per label column."""
    return np.array([youden_threshold(y_true=labels[:, j], scores=scores[:, j]) for j in range(labels.shape[1])])


def split_metrics(part: Dataset, scores: np.ndarray, thresholds: np.ndarray, *, n_resamples: int, seed: int,
                  score_images: ScoreImages | None = None, lesion_fraction: float = 0.0) -> dict:
    """Metrics with bootstrap CIs (patient-level when patient ids exist, else per image: ``bootstrap_unit``)
    for one split, and its shortcut diagnostics (:mod:`privmed.evaluation.diagnostics`; ``score_images``
    scores images as the model does, for the lesion-masked figure)."""
    labels = part.labels
    counts = {"n": len(part), "smallest_class_n": smallest_class(labels),
              "bootstrap_unit": "image" if part.patient_ids is None else "patient"}
    diagnostics = split_diagnostics(part, scores, score_images=score_images, lesion_fraction=lesion_fraction,
                                    n_resamples=n_resamples, seed=seed)
    if labels.shape[1] == 1:
        result = bootstrap_metrics(y_true=labels[:, 0], scores=scores[:, 0], threshold=float(thresholds[0]),
                                   groups=part.patient_ids, n_resamples=n_resamples, seed=seed)
        return {**counts, **{k: v.to_dict() for k, v in result.items()}, **diagnostics}
    result = bootstrap_metrics(y_true=labels, scores=scores, threshold=thresholds, groups=part.patient_ids,
                               label_names=list(part.label_names), n_resamples=n_resamples, seed=seed)
    return {**counts, **{label: {k: v.to_dict() for k, v in per.items()} for label, per in result.items()},
            **diagnostics}


def smallest_class(labels: np.ndarray) -> int:
    """Samples of the rarest class (positive or negative, over every label): what bounds how much a split can show."""
    if len(labels) == 0:
        return 0
    positives = labels.sum(0)
    return int(min(positives.min(), (len(labels) - positives).min()))


def evaluate_predictions(data: Dataset, scores: dict[str, np.ndarray], *, threshold_split: str = "val",
                         thresholds: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0,
                         score_images: ScoreImages | None = None, lesion_fraction: float = 0.0) -> dict:
    """Metrics for every split in ``scores``; thresholds from ``threshold_split`` unless given; shortcut
    diagnostics as :func:`split_metrics` computes them."""
    if thresholds is None:
        thresholds = choose_thresholds(data.split(threshold_split).labels, scores[threshold_split])
    return {
        "label_names": list(data.label_names),
        "thresholds": {name: float(t) for name, t in zip(data.label_names, thresholds)},
        "threshold_rule": f"Youden on the '{threshold_split}' split",
        "splits": {split: split_metrics(data.split(split), s, thresholds, n_resamples=n_resamples, seed=seed,
                                        score_images=score_images if split != "train" else None,
                                        lesion_fraction=lesion_fraction)
                   for split, s in scores.items()},
    }
