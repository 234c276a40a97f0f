"""``privmed audit``: membership inference against a trained run, beside its claimed ε.

Design (:mod:`privmed.audit.design`): an ε lower bound needs randomised membership.

* ``one-run`` (default, ``--canaries M``, M >= 2): M canaries, each put into training by an
  independent fair coin, and ONE freshly trained target (the run's own recipe) on the
  run's training split plus the canaries that came up heads. The attacks score the
  canaries only, and the ε lower bound is Steinke, Nasr & Jagielski's one-run bound
  (:mod:`privmed.audit.one_run`); beside it the Gaussian-DP estimate (:mod:`privmed.audit.gdp`).
  A canary is one unit of privacy: one image at the image unit; at the patient unit a
  patient of ``images_per_canary`` images, all in or all out together, scored by the mean of
  its images' scores. Canaries exist only inside the audit: they never enter the run's own
  model, metrics or predictions.
* ``train-vs-test`` (always reported, the only output with ``--canaries 0``): the target's
  training split against the test split. The splits differ (case mix, patients), so this
  attack AUC is confounded by split differences: a diagnostic with NO ε bound.

Canaries: ``crafted`` (default, :mod:`privmed.audit.canaries`) are images of uniform pixel
noise with a random label, which a model can only fit by memorising them (structured
patterns were measured and were not more memorable, even under dihedral-averaged, blurred or
grey-level-standardised scattering); a patient canary is one noise pattern seen several
times with small jitter, its images sharing one label. ``mislabeled`` are test images with
their label flipped.

Attacks: the loss attack always; LiRA (``shadows=K``, K >= 2) as the strong, expensive
option: K shadow models trained by the run's own recipe (:func:`train_in_memory`) on random
halves of the population, coins independent of the target's. Each shadow is saved as it
finishes, so an interrupted audit resumes; shadows live in a folder named by a hash of the
recipe, so audits of runs that share a recipe (``--shadow-dir`` shared across a study) reuse them.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import io
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from privmed import atomic, rundir
from privmed.config import RunConfig
from privmed.data.sources import SPLITS, Dataset, load_dataset
from privmed.errors import AUDIT_GROUP_NEEDS_PATIENT_UNIT, PrivmedError
from privmed.evaluation.external import load_run
from privmed.evaluation.predictions import predict
from privmed.models import build_for_run
from privmed.privacy.plan import delta_for, protected_unit
from privmed.privacy.units import unit_name
from privmed.progress import progress
from privmed.training.inputs import model_inputs, trainable_part
from privmed.training.trainer import train_in_memory
from privmed.workers import die_with_parent

from .attacks import lira_scores, logit_confidence, loss_attack_scores
from .canaries import crafted_canaries
from .config import AuditConfig
from .design import AUDIT_DIR, ONE_RUN, TRAIN_VS_TEST, canary_groups, coin_membership, group_scores
from .summary import AttackSummary, summarize_attack

AUDIT_FILE = "audit.json"
#: bump when the audit population (canary content or coins) changes, so stale shadows are not reused
POPULATION_VERSION = 4


@dataclass
class Population:
    """Everything the attacks score: model inputs, labels (canaries flipped), and who trains on what."""

    x: torch.Tensor
    y: torch.Tensor
    target_member: np.ndarray  # bool (N,): in the target's training set
    is_canary: np.ndarray  # bool (N,)
    is_train: np.ndarray  # bool (N,): the run's training split (train-vs-test diagnostic: members)
    group: np.ndarray  # int (N,): unit of privacy (a canary's images share one), all in or out together


def audit_run(run: Path, *, data: str | None = None, config: AuditConfig = AuditConfig(),
              shadow_dir: Path | None = None) -> dict:
    """Attack ``run``; write ``RUN/audit/<name>.json`` (see :func:`audit_path`) and return it.

    The result holds one row per attack and design: ``one-run`` rows (with canaries) carry
    the ε lower bound, ``train-vs-test`` rows only the attack's AUC and TPR (confounded).
    ``bound_holds`` is ``None`` when no row has a bound.
    """
    run = Path(run)
    run_config, target_model, _ = load_run(run)
    if data is not None:
        run_config = dataclasses.replace(run_config, data=dataclasses.replace(run_config.data, path=data))
    else:
        rundir.check_recorded_data(run, run_config.data.path)
    ds = load_dataset(run_config.data)
    unit = privacy_unit(run_config, ds)
    if config.images_per_canary > 1 and unit != "patient":
        raise PrivmedError(AUDIT_GROUP_NEEDS_PATIENT_UNIT.format(size=config.images_per_canary, unit=unit))
    _check_same_training_data(run, ds)
    run_delta = training_delta(run_config, ds)
    # the retrained target and the shadows keep the run's delta (its patients), not one of their own subsets
    run_config = dataclasses.replace(run_config, privacy=dataclasses.replace(run_config.privacy, delta=run_delta))
    fresh = _model_factory(run_config, ds)
    cache = run_config.training.feature_cache
    inputs = {s: model_inputs(target_model, ds.split(s).image_tensor, cache=cache) for s in SPLITS}
    population = _population(ds, inputs, config=config, unit=unit,
                             featurize=lambda images: model_inputs(target_model, images, cache=cache))
    y_val = torch.from_numpy(ds.split("val").labels)

    if config.canaries:
        fitted = _fit(run_config, fresh, population, population.target_member, inputs["val"], y_val, unit=unit)
        target_net, claimed, delta = fitted.net, fitted.ledger.epsilon, fitted.ledger.delta
    else:
        target_net = trainable_part(target_model)
        privacy = rundir.read_record(run)
        claimed = float(privacy.epsilon)
        delta = privacy.delta if privacy.delta is not None else run_delta
    target_scores = predict(target_net, population.x)
    labels = population.y.numpy()
    attack_scores = {"loss": loss_attack_scores(target_scores, labels)}
    if config.shadows:
        where = _shadow_folder(run, run_config, config, shadow_dir)
        conf, masks = _shadows(where, run_config, fresh, population, inputs["val"], y_val, config, unit=unit)
        attack_scores["lira"] = lira_scores(logit_confidence(target_scores, labels), conf, masks)

    summaries = attack_summaries(attack_scores, population, config=config, delta=delta)
    result = _audit_record(run, config, summaries, claimed=claimed, delta=delta, unit=unit)
    rundir.write_json(audit_path(run, config), result)
    return result


def _audit_record(run: Path, config: AuditConfig, summaries: list[AttackSummary], *, claimed: float, delta: float,
                  unit: str) -> dict:
    """What ``audit.json`` holds: the audit's design and settings, one row per attack, whether the bounds hold."""
    bounds = [s.eps_lower_bound for s in summaries if s.eps_lower_bound is not None]
    return {
        "run": str(run),
        "claimed_epsilon": "inf" if math.isinf(claimed) else claimed,
        "delta": delta,
        "unit": unit,
        "design": config.design,
        "target": "retrained with canaries (same recipe)" if config.canaries else "the run's selected checkpoint",
        "canaries": config.canaries,
        "canary_kind": config.canary_kind if config.canaries else None,
        "images_per_canary": config.images_per_canary if config.canaries else None,
        "shadows": config.shadows,
        "confidence": 1 - config.alpha,
        "attacks": [s.to_dict() for s in summaries],
        "bound_holds": all(b <= claimed + 1e-9 for b in bounds) if bounds else None,
        "note": _note(config),
    }


def privacy_unit(config: RunConfig, ds: Dataset) -> str:
    """The run's unit of privacy, resolved as training resolved it: ``privacy.unit``, else ``patient``
    when the data has patient ids and ``image`` otherwise."""
    return unit_name(config.privacy.unit, ds.split("train").patient_ids)


def training_delta(config: RunConfig, ds: Dataset) -> float:
    """The run's delta, resolved as training resolved it: ``privacy.delta``, else 1/(10 N) for the N units
    (patients or images) of the private training split."""
    train, p = ds.split("train"), config.privacy
    return delta_for(protected_unit(p, patient_ids=train.patient_ids, n=len(train)), p.delta, check=False)


def audit_path(run: Path, config: AuditConfig) -> Path:
    """Where :func:`audit_run` writes its result for this kind of audit."""
    if not config.canaries:
        return Path(run) / AUDIT_DIR / AUDIT_FILE
    size = f"x{config.images_per_canary}" if config.images_per_canary > 1 else ""
    return Path(run) / AUDIT_DIR / f"audit_{config.canary_kind}_canaries{config.canaries}{size}.json"


def attack_summaries(attack_scores: dict[str, np.ndarray], population: Population, *, config: AuditConfig,
                     delta: float) -> list[AttackSummary]:
    """Per attack: with canaries the one-run bound on canary groups, and the confounded train-vs-test diagnostic.

    ``bound_holds`` asks whether EVERY attack's bound stays below the claim, so the confidence is shared
    among the attacks (Bonferroni): with k attacks each bound is at 1 - alpha / k (97.5% each for loss and
    LiRA at 95%), and all k hold together with probability at least 1 - alpha.
    """
    common = {"delta": delta, "n_resamples": config.bootstrap, "seed": config.seed}
    share = config.alpha / len(attack_scores)
    real, c = ~population.is_canary, population.is_canary
    out = []
    for attack, scores in attack_scores.items():
        if config.canaries:
            per_canary, coin = group_scores(scores[c], population.target_member[c], population.group[c])
            out.append(summarize_attack(attack, per_canary, coin, design=ONE_RUN, alpha=share, **common))
        out.append(summarize_attack(attack, scores[real], population.is_train[real], design=TRAIN_VS_TEST,
                                    alpha=config.alpha, **common))
    return out


def _note(config: AuditConfig) -> str:
    confidence = f"{1 - config.alpha:.0%}"
    diagnostic = ("train-vs-test rows compare the training split with the test split: membership was not "
                  "randomised and the splits differ, so their AUC is confounded by split differences and gives "
                  "no epsilon bound.")
    if not config.canaries:
        return f"No epsilon bound: {diagnostic} Audit with --canaries M (e.g. 500) for a bound."
    each = "" if config.shadows == 0 else (f" (each attack's bound at {1 - config.alpha / 2:.1%}, Bonferroni, so "
                                           f"that both hold together at {confidence})")
    return (f"eps_lower_bound is a {confidence}-confidence one-run lower bound{each} (Steinke, Nasr & Jagielski "
            f"2023) from {config.canaries} canaries put into training by fair coins; gdp_epsilon is an estimate "
            f"assuming Gaussian-DP, not a bound; the accountant's epsilon is an upper bound. {diagnostic}")


# --------------------------------------------------------------------------- population


def _model_factory(config: RunConfig, ds: Dataset):
    """A picklable zero-argument builder of a fresh, untrained model of the run's kind."""
    return functools.partial(build_for_run, config, num_outputs=len(ds.label_names))


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


def _population(ds: Dataset, inputs: dict[str, torch.Tensor], *, config: AuditConfig, unit: str,
                featurize) -> Population:
    """Train (members) + test (non-members), plus canaries each in by a fair coin (one coin per group)."""
    n_train, n_test = len(inputs["train"]), len(inputs["test"])
    x = torch.cat([inputs["train"], inputs["test"]])
    y = torch.from_numpy(np.concatenate([ds.split("train").labels, ds.split("test").labels]))
    is_train = np.r_[np.ones(n_train, bool), np.zeros(n_test, bool)]
    member, is_canary = is_train.copy(), np.zeros(n_train + n_test, bool)
    group = np.arange(n_train + n_test)
    m = config.canaries
    if m:
        rng = np.random.default_rng(config.seed)
        if config.canary_kind == "mislabeled":
            # one canary is one unit: at the patient unit a test patient, all of whose test images are
            # flipped and go in or out together (one coin; a coin per image split patients and broke the audit)
            units = _test_units(ds, unit)
            if m > units.max() + 1:
                raise PrivmedError(f"--canaries {m} is more than the {units.max() + 1} test {unit}s mislabeled "
                                   f"canaries are made from; use fewer, or --canary-kind crafted.")
            chosen = n_train + np.flatnonzero(np.isin(units, rng.choice(units.max() + 1, size=m, replace=False)))
            is_canary[chosen] = True
            y[chosen] = 1 - y[chosen]
            member[chosen] = coin_membership(units[chosen - n_train], rng=rng)
        else:
            groups = canary_groups(m, images_per_canary=config.images_per_canary)
            images = torch.from_numpy(crafted_canaries(groups, shape=(1, *ds.images.shape[1:]), rng=rng))
            # a patient canary's images share one random label
            canary_labels = rng.integers(0, 2, (m, y.shape[1])).astype(np.float32)[groups]
            x = torch.cat([x, featurize(images)])
            y = torch.cat([y, torch.from_numpy(canary_labels)])
            member = np.r_[member, coin_membership(groups, rng=rng)]
            is_canary = np.r_[is_canary, np.ones(len(groups), bool)]
            is_train = np.r_[is_train, np.zeros(len(groups), bool)]
            group = np.r_[group, len(group) + groups]
    if unit == "patient":  # the real images' unit is their patient; each canary is a patient of its own
        patients = np.concatenate([_patients(ds, "train"), _patients(ds, "test")])
        _, real_group = np.unique(patients, return_inverse=True)
        group[:n_train + n_test] = real_group + group.max() + 1
    return Population(x, y, member, is_canary, is_train, group)


def _test_units(ds: Dataset, unit: str) -> np.ndarray:
    """The unit of privacy of each test image, numbered from 0: its patient, or the image itself."""
    if unit != "patient":
        return np.arange(len(ds.split("test")))
    return np.unique(_patients(ds, "test"), return_inverse=True)[1]


def _patients(ds: Dataset, split: str) -> np.ndarray:
    ids = ds.split(split).patient_ids
    if ids is None:
        raise PrivmedError(f"the data has no patient ids, so patient canaries cannot sit beside real patients. "
                           f"Audit at the image unit (--images-per-canary 1).")
    return np.char.add(f"{split}:", ids.astype(str))


def _fit(config: RunConfig, fresh, population: Population, mask: np.ndarray, x_val: torch.Tensor,
         y_val: torch.Tensor, *, unit: str):
    """Train one model by the run's recipe on the rows in ``mask`` (at the patient unit, grouped)."""
    extra = {"groups": population.group[mask]} if unit == "patient" else {}
    return train_in_memory(config, build=fresh, x_train=population.x[mask], y_train=population.y[mask], x_val=x_val,
                           y_val=y_val, **extra)


# --------------------------------------------------------------------------- shadows


def _shadow_folder(run: Path, config: RunConfig, audit: AuditConfig, shadow_dir: Path | None) -> Path:
    """Shadows depend on the recipe (not on the run's seed or output folder), the canaries and the audit seed."""
    recipe = copy.deepcopy(config.identity())
    recipe.pop("out", None)
    recipe.get("training", {}).pop("seed", None)
    key = json.dumps({"recipe": recipe, "canaries": audit.canaries, "kind": audit.canary_kind, "seed": audit.seed,
                      "images_per_canary": audit.images_per_canary, "population": POPULATION_VERSION},
                     sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return (Path(shadow_dir) if shadow_dir else run / AUDIT_DIR / "shadows") / digest


def _shadows(where: Path, config: RunConfig, fresh, population: Population, x_val: torch.Tensor, y_val: torch.Tensor,
             audit: AuditConfig, *, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Train (or load) K shadows; return their logit confidences (K, N) and training masks (K, N).

    Masks are drawn per unit of privacy (``population.group``), so a patient canary is in or
    out of a shadow as a whole."""
    where.mkdir(parents=True, exist_ok=True)
    _, index = np.unique(population.group, return_inverse=True)
    masks = shadow_masks(index.max() + 1, audit.shadows, seed=audit.seed + 1)[:, index]
    todo = [k for k in range(audit.shadows) if not (where / f"shadow_{k}.npz").is_file()]
    jobs = [(k, config, fresh, population, masks[k], x_val, y_val, where, unit) for k in todo]
    bar = progress(total=audit.shadows, initial=audit.shadows - len(todo), desc="shadow models", unit="model")
    if audit.workers > 1 and len(jobs) > 1:
        threads = max(1, torch.get_num_threads() // audit.workers)
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
    k, config, fresh, population, mask, x_val, y_val, where, unit = job
    torch.set_num_threads(threads)
    shadow_config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                             seed=config.training.seed + 1000 + k))
    fitted = _fit(shadow_config, fresh, population, mask, x_val, y_val, unit=unit)
    confidence = logit_confidence(predict(fitted.net, population.x), population.y.numpy())
    buffer = io.BytesIO()
    np.savez(buffer, confidence=confidence, mask=mask)
    atomic.write_bytes(where / f"shadow_{k}.npz", buffer.getvalue())
