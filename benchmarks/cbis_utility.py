"""Utility at the patient unit (issue 19): free invariances, a one-shot private head, acquisition-shift robustness.

CBIS-DDSM mass patches at 128 px (``--image-size``; the ``px`` column), ``scatter_linear``'s front end
(wavelet scattering J=3 at 128 px, J=2 at 64, 4x4 pool, log, per-sample standardisation), the patient as the unit of privacy
(578 training patients, delta = 1/(10 x 578)), secret noise. Every row is a recipe; each is
scored on val, test and ``shifted_test``: the test split after :func:`privmed.data.shift.digital_scanner`
(a fixed transform mimicking a darker, higher-contrast digital scanner, set in advance);
``shifted_val``, the val split after the same transform, is where shift robustness is judged (test is only reported).

Front ends (``--features``; each free: per image, no data statistic):
* ``base``: ``scatter_linear``'s plain features (``dihedral=false``; the default until issue 19's recipe grid);
* ``dihedral``: averaged over each image's 8 rotations and reflections (``scatter_linear``'s default from then
  until the ``dihedral_order1`` rows; D = 3,472 at 128 px);
* ``dihedral_zscore`` / ``dihedral_quantile``: per-image z-score or quantile (normal-score) standardisation
  of grey levels first, then as ``dihedral``;
* ``blur1`` / ``dihedral_blur1`` / ``quantile_blur2``: each image low-passed first (a fixed Gaussian of 1 or 2
  pixels, :class:`privmed.models.invariance.LowPass`), so sharpening and noise weigh less;
* ``dihedral_order1``: as ``dihedral`` with the first-order scattering coefficients alone (``max_order=1``:
  25 channels, D = 400 at 128 px; ``scatter_linear``'s default since these rows: level or ahead on the mean
  of val and shifted val at every epsilon and both sizes).
Every front end names its scattering order itself (``front_end``), so a row keeps its meaning when the
default changes.
``+aug``: each training image also enters with ``AUG_COPIES`` random acquisition augmentations
(:func:`privmed.data.shift.acquisition_augment`: gamma, contrast, blur or sharpening, noise; seeded, per image;
the copies belong to their patient, so the unit's guarantee is unchanged).

Heads:
* ``dp_sgd``: privmed's DP-SGD head as today (``train_in_memory``: feature centre released with noise 5 and
  composed, Poisson sampling of patients, one image of a sampled patient per step, batch 128, clip 1, SGD
  lr 0.3 momentum 0.9, 40 epochs: the recipe ``benchmarks/studies/cbis_dp_sgd.yaml`` keeps most often; the epoch with the
  best val AUROC is kept, as in every privmed run: that choice is not covered by epsilon);
* ``dp_sgd_ema<d>``: the same with ``training.ema = d``: the weights' exponential moving average is
  validated and kept (post-processing, free); ``..._centre2.5``: the feature centre released with noise 2.5
  instead of 5 (the composition leaves less for DP-SGD); ``..._pca<k>``: on the features projected onto the
  phantom's top k principal axes (fitted on phantom patches alone: free), as the one-shot head's ``pca`` rows;
* ``dp_sgd_phantom_init``: the DP-SGD head started from a linear head pretrained on the phantom's features
  (``phantom_head``: 1,000 phantom patches, logistic regression with C fixed in advance; no patient data:
  free), the phantom pretraining of issue 19 for a frozen front end; ``dp_sgd_phantom_centre``: the features
  centred by the phantom's mean (public: no centre release, all of epsilon to DP-SGD), ``..._init``: and started
  from that pretrained head (what ``--synthetic PHANTOM --synthetic-use pretrain`` does for ``scatter_linear``);
  ``dp_sgd_channels_centre``: the phantom's mean corrected by the training data's per-channel mean, released
  with noise 5 and composed (``privacy.center: channels``, the default since these rows; the head trained behind
  its front end, as a run does), ``..._k2`` / ``..._k4``: with up to 2 or 4 images of a sampled patient per step
  (``privacy.max_images_per_patient``; each image's gradient clipped to 1/k), ``..._centre10`` / ``20``: the
  correction released with noise 10 or 20 instead of 5, ``..._phantom_init``: and the head started from the
  phantom-trained one;
  ``dp_sgd_uncentred``: no centre at all;
* ``one_shot``: :mod:`privmed.training.dp_head`: the same private centre, rows scaled to unit norm (per
  sample, free), then ``X^T X`` and ``X^T y`` released once with patient-level sensitivity; the noise is
  calibrated so that centre and both releases compose to epsilon (PRV accountant); the ridge penalty is
  chosen on val among ``RIDGE_GRID`` (post-processing of the one release: free of privacy, the val choice
  not covered by epsilon, as for the epoch above).

    python benchmarks/cbis_utility.py [--seeds 5] [--features base dihedral ...] [--epsilons 1 2 6 inf]

Writes ``benchmarks/results/cbis_utility.{csv,md}`` (runs already in the csv are kept unless ``--fresh``).
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from privmed import DataConfig, build_model, config_from_dict, load_dataset, model_inputs, train_in_memory
# measured on purpose, below the public API: the one-shot head and the private centre it releases, each planned and
# composed by the privacy plan, on features in memory; the shifted scanner and acquisition augmentation
from privmed.config import PrivacyConfig
from privmed.data.shift import acquisition_augment, digital_scanner
from privmed.privacy.plan import make_plan, protected_unit
from privmed.privacy.randomness import CENTRE_STREAM, secret_generator
from privmed.training import dp_head
from privmed.training.centre import FeatureCenter, set_center
from common import SHARED, TOTAL_EPSILON, parse_benchmark_args, run_facts, seed_summary

SIZE = 128
EPSILONS = (1.0, 2.0, 6.0, math.inf)
CENTRE_NOISE = 5.0
#: ``training.ema`` decays measured (about 5 logical steps an epoch at the patient unit, 40 epochs)
EMA_DECAYS = (0.9, 0.97)
AUG_COPIES = 2
AUG_SEED = 19
PUBLISHED = {1.0: .525, 6.0: .572, math.inf: .778}
#: today's default (cbis_dp_sgd.md, patient unit, 5 seeds, private search of 2 candidates counted; first-order
#: dihedral front end, the phantom's centre corrected per channel by a private release)
TODAY = {1.0: .614, 6.0: .697, math.inf: .724}
FEATURES = {"base": ("none", False), "dihedral": ("none", True), "dihedral_zscore": ("zscore", True),
            "dihedral_quantile": ("quantile", True), "zscore": ("zscore", False), "quantile": ("quantile", False),
            "blur1": ("none", False, 1.0), "dihedral_blur1": ("none", True, 1.0), "quantile_blur2": ("quantile", False, 2.0),
            "dihedral_quantile_blur2": ("quantile", True, 2.0), "dihedral_order1": ("none", True, 0.0, 1)}
SPLITS = ("train", "val", "shifted_val", "test", "shifted_test")
PHANTOM_N = 1000
PCA_DIMS = (32, 128)
#: the phantom's principal axes of the front end being measured, by k (set in main)
PROJECTIONS: dict[int, torch.Tensor] = {}
#: the front end being measured (set in main)
FRONT: dict[str, nn.Module] = {}
#: the head pretrained on the phantom's features of the front end being measured (set in main)
PHANTOM_HEAD: dict[str, nn.Module | torch.Tensor] = {}
PHANTOM_C = 1e-3
#: the DP-SGD head's schedule (``benchmarks/studies/cbis_dp_sgd.yaml``'s most often kept candidate)
HEAD_RECIPE = {"epochs": 40, "batch_size": 128, "lr": 0.3}


def front_end(name: str) -> nn.Module:
    """``scatter_linear`` with the frozen front end ``name`` of :data:`FEATURES` (its ``model_inputs`` are that
    front end's features, which privmed's feature cache keeps)."""
    given = FEATURES[name]
    input_norm, dihedral, blur, max_order = given + ("none", False, 0.0, 2)[len(given):]
    return build_model("scatter_linear", image_size=SIZE, input_norm=input_norm, dihedral=dihedral, blur=blur,
                       max_order=max_order, standardise=True)


def behind_front_end(head: nn.Module) -> nn.Module:
    """The front end being measured (:data:`FRONT`) with ``head`` as its trainable part, in a model of the front
    end's own class (``scatter_linear``'s), so that training finds the front end as a run does."""
    front = FRONT["model"]
    return type(front)(front.features, head)


def split_images(data: str) -> tuple[dict, dict, dict]:
    """Images (N, 1, H, W), labels and patient ids per split, the shifted test split included."""
    real = load_dataset(DataConfig(path=data, image_size=SIZE, class_names=("benign", "malignant")))
    images = {s: torch.from_numpy(real.split(s).images).unsqueeze(1) for s in ("train", "val", "test")}
    images["shifted_val"] = digital_scanner(images["val"])
    images["shifted_test"] = digital_scanner(images["test"])
    labels = {s: torch.from_numpy(real.split(s.replace("shifted_", "")).labels).float().reshape(-1) for s in SPLITS}
    patients = {s: np.asarray(real.split(s.replace("shifted_", "")).patient_ids) for s in SPLITS}
    return images, labels, patients


def features(model: nn.Module, images: dict, augment: bool) -> dict:
    """Flattened features of front end ``model`` per split; with ``augment`` the training split gains AUG_COPIES
    augmented copies."""
    out = {s: model_inputs(model, x).flatten(1) for s, x in images.items()}
    if augment:
        g = torch.Generator().manual_seed(AUG_SEED)
        copies = [model_inputs(model, acquisition_augment(images["train"], generator=g)).flatten(1)
                  for _ in range(AUG_COPIES)]
        out["train"] = torch.cat([out["train"], *copies])
    return out


def dp_sgd_head(x: dict, y: dict, groups: np.ndarray, *, epsilon: float, seed: int, ema: float = 0.0,
                centre_noise: float = CENTRE_NOISE, init: nn.Linear | None = None,
                centre: torch.Tensor | None = None, recipe: dict | None = None,
                centre_source: str = "private", cap: int = 1) -> tuple[dict, float, str]:
    """AUROC per split, the ledger's epsilon and the kept epoch of privmed's DP-SGD head (``ema``:
    ``training.ema``, the weights' moving average validated and kept; ``init``: the head's starting weights;
    ``centre``: a public centre subtracted from every split instead of the privately released one, so all of
    epsilon goes to DP-SGD; ``recipe``: training keys replacing :data:`HEAD_RECIPE`; ``centre_source``:
    ``privacy.center``, where ``channels`` trains the head behind the front end being measured
    (:data:`FRONT`), as a run does, so that the phantom's centre is there to be corrected; ``cap``:
    ``privacy.max_images_per_patient``)."""
    training = {**HEAD_RECIPE, **(recipe or {}), "momentum": 0.9, "augment": False, "seed": seed, "ema": ema}
    config = config_from_dict({"data": {"path": None, "image_size": SIZE}, "model": {"name": "scatter_linear"},
                               "privacy": {"epsilon": epsilon, "center_noise_multiplier": centre_noise,
                                           "center": centre_source, "max_images_per_patient": cap},
                               "training": training})
    d = x["train"].shape[1]
    if centre is not None:
        x = {s: f - centre.to(f.dtype) for s, f in x.items()}
    first = (lambda: nn.Identity()) if centre is not None else (lambda: FeatureCenter(d))
    head = lambda: nn.Sequential(first(), copy.deepcopy(init) or nn.Linear(d, 1))  # noqa: E731
    build = head
    if centre_source == "channels":  # feature maps (N, C, 4, 4), behind their front end
        x = {s: f.view(len(f), *FRONT["model"].features.output_shape) for s, f in x.items()}
        build = lambda: behind_front_end(head())  # noqa: E731
    fitted = train_in_memory(config, build=build, x_train=x["train"], y_train=y["train"].unsqueeze(1),
                             x_val=x["val"], y_val=y["val"].unsqueeze(1), groups=groups)
    with torch.no_grad():
        scores = {s: fitted.net(x[s])[:, 0].numpy() for s in SPLITS[1:]}
    spent = fitted.ledger.epsilon if math.isfinite(epsilon) else math.inf
    return _aurocs(scores, y), spent, f"epoch {fitted.best_epoch}"


def one_shot_head(x: dict, y: dict, groups: np.ndarray, *, epsilon: float, pooled: bool = False,
                  centred: bool = True, moment_only: bool = False, projection: torch.Tensor | None = None
                  ) -> tuple[dict, float, str]:
    """AUROC per split, composed epsilon and the chosen ridge of the one-shot private head; ``pooled``: on each
    scattering channel's mean over the 4x4 positions (D / 16 features, a fixed map: free); ``centred=False``: no
    centre (nothing released but the statistics); ``moment_only``: release only ``X^T y`` (head = noisy class-mean
    difference); ``projection``: (D, k) fixed map applied after centring (fitted on the phantom: free)."""
    _, index = np.unique(groups, return_inverse=True)
    private = math.isfinite(epsilon)
    centre = FeatureCenter(x["train"].shape[1])
    centre_stage = set_center(centre, x["train"], noise_multiplier=CENTRE_NOISE if private else None,
                              generator=secret_generator(stream=CENTRE_STREAM), groups=index) if centred else None
    prior = [centre_stage] if centre_stage is not None else []
    rows = {s: unit_rows(_reduce(f - centre.center, pooled, projection)) for s, f in x.items()}
    stats = dp_head.unit_statistics(rows["train"], y["train"], bound=1.0, groups=index)
    sigma, spent = 0.0, math.inf
    if private:
        plan = make_plan(PrivacyConfig(epsilon=epsilon), seed=0,
                         unit=protected_unit(PrivacyConfig(), patient_ids=groups, n=len(groups)),
                         stages=dp_head.head_stages(releases=2 - moment_only, centre_noise=CENTRE_NOISE if centred
                                                    else None))
        sigma = plan.noise_multiplier
        stats, releases = (dp_head.release_moment if moment_only else dp_head.release)(
            stats, noise_multiplier=sigma, bound=1.0)
        spent = plan.epsilon([*prior, *releases])
    scale = dp_head.ridge_scale(noise_multiplier=sigma, bound=1.0, dims=stats.moment.numel())
    if moment_only:
        scores = {s: (rows[s] @ stats.moment).numpy() for s in SPLITS[1:]}
        return _aurocs(scores, y), spent, "moment only"
    best = None
    for c, w in zip(dp_head.RIDGE_GRID, dp_head.ridge_path(stats, ridges=[c * scale for c in dp_head.RIDGE_GRID])):
        scores = {s: (rows[s] @ w).numpy() for s in SPLITS[1:]}
        aurocs = _aurocs(scores, y)
        if best is None or aurocs["val"] > best[0]["val"]:
            best = (aurocs, f"ridge {c:g} x {scale:.3g}")
    return best[0], spent, best[1]


def _reduce(f: torch.Tensor, pooled: bool, projection: torch.Tensor | None) -> torch.Tensor:
    f = pool(f) if pooled else f
    return f if projection is None else f.double() @ projection


@functools.lru_cache(maxsize=2)
def phantom_features(name: str) -> tuple[torch.Tensor, np.ndarray]:
    """The ``name`` features of PHANTOM_N phantom patches (the built-in phantom, seed 0: no patient data) and their
    0/1 labels."""
    phantom = load_dataset(DataConfig(phantom_samples=PHANTOM_N, image_size=SIZE, seed=0))
    f = model_inputs(front_end(name), phantom.image_tensor).flatten(1).double()
    return f, phantom.labels[:, 0].astype(int)


def phantom_projection(name: str, k: int) -> torch.Tensor:
    """(D, k): the top-k principal axes of the ``name`` features of the phantom patches."""
    f, _ = phantom_features(name)
    _, _, vt = torch.linalg.svd(f - f.mean(0), full_matrices=False)
    return vt[:k].T


def phantom_head(name: str) -> nn.Linear:
    """A linear head trained (non-privately: no patient data) on the phantom's ``name`` features, centred by
    their own mean; L2-regularised logistic regression with C = PHANTOM_C, fixed in advance."""
    from sklearn.linear_model import LogisticRegression

    f, labels = phantom_features(name)
    fit = LogisticRegression(C=PHANTOM_C, max_iter=3000).fit((f - f.mean(0)).numpy(), labels)
    head = nn.Linear(f.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fit.coef_).float())
        head.bias.fill_(float(fit.intercept_[0]))
    return head


def pool(f: torch.Tensor) -> torch.Tensor:
    """Each scattering channel's mean over the 16 pooled positions."""
    return f.view(len(f), -1, 16).mean(2)


def unit_rows(f: torch.Tensor) -> torch.Tensor:
    """Each row scaled to norm 1 (per sample: free)."""
    return (f.double() / f.double().norm(dim=1, keepdim=True).clamp_min(1e-12))


def _num(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def _aurocs(scores: dict, y: dict) -> dict:
    return {s: float(roc_auc_score(y[s].numpy(), v)) for s, v in scores.items()}


HEADS = {"dp_sgd": lambda x, y, g, epsilon, seed: dp_sgd_head(x, y, g, epsilon=epsilon, seed=seed),
         **{f"dp_sgd_ema{d}": functools.partial(lambda x, y, g, epsilon, seed, d: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, ema=d), d=d) for d in EMA_DECAYS},
         "dp_sgd_phantom_centre": lambda x, y, g, epsilon, seed: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre=PHANTOM_HEAD["centre"]),
         "dp_sgd_channels_centre": lambda x, y, g, epsilon, seed: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre_source="channels"),
         "dp_sgd_channels_centre_phantom_init": lambda x, y, g, epsilon, seed: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre_source="channels", init=PHANTOM_HEAD["head"]),
         **{f"dp_sgd_channels_centre{c}": functools.partial(lambda x, y, g, epsilon, seed, c: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre_source="channels", centre_noise=c), c=c) for c in (10, 20)},
         **{f"dp_sgd_channels_centre_k{k}": functools.partial(lambda x, y, g, epsilon, seed, k: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre_source="channels", cap=k), k=k) for k in (2, 4)},
         "dp_sgd_uncentred": lambda x, y, g, epsilon, seed: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre=torch.zeros(x["train"].shape[1])),
         "dp_sgd_phantom_centre_init": lambda x, y, g, epsilon, seed: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, centre=PHANTOM_HEAD["centre"], init=PHANTOM_HEAD["head"]),
         "dp_sgd_phantom_init": lambda x, y, g, epsilon, seed: dp_sgd_head(x, y, g, epsilon=epsilon, seed=seed,
                                                                           init=PHANTOM_HEAD["head"]),
         **{f"dp_sgd_ema{EMA_DECAYS[0]}_pca{k}": functools.partial(lambda x, y, g, epsilon, seed, k: dp_sgd_head(
             {s: _reduce(f, False, PROJECTIONS[k]).float() for s, f in x.items()}, y, g, epsilon=epsilon, seed=seed,
             ema=EMA_DECAYS[0]), k=k) for k in PCA_DIMS},
         **{f"dp_sgd_ema{EMA_DECAYS[0]}_centre{c}": functools.partial(lambda x, y, g, epsilon, seed, c: dp_sgd_head(
             x, y, g, epsilon=epsilon, seed=seed, ema=EMA_DECAYS[0], centre_noise=c), c=c) for c in (2.5,)},
         "dp_sgd_pooled": lambda x, y, g, epsilon, seed: dp_sgd_head({s: pool(f) for s, f in x.items()}, y, g,
                                                                     epsilon=epsilon, seed=seed),
         "one_shot": lambda x, y, g, epsilon, seed: one_shot_head(x, y, g, epsilon=epsilon),
         "one_shot_pooled": lambda x, y, g, epsilon, seed: one_shot_head(x, y, g, epsilon=epsilon, pooled=True),
         "one_shot_pooled_uncentred": lambda x, y, g, epsilon, seed: one_shot_head(x, y, g, epsilon=epsilon,
                                                                                   pooled=True, centred=False),
         "one_shot_moment": lambda x, y, g, epsilon, seed: one_shot_head(x, y, g, epsilon=epsilon, moment_only=True),
         **{f"one_shot_pca{k}": functools.partial(lambda x, y, g, epsilon, seed, k: one_shot_head(
             x, y, g, epsilon=epsilon, projection=PROJECTIONS[k]), k=k) for k in PCA_DIMS},
         **{f"one_shot_moment_pca{k}": functools.partial(lambda x, y, g, epsilon, seed, k: one_shot_head(
             x, y, g, epsilon=epsilon, moment_only=True, projection=PROJECTIONS[k]), k=k) for k in PCA_DIMS}}


def main() -> None:
    global SIZE  # the front end, the phantom and the run config read it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "cbis-ddsm-masses"))
    parser.add_argument("--features", nargs="+", default=list(FEATURES), choices=[*FEATURES, *map("{}+aug".format, FEATURES)])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(EPSILONS))
    parser.add_argument("--image-size", type=int, default=SIZE, choices=(64, 128))
    parser.add_argument("--fresh", action="store_true", help="drop the rows already in the csv")
    args = parse_benchmark_args(parser, seeds=5)
    SIZE = args.image_size
    t0 = time.perf_counter()
    csv = Path(args.results) / "cbis_utility.csv"
    old = pd.read_csv(csv) if csv.is_file() and not args.fresh else pd.DataFrame()
    if len(old) and "image_size" not in old:  # rows from before the option: all at 128 px
        old.insert(0, "image_size", 128)
    images, labels, patients = split_images(args.data)
    rows = []
    for name in args.features:
        base, augment = name.removesuffix("+aug"), name.endswith("+aug")
        FRONT["model"] = front_end(base)
        x = features(FRONT["model"], images, augment)
        if any("pca" in h for h in args.heads):
            axes = phantom_projection(base, max(PCA_DIMS))
            PROJECTIONS.update({k: axes[:, :k] for k in PCA_DIMS})
        if any("phantom" in h for h in args.heads):
            PHANTOM_HEAD["head"] = phantom_head(base)
            PHANTOM_HEAD["centre"] = phantom_features(base)[0].mean(0)
        groups = np.tile(patients["train"], 1 + AUG_COPIES * augment)
        y = {**labels, "train": labels["train"].repeat(1 + AUG_COPIES * augment)}
        for head in args.heads:
            for epsilon in args.epsilons:
                for seed in range(args.seeds):
                    t = time.perf_counter()
                    aurocs, spent, chosen = HEADS[head](x, y, groups, epsilon, seed)
                    rows.append({"image_size": SIZE, "features": name, "head": head, "epsilon": epsilon, "seed": seed,
                                 "total_epsilon": round(spent, 4), "val_auroc": round(aurocs["val"], 4),
                                 "shifted_val_auroc": round(aurocs["shifted_val"], 4),
                                 "test_auroc": round(aurocs["test"], 4),
                                 "shifted_test_auroc": round(aurocs["shifted_test"], 4), "chosen": chosen,
                                 "seconds": round(time.perf_counter() - t, 1)})
                    print(rows[-1], flush=True)
    new = pd.DataFrame(rows)
    if len(old):
        keys = ["image_size", "features", "head", "epsilon", "seed"]
        old = old[~old.set_index(keys).index.isin(new.set_index(keys).index)]
    table = pd.concat([old, new], ignore_index=True)
    table.to_csv(csv, index=False)
    (Path(args.results) / "cbis_utility.md").write_text(markdown(table, time.perf_counter() - t0) + "\n")
    print(markdown(table, time.perf_counter() - t0))


def markdown(table: pd.DataFrame, seconds: float) -> str:
    """Mean over seeds per recipe and epsilon, beside today's default and the published row."""
    summary = seed_summary(table, ["image_size", "epsilon", "features", "head"], total=TOTAL_EPSILON,
                           sval=("shifted_val_auroc", "mean"), shifted=("shifted_test_auroc", "mean"))
    lines = ["# Utility at the patient unit: invariances, a one-shot private head, acquisition shift", "",
             (__doc__.split("\n\n")[1].replace("\n", " ") + " See the script's docstring for the recipes. "
              "Mean over seeds; test AUROC (min-max). `shift loss` = test - shifted_test; shifted val blank: "
              "measured before that split was added (screening rows). Non-private one-shot rows have no randomness "
              "(same figure every seed). The last invocation: " + run_facts(seconds)), "",
             "| px | epsilon | features | head | total epsilon | val AUROC | shifted val | test AUROC | shifted test AUROC "
             "| shift loss (test) | seeds | today's default (test) | published (test) |",
             "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        eps = r["epsilon"]
        label = "∞" if math.isinf(eps) else f"{eps:g}"
        today = TODAY.get(eps) if r["image_size"] == 128 else None
        published = PUBLISHED.get(eps)
        lines.append(f"| {r['image_size']} | {label} | {r['features']} | {r['head']} | {r['total']:.3g} | {r['val']:.3f} | {_num(r['sval'])} | "
                     f"{r['test']:.3f} ({r['lo']:.3f}-{r['hi']:.3f}) | {r['shifted']:.3f} | "
                     f"{r['test'] - r['shifted']:+.3f} | {r['seeds']} | {'' if today is None else f'{today:.3f}'} | "
                     f"{'' if published is None else f'{published:.3f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
