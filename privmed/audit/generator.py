"""One-run audit of a generator: held-out canary images put into its training data by fair coins.

``privmed audit-synthetic GENERATOR --data REAL --canaries M``: M images of the real data's
test split (never seen by the generator) become canaries, each added to the training split
by an independent fair coin. A fresh generator is trained by the original's recipe on that
data (its own ledger gives the claimed ε), ``n`` images are sampled from it, and each
canary is scored by minus its distance to the closest synthetic image. The canaries that
were in versus out give the one-run ε lower bound (:mod:`privmed.audit.one_run`), at the
unit the generator's ledger names: one image per canary at the image unit; at the patient unit
a held-out test patient, all of whose images are in or out together (one coin per patient) and
scored by the mean of their scores.

The retrained generator and its data live in ``GENERATOR/audit/canaries<M>_seed<S>/``
(``patient_canaries<M>_seed<S>/`` at the patient unit) and are
reused when the audit is repeated.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from privmed import atomic, rundir
from privmed.data.sources import Dataset, load_dataset
from privmed.errors import PrivmedError
from privmed.privacy.plan import delta_for, protected_unit
from privmed.synth.config import generator_config_from_dict
from privmed.synth.sample import GENERATOR_FILE, synthetic_images

from .design import AUDIT_DIR, ONE_RUN, coin_membership
from .synthetic import dcr_membership


def audit_generator(generator: Path, *, data: str, canaries: int, n: int, seed: int = 0, alpha: float = 0.05,
                    n_resamples: int = 1000) -> dict:
    """Retrain ``generator``'s recipe with coin-flipped canaries from ``data``'s test split; return the audit.

    The result (also written to ``<folder>/audit.json``) has the claimed ε of the retrained
    generator, its δ, and one ``one-run`` attack row (``dcr``) with the ε lower bound.
    """
    generator = Path(generator)
    if not (generator / GENERATOR_FILE).is_file():
        raise PrivmedError(f"'{generator}' is not a generator folder (no {GENERATOR_FILE}): a canary audit retrains "
                           f"the generator, so it needs the folder `privmed synth train` wrote. Audit a folder of "
                           f"images without --canaries (train-vs-test diagnostic, no epsilon bound).")
    config = generator_config_from_dict(rundir.read_config_dict(generator))
    unit = rundir.read_record(generator).unit  # the unit the generator's ledger protects, as it trained
    real = load_dataset(dataclasses.replace(config.data, path=data))
    test = real.split("test")
    units = _test_units(test, unit)
    n_units = int(units.max()) + 1
    if not 2 <= canaries <= n_units:
        raise PrivmedError(f"--canaries {canaries}: canaries are drawn from the {n_units} test {unit}s; use "
                           f"between 2 and {n_units}.")
    rng = np.random.default_rng(seed)
    chosen_units = rng.choice(n_units, size=canaries, replace=False)
    unit_coins = coin_membership(np.arange(canaries), rng=rng)  # one coin per canary: a patient's images together
    rows_of = [np.flatnonzero(units == u) for u in chosen_units]
    chosen = np.concatenate(rows_of)
    canary_of = np.repeat(np.arange(canaries), [len(r) for r in rows_of])
    coins = unit_coins[canary_of]
    name = "canaries" if unit == "image" else f"{unit}_canaries"  # older patient-unit folders hold per-image coins
    folder = generator / AUDIT_DIR / f"{name}{canaries}_seed{seed}"
    retrained = folder / "generator"
    if not (retrained / GENERATOR_FILE).is_file():
        from privmed.synth.training import train_generator

        manifest = _write_training_data(folder / "data", real.split("train"), test, chosen[coins])
        train_generator(dataclasses.replace(config, out=str(retrained), data=dataclasses.replace(
            config.data, path=str(manifest.parent), label_columns=("label",), path_column="path",
            split_column="split", patient_column="patient_id", attribute_columns=())))
    privacy = rundir.read_record(retrained)
    delta = privacy.delta if privacy.delta is not None else _retrained_delta(config, real.split("train"), test,
                                                                            chosen[coins])
    if privacy.unit != unit:
        raise PrivmedError(f"the retrained generator in '{retrained}' protects one {privacy.unit}, the audited one "
                           f"one {unit}: remove '{folder}' and audit again.")
    claimed = "inf" if math.isinf(privacy.epsilon) else privacy.epsilon  # as the classifier audit writes it
    synthetic, _, _, _ = synthetic_images(retrained, n=n, image_size=None, seed=seed)
    summary, medians = dcr_membership(synthetic=synthetic, members=test.images[chosen[coins]],
                                      non_members=test.images[chosen[~coins]], delta=delta,
                                      design=ONE_RUN, n_resamples=n_resamples, seed=seed,
                                      member_groups=canary_of[coins], non_member_groups=canary_of[~coins])
    result = {"generator": str(generator), "retrained": str(retrained), "claimed_epsilon": claimed,
              "delta": delta, "unit": unit, "design": ONE_RUN, "canaries": canaries,
              "canary_kind": "held-out test images" if unit == "image" else f"held-out test {unit}s, all their images",
              "synthetic_images": len(synthetic), "confidence": 1 - alpha,
              "attacks": [summary.to_dict()], **medians,
              "bound_holds": claimed == "inf" or summary.eps_lower_bound <= claimed + 1e-9}
    rundir.write_json(folder / "audit.json", result)
    return result


def _write_training_data(root: Path, train: Dataset, test: Dataset, included: np.ndarray) -> Path:
    """The training split plus the included canaries as an 8-bit PNG folder with a manifest; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    images = np.concatenate([train.images, test.images[included]])
    labels = np.concatenate([train.labels[:, 0], test.labels[included, 0]]).astype(int)
    patients = np.concatenate([_patient_ids(train, "train"), _patient_ids(test, "canary")[included]])
    rows = []
    for i, (image, label, patient) in enumerate(zip(images, labels, patients)):
        path = f"images/{i:06d}.png"
        Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), mode="L").save(root / path)
        rows.append({"path": path, "split": "train", "label": label, "patient_id": patient})
    manifest = root / "metadata.csv"
    atomic.write_text(manifest, pd.DataFrame(rows).to_csv(index=False))
    return manifest


def _test_units(test: Dataset, unit: str) -> np.ndarray:
    """Each test image's unit of privacy, numbered from 0: its patient at the patient unit, else itself."""
    if unit == "image":
        return np.arange(len(test))
    if test.patient_ids is None:
        raise PrivmedError(f"the generator protects one {unit}, but this data has no patient ids: audit it with "
                           f"the data it was trained on.")
    return np.unique(test.patient_ids.astype(str), return_inverse=True)[1]


def _retrained_delta(config, train: Dataset, test: Dataset, included: np.ndarray) -> float:
    """Delta of the retrained generator as its training resolved it (its data: the training split plus the
    included canaries, each canary a patient of its own, see :func:`_write_training_data`)."""
    patients = np.concatenate([_patient_ids(train, "train"), _patient_ids(test, "canary")[included]])
    p = config.privacy
    return delta_for(protected_unit(p, patient_ids=patients, n=len(patients)), p.delta, check=False)


def _patient_ids(split: Dataset, prefix: str) -> np.ndarray:
    ids = split.patient_ids
    ids = np.arange(len(split)).astype(str) if ids is None else ids.astype(str)
    return np.char.add(f"{prefix}:", ids)
