"""``privmed synth evaluate``: is a generator good enough, and did it memorise?

For a generator (or any folder of synthetic images) against the real data:

* **train-on-synthetic, test-on-real AUROC**: the default classifier (``scatter_linear``)
  trained non-privately on synthetic images only, checkpoint chosen on real validation,
  AUROC on real test with a bootstrap CI;
* **Fréchet distance** between real training images and synthetic images in the
  scattering-transform feature space (fixed wavelets: no downloaded weights), printed
  beside the distance between two disjoint, patient-disjoint halves of the real training
  split at the same sample size (what "as close as real data gets" means);
* **diversity**: per class, the per-pixel standard deviation across images (in [0, 1]
  intensity), beside the same for the real training images: a generator that collapsed
  each class to a few images shows a small fraction of the real spread;
* **memorisation**: for each synthetic image the distance to its nearest training image,
  against the same distance for real held-out (test) images; the share of near-copies
  (synthetic images closer to a training image than 99% of held-out real images are)
  and a PNG of the closest pairs;
* a grid of samples per class.

Everything is written to ``OUT/quality.json`` and PNGs beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import linalg

from privmed import rundir
from privmed.config import RunConfig, config_from_dict
from privmed.data.phantom import write_image_grid
from privmed.data.sources import Dataset
from privmed.errors import TOO_FEW_SYNTHETIC, PrivmedError
from privmed.evaluation.bootstrap import bootstrap_metrics
from privmed.evaluation.closest import distance_to_closest, standardise
from privmed.models import build_model
from privmed.training.inputs import model_inputs

#: held-out quantile below which a synthetic image counts as a near-copy of a training image
NEAR_COPY_QUANTILE = 0.01
#: fewest synthetic images of each class to measure: enough to train on and to estimate a spread
MIN_PER_CLASS = 10
#: the train-on-synthetic classifier: the default feature model, non-private, fixed recipe
TOS_RECIPE = {"model": {"name": "scatter_linear"},
              "training": {"epochs": 30, "lr": 0.1, "batch_size": 128, "physical_batch_size": 512}}


@dataclass
class Quality:
    """What ``synth evaluate`` measures (one JSON object)."""

    n_synthetic: int
    image_size: int
    tos_auroc: float
    tos_auroc_ci: tuple[float, float]
    tos_val_auroc: float
    tos_best_epoch: int
    frechet_distance: float
    frechet_real_vs_real: float
    frechet_n: int
    near_copy_share: float
    near_copy_threshold: float
    near_copy_expected: float
    median_nn_distance_synthetic: float
    median_nn_distance_heldout: float
    diversity: tuple[float, float]  # per class (0, 1): mean per-pixel std across synthetic images
    diversity_real: tuple[float, float]  # the same for the real training images

    def lines(self) -> list[str]:
        return [
            f"train on synthetic, test on real: AUROC {self.tos_auroc:.3f} "
            f"[{self.tos_auroc_ci[0]:.3f}, {self.tos_auroc_ci[1]:.3f}] (val {self.tos_val_auroc:.3f}; checkpoint "
            f"chosen on real val)",
            f"Frechet distance (scattering features, n={self.frechet_n}): synthetic vs real {self.frechet_distance:.2f}, "
            f"real vs real {self.frechet_real_vs_real:.2f}",
            f"diversity (per-pixel std across images, class 0 / 1): synthetic {self.diversity[0]:.3f} / "
            f"{self.diversity[1]:.3f}, real {self.diversity_real[0]:.3f} / {self.diversity_real[1]:.3f}",
            f"memorisation: median distance to nearest training image {self.median_nn_distance_synthetic:.2f} "
            f"(synthetic) vs {self.median_nn_distance_heldout:.2f} (held-out real); near-copies "
            f"{100 * self.near_copy_share:.1f}% (an honest generator: about {100 * self.near_copy_expected:.0f}%)",
        ]


def evaluate_synthetic(*, synthetic: np.ndarray, labels: np.ndarray, real: Dataset, out: Path,
                       class_names: tuple[str, str] = ("negative", "positive"), seed: int = 0,
                       n_resamples: int = 1000) -> Quality:
    """Measure synthetic images (float (N, H, W) in [0, 1], 0/1 ``labels``) against ``real``
    (with train/val/test splits, at the same image size); write ``out/quality.json`` and PNGs."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise PrivmedError(TOO_FEW_SYNTHETIC.format(counts=" / ".join(map(str, counts)), minimum=MIN_PER_CLASS))
    out.mkdir(parents=True, exist_ok=True)
    size = real.images.shape[-1]
    write_image_grid(synthetic, labels, out / "samples.png", per_class=16, class_names=class_names,
                     title=f"synthetic samples, {size} px")
    train, val, test = real.split("train"), real.split("val"), real.split("test")
    model = _tos_model(size)
    feats = {name: model_inputs(model, torch.from_numpy(imgs).unsqueeze(1))
             for name, imgs in (("syn", synthetic), ("train", train.images), ("val", val.images),
                                ("test", test.images))}
    auroc, ci, val_auroc, epoch = _train_on_synthetic(size, feats, labels, val, test, seed=seed,
                                                      n_resamples=n_resamples)
    fd, fd_real, fd_n = _frechet_pair(feats, train, seed=seed)
    copies = _memorisation(synthetic, train.images, test.images)
    _write_closest_pairs(synthetic, train.images, copies.pop("nn_synthetic"), out / "closest_pairs.png")
    quality = Quality(len(synthetic), size, auroc, ci, val_auroc, epoch, fd, fd_real, fd_n, **copies,
                      diversity=diversity(synthetic, labels), diversity_real=diversity(train.images, train.labels[:, 0]))
    rundir.write_json(out / "quality.json", asdict(quality))
    return quality


def _tos_model(size: int):
    return build_model(TOS_RECIPE["model"]["name"], spatial_dims=2, in_channels=1, num_outputs=1, image_size=size)


def _train_on_synthetic(size: int, feats: dict, labels: np.ndarray, val: Dataset, test: Dataset, *, seed: int,
                        n_resamples: int) -> tuple[float, tuple[float, float], float, int]:
    from sklearn.metrics import roc_auc_score

    from privmed.training.trainer import train_in_memory

    config: RunConfig = config_from_dict({**TOS_RECIPE, "training": {**TOS_RECIPE["training"], "seed": seed}})
    y_syn = torch.from_numpy(labels.astype(np.float32)).reshape(-1, 1)
    fitted = train_in_memory(config, build=lambda: _tos_model(size), x_train=feats["syn"], y_train=y_syn,
                             x_val=feats["val"], y_val=torch.from_numpy(val.labels))
    with torch.no_grad():
        scores = fitted.net(feats["test"]).numpy()[:, 0]
        val_auroc = float(roc_auc_score(val.labels[:, 0], fitted.net(feats["val"]).numpy()[:, 0]))
    # the threshold only matters for threshold metrics, which are not used here
    auroc = bootstrap_metrics(y_true=test.labels[:, 0], scores=scores, threshold=0.0, groups=test.patient_ids,
                              n_resamples=n_resamples, seed=seed)["auroc"]
    return auroc.value, (auroc.ci_low, auroc.ci_high), val_auroc, fitted.best_epoch


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets (Heusel et al. 2017)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def _summary_features(x: torch.Tensor) -> np.ndarray:
    """Per-channel spatial means of the (log-scattering) features: (N, channels)."""
    return x.flatten(2).mean(2).double().numpy() if x.dim() > 2 else x.double().numpy()


def _frechet_pair(feats: dict, train: Dataset, *, seed: int) -> tuple[float, float, int]:
    """FD(synthetic, real half A) and FD(real half B, real half A), halves patient-disjoint, equal n."""
    rng = np.random.default_rng(seed)
    groups = train.patient_ids if train.patient_ids is not None else np.arange(len(train)).astype(str)
    unique = rng.permutation(np.unique(groups))
    in_a = np.isin(groups, unique[: len(unique) // 2])
    real = _summary_features(feats["train"])
    half_a, half_b = real[in_a], real[~in_a]
    syn = _summary_features(feats["syn"])
    n = min(len(half_b), len(syn))
    syn = syn[rng.choice(len(syn), n, replace=False)]
    half_b = half_b[rng.choice(len(half_b), n, replace=False)]
    return frechet_distance(syn, half_a), frechet_distance(half_b, half_a), n


def diversity(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Per class 0 and 1: the per-pixel standard deviation across that class's images, averaged over pixels."""
    return tuple(float(images[labels == c].std(0).mean()) if (labels == c).sum() > 1 else float("nan")
                 for c in (0, 1))


def _memorisation(synthetic: np.ndarray, train: np.ndarray, heldout: np.ndarray) -> dict:
    d_syn = distance_to_closest(synthetic, train)
    d_held = distance_to_closest(heldout, train)
    threshold = float(np.quantile(d_held, NEAR_COPY_QUANTILE))
    return {"near_copy_share": float((d_syn < threshold).mean()), "near_copy_threshold": threshold,
            "near_copy_expected": NEAR_COPY_QUANTILE, "median_nn_distance_synthetic": float(np.median(d_syn)),
            "median_nn_distance_heldout": float(np.median(d_held)), "nn_synthetic": d_syn}


def _write_closest_pairs(synthetic: np.ndarray, train: np.ndarray, d_syn: np.ndarray, path: Path,
                         k: int = 8) -> None:
    """Top row: the k synthetic images closest to any training image; bottom row: that training image."""
    order = np.argsort(d_syn)[:k]
    syn_std, train_std = standardise(synthetic[order]), standardise(train)
    nearest = torch.cdist(syn_std, train_std).argmin(1).numpy()
    images = np.concatenate([synthetic[order], train[nearest]])
    labels = np.r_[np.zeros(len(order), int), np.ones(len(order), int)]
    write_image_grid(images, labels, path, per_class=len(order), class_names=("synthetic", "nearest train"),
                     title=f"closest synthetic/training pairs (distance {d_syn[order[0]]:.2f} .. "
                           f"{d_syn[order[-1]]:.2f})")


