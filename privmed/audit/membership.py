"""``privmed audit``: membership inference against a trained run, beside its claimed ε.

Target and population:
    The run's model is the target; its training split are the members and its test
    split the non-members (other patients, same distribution).

Shadows:
    K shadow models trained by the run's own recipe (:func:`train_in_memory`: same
    model, privacy target, sampling, optimiser, selection) on random halves of the
    population, for LiRA. Each shadow is saved as it finishes, so an interrupted audit
    resumes; shadows live in a folder named by a hash of the recipe, so audits of runs
    that share a recipe (``--shadow-dir`` shared across a study) reuse them.

Canaries (``--canaries M``):
    M samples a model can only fit by memorising them: ``crafted`` (default) are images of
    uniform noise, each with a random label; ``mislabeled`` are test images with their label
    flipped. A random half is added to the training set of a freshly trained target (same
    recipe), and the shadows see random halves of them too; the audit then scores the
    canaries only, included versus left out. Canaries exist only inside the audit: they
    never enter the run's own model, metrics or predictions.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from privmed import rundir
from privmed.config import RunConfig
from privmed.data.sources import SPLITS, Dataset, load_dataset
from privmed.errors import PrivmedError
from privmed.evaluation.external import load_run
from privmed.evaluation.predictions import predict
from privmed.models import build_model
from privmed.privacy.accounting import default_delta
from privmed.training.inputs import model_inputs, trainable_part
from privmed.training.trainer import train_in_memory

from .attacks import lira_scores, logit_confidence, loss_attack_scores
from .bounds import summarize_attack

AUDIT_DIR = "audit"
AUDIT_FILE = "audit.json"
CANARY_KINDS = ("crafted", "mislabeled")


@dataclass(frozen=True)
class AuditConfig:
    """How hard to attack. ``shadows=0`` runs the loss attack only."""

    shadows: int = 8
    canaries: int = 0
    canary_kind: str = "crafted"
    workers: int = 1
    seed: int = 0
    alpha: float = 0.05
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        if self.shadows < 0 or self.shadows == 1:
            raise PrivmedError(f"--shadows {self.shadows}: use 0 (loss attack only) or at least 2 shadow models.")
        if self.canaries < 0 or self.canaries == 1:
            raise PrivmedError(f"--canaries {self.canaries}: use 0 or at least 2 canaries (half go into training).")
        if self.canary_kind not in CANARY_KINDS:
            raise PrivmedError(f"--canary-kind {self.canary_kind!r}: use one of {', '.join(CANARY_KINDS)}.")
        if self.workers < 1:
            raise PrivmedError(f"--workers {self.workers}: must be >= 1.")


@dataclass
class Population:
    """Everything the attacks score: model inputs, labels (canaries flipped), and who trains on what."""

    x: torch.Tensor
    y: torch.Tensor
    target_member: np.ndarray  # bool (N,): in the target's training set
    scored: np.ndarray  # bool (N,): samples the attacks are evaluated on
    is_canary: np.ndarray  # bool (N,)


def audit_run(run: Path, *, data: str | None = None, config: AuditConfig = AuditConfig(),
              shadow_dir: Path | None = None) -> dict:
    """Attack ``run``; write ``RUN/audit/audit.json`` and return it."""
    run = Path(run)
    run_config, target_model, _ = load_run(run)
    if data is not None:
        run_config = dataclasses.replace(run_config, data=dataclasses.replace(run_config.data, path=data))
    else:
        rundir.check_recorded_data(run, run_config.data.path)
    ds = load_dataset(run_config.data)
    _check_same_training_data(run, ds)
    fresh = _model_factory(run_config, ds)
    inputs = {s: model_inputs(target_model, ds.split(s).image_tensor) for s in SPLITS}
    population = _population(ds, inputs, canaries=config.canaries, kind=config.canary_kind, seed=config.seed,
                             featurize=lambda images: model_inputs(target_model, images))
    y_val = torch.from_numpy(ds.split("val").labels)

    if config.canaries:
        fitted = train_in_memory(run_config, fresh, population.x[population.target_member],
                                 population.y[population.target_member], inputs["val"], y_val)
        target_net, claimed, delta = fitted.net, fitted.ledger.epsilon, fitted.ledger.delta
    else:
        target_net = trainable_part(target_model)
        privacy = rundir.read_json(run / rundir.PRIVACY)
        claimed = math.inf if privacy["epsilon"] == "inf" else float(privacy["epsilon"])
        delta = privacy["delta"] if privacy["delta"] is not None else default_delta(len(ds.split("train")))
    target_scores = predict(target_net, population.x)
    labels = population.y.numpy()

    summaries = [summarize_attack("loss", loss_attack_scores(target_scores, labels)[population.scored],
                                  population.target_member[population.scored], delta=delta, alpha=config.alpha,
                                  n_resamples=config.bootstrap, seed=config.seed)]
    if config.shadows:
        where = _shadow_folder(run, run_config, config, shadow_dir)
        conf, masks = _shadows(where, run_config, fresh, population, inputs["val"], y_val, config)
        lira = lira_scores(logit_confidence(target_scores, labels), conf, masks)
        summaries.append(summarize_attack("lira", lira[population.scored], population.target_member[population.scored],
                                          delta=delta, alpha=config.alpha, n_resamples=config.bootstrap,
                                          seed=config.seed))
    result = {
        "run": str(run),
        "claimed_epsilon": "inf" if math.isinf(claimed) else claimed,
        "delta": delta,
        "target": "retrained with canaries (same recipe)" if config.canaries else "the run's selected checkpoint",
        "canaries": config.canaries,
        "canary_kind": config.canary_kind if config.canaries else None,
        "shadows": config.shadows,
        "scored_on": "canaries (included vs left out)" if config.canaries else "train split (members) vs test split",
        "attacks": [s.to_dict() for s in summaries],
        "bound_holds": all(s.eps_lower_bound <= claimed + 1e-9 for s in summaries),
        "note": (f"eps_lower_bound is a {1 - config.alpha:.0%}-confidence empirical lower bound (threshold chosen on "
                 f"half the samples, Clopper-Pearson on the other half); the accountant's epsilon is an upper bound."),
    }
    rundir.write_json(audit_path(run, config), result)
    return result


def audit_path(run: Path, config: AuditConfig) -> Path:
    """Where :func:`audit_run` writes its result for this kind of audit."""
    name = AUDIT_FILE if not config.canaries else f"audit_{config.canary_kind}_canaries{config.canaries}.json"
    return Path(run) / AUDIT_DIR / name


# --------------------------------------------------------------------------- population


def _model_factory(config: RunConfig, ds: Dataset):
    """A picklable zero-argument builder of a fresh, untrained model of the run's kind."""
    return functools.partial(build_model, config.model.name, spatial_dims=config.data.spatial_dims, in_channels=1,
                             num_outputs=len(ds.label_names), image_size=config.data.image_size,
                             norm=config.model.norm)


def _check_same_training_data(run: Path, ds: Dataset) -> None:
    """Membership is only meaningful on the data the run was trained on."""
    import pandas as pd

    predictions = pd.read_csv(run / rundir.PREDICTIONS, usecols=["sample_id", "split"])
    trained = set(predictions.loc[predictions["split"] == "train", "sample_id"].astype(str))
    here = set(ds.split("train").table["sample_id"].astype(str))
    if trained != here:
        raise PrivmedError(f"the training split of this data ({len(here)} samples) is not the one run '{run}' was "
                           f"trained on ({len(trained)} samples, {len(trained ^ here)} differ). Audit a run on its "
                           f"own training data (omit --data, or pass the same data set).")


def _population(ds: Dataset, inputs: dict[str, torch.Tensor], *, canaries: int, kind: str, seed: int,
                featurize) -> Population:
    """Train (members) + test (non-members), plus M canaries of which a random half are members."""
    n_train, n_test = len(inputs["train"]), len(inputs["test"])
    x = torch.cat([inputs["train"], inputs["test"]])
    y = torch.from_numpy(np.concatenate([ds.split("train").labels, ds.split("test").labels]))
    member = np.r_[np.ones(n_train, bool), np.zeros(n_test, bool)]
    is_canary = np.zeros(n_train + n_test, bool)
    if canaries:
        rng = np.random.default_rng(seed)
        halves = rng.permutation(np.r_[np.ones(canaries // 2, bool), np.zeros(canaries - canaries // 2, bool)])
        if kind == "mislabeled":
            if canaries > n_test:
                raise PrivmedError(f"--canaries {canaries} is more than the {n_test} test images mislabeled "
                                   f"canaries are made from; use fewer, or --canary-kind crafted.")
            chosen = n_train + rng.choice(n_test, size=canaries, replace=False)
            is_canary[chosen] = True
            y[chosen] = 1 - y[chosen]
            member[chosen] = halves
        else:
            shape = (canaries, 1, *ds.images.shape[1:])
            noise = torch.from_numpy(rng.random(shape, dtype=np.float32))
            x = torch.cat([x, featurize(noise)])
            y = torch.cat([y, torch.from_numpy(rng.integers(0, 2, (canaries, y.shape[1])).astype(np.float32))])
            member = np.r_[member, halves]
            is_canary = np.r_[is_canary, np.ones(canaries, bool)]
    scored = is_canary.copy() if canaries else np.ones(len(y), bool)
    return Population(x, y, member, scored, is_canary)


# --------------------------------------------------------------------------- shadows


def _shadow_folder(run: Path, config: RunConfig, audit: AuditConfig, shadow_dir: Path | None) -> Path:
    """Shadows depend on the recipe (not on the run's seed or output folder), the canaries and the audit seed."""
    recipe = copy.deepcopy(config.identity())
    recipe.pop("out", None)
    recipe.get("training", {}).pop("seed", None)
    key = json.dumps({"recipe": recipe, "canaries": audit.canaries, "kind": audit.canary_kind, "seed": audit.seed},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return (Path(shadow_dir) if shadow_dir else run / AUDIT_DIR / "shadows") / digest


def _shadows(where: Path, config: RunConfig, fresh, population: Population, x_val: torch.Tensor, y_val: torch.Tensor,
             audit: AuditConfig) -> tuple[np.ndarray, np.ndarray]:
    """Train (or load) K shadows; return their logit confidences (K, N) and training masks (K, N)."""
    where.mkdir(parents=True, exist_ok=True)
    masks = shadow_masks(len(population.y), audit.shadows, seed=audit.seed + 1)
    todo = [k for k in range(audit.shadows) if not (where / f"shadow_{k}.npz").is_file()]
    jobs = [(k, config, fresh, population.x, population.y, masks[k], x_val, y_val, where) for k in todo]
    bar = tqdm(total=audit.shadows, initial=audit.shadows - len(todo), desc="shadow models", unit="model")
    if audit.workers > 1 and len(jobs) > 1:
        threads = max(1, torch.get_num_threads() // audit.workers)
        from privmed.study.lifeline import die_with_parent

        with ProcessPoolExecutor(max_workers=audit.workers, initializer=die_with_parent) as pool:
            for _ in pool.map(_train_shadow, jobs, [threads] * len(jobs)):
                bar.update()
    else:
        for job in jobs:
            _train_shadow(job, torch.get_num_threads())
            bar.update()
    bar.close()
    conf = []
    for k in range(audit.shadows):
        saved = np.load(where / f"shadow_{k}.npz")
        if not np.array_equal(saved["mask"], masks[k]):
            raise PrivmedError(f"shadow folder '{where}' holds shadows of another population; remove it.")
        conf.append(saved["confidence"])
    return np.stack(conf), masks


def shadow_masks(n: int, k: int, *, seed: int) -> np.ndarray:
    """(k, n) training masks in complementary pairs: each sample is IN for one shadow of a
    pair and OUT for the other, so every sample has IN and OUT shadows (k >= 2)."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(k // 2):
        half = rng.permutation(n) < n // 2
        masks += [half, ~half]
    if k % 2:
        masks.append(rng.permutation(n) < n // 2)
    return np.stack(masks)


def _train_shadow(job, threads: int) -> None:
    k, config, fresh, x, y, mask, x_val, y_val, where = job
    torch.set_num_threads(threads)
    shadow_config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                             seed=config.training.seed + 1000 + k))
    fitted = train_in_memory(shadow_config, fresh, x[mask], y[mask], x_val, y_val)
    confidence = logit_confidence(predict(fitted.net, x), y.numpy())
    tmp = where / f".shadow_{k}.tmp.npz"
    np.savez(tmp, confidence=confidence, mask=mask)
    tmp.replace(where / f"shadow_{k}.npz")
