"""``privmed evaluate`` and ``privmed compare``: trained runs on any data set.

A run is rebuilt from its ``config.yaml`` and best checkpoint; its thresholds
come from its own validation split (``metrics.json``) and are applied unchanged.
Results go to ``RUN/evaluations/<dataset>/<split>/``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch

from privmed import rundir, seal
from privmed.config import RunConfig, config_from_run_dict
from privmed.data.sources import Dataset, check_patient_disjoint, load_dataset
from privmed.errors import (BOOTSTRAP_TOO_FEW, CHECKPOINT_UNREADABLE, PATH_MISSING, SPLIT_NOT_A_NAME, TARGET_MISMATCH,
                            PrivmedError)
from privmed.evaluation.bootstrap import paired_bootstrap
from privmed.evaluation.metrics import METRIC_NAMES
from privmed.evaluation.predictions import predict, predictions_frame, split_metrics
from privmed.models import build_for_run
from privmed.models.pretrained import check_same_weights
from privmed.models.parts import trainable_part

EVALUATIONS = "evaluations"
#: fewest bootstrap resamples for a 95% percentile interval whose ends are not the extreme draws (1/40 = 2.5%)
MIN_RESAMPLES = 40


def load_run(run: Path) -> tuple[RunConfig, torch.nn.Module, dict]:
    """The run's config, its model with the selected checkpoint loaded, and its metrics.json, whose ``seal`` says
    whether the run's records were verified (:func:`privmed.rundir.verify_run`)."""
    best = run / rundir.CHECKPOINTS / rundir.BEST
    if not (run / rundir.CONFIG).is_file() or not best.is_file() or not (run / rundir.METRICS).is_file():
        raise PrivmedError(f"'{run}' is not a finished privmed run (needs {rundir.CONFIG}, {rundir.METRICS} and "
                           f"{rundir.CHECKPOINTS}/{rundir.BEST}). Train it first, or resume it with --resume.")
    state = rundir.load_checkpoint(best, fix="Train the run again (or resume it, if its last.pt is intact).")
    verdict = rundir.verify_run(run)  # a record whose keyed seal fails is refused
    rundir.check_ledger(run, kept=state.get("ledger_sha256"))
    config = config_from_run_dict(rundir.read_config_dict(run))
    metrics = {**rundir.read_json(run / rundir.METRICS), "seal": verdict.words()}
    # the checkpoint holds every trained weight; only a frozen backbone comes from the weights file again
    if config.model.freeze != "none":
        check_same_weights(config.model.weights, recorded=state.get("weights_sha256"))
    model = build_for_run(config, num_outputs=len(metrics["label_names"]), weights=config.model.freeze != "none")
    try:
        trainable_part(model).load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        raise PrivmedError(CHECKPOINT_UNREADABLE.format(path=best, reason=f"{type(err).__name__}: "
                                                        f"{str(err).splitlines()[0][:200]}",
                                                        fix="Train the run again.")) from None
    return config, model.eval(), metrics


def _evaluation_data(run: Path, config: RunConfig, *, data: str | None, split: str, label_columns,
                     positive_class, class_names=None, allow_outside_root: bool = False) -> Dataset:
    changes = {"allow_outside_root": True} if allow_outside_root else {}
    if data is None:
        rundir.check_recorded_data(run, config.data.path)
    else:
        if not Path(data).exists():
            import os

            raise PrivmedError(PATH_MISSING.format(what="data path", path=data, cwd=os.getcwd()))
        changes["path"] = data
    if label_columns:
        changes["label_columns"] = tuple(label_columns)
    if class_names:
        changes["class_names"] = tuple(class_names)
    names, value = changes.get("class_names", config.data.class_names), _positive_value(config)
    if not positive_class and names and value is not None:  # the run's positive class, by the name given to it
        positive_class = names[value]
    if positive_class:
        changes["positive_class"] = positive_class
    data_config = dataclasses.replace(config.data, **changes)
    ds = load_dataset(data_config, require_splits=(), assign_splits=False)
    if ds.table["split"].isna().all():  # external data without splits: all of it is the evaluated split
        ds.table["split"] = split
    check_patient_disjoint(ds.table)
    part = ds.split(split)
    if len(part) == 0:
        raise PrivmedError(f"'{ds.name}' has no samples in split '{split}' (splits: {sorted(ds.table['split'].unique())}).")
    return part


def _positive_value(config: RunConfig) -> int | None:
    """Which 0/1 label value the run took as positive (None when it was trained on named classes by name)."""
    wanted, names = config.data.positive_class, config.data.class_names
    if wanted is None or wanted in ("0", "1"):
        return 1 if wanted is None else int(wanted)
    return names.index(wanted) if names and wanted in names else None


def check_resamples(n_resamples: int) -> None:
    """Bootstrap CIs need at least :data:`MIN_RESAMPLES` resamples."""
    if n_resamples < MIN_RESAMPLES:
        raise PrivmedError(BOOTSTRAP_TOO_FEW.format(n=n_resamples, minimum=MIN_RESAMPLES))


def check_split_name(split: object) -> str:
    """``split`` when it is a plain name (letters, digits, ``_-``): it names a folder of the run, so a path
    (``/abs/dir``, ``../x``) would write predictions there."""
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise PrivmedError(SPLIT_NOT_A_NAME.format(split=split))
    return split


def evaluate_run(run: Path, *, data: str | None = None, split: str = "test", label_columns=None,
                 positive_class: str | None = None, class_names=None, n_resamples: int = 1000,
                 name: str | None = None, allow_outside_root: bool = False) -> tuple[dict, Path]:
    """Evaluate a finished run on a data set split; write metrics.json and predictions.csv under
    ``RUN/evaluations/<name>/<split>`` (``name`` defaults to the data set's name); return both."""
    check_split_name(split)
    check_resamples(n_resamples)
    config, model, run_metrics = load_run(run)
    part = _evaluation_data(run, config, data=data, split=split, label_columns=label_columns,
                            positive_class=positive_class, class_names=class_names,
                            allow_outside_root=allow_outside_root)
    _check_labels(part, run_metrics, named=bool(positive_class or class_names) or data is None)
    scores = predict(model, part.image_tensor)
    thresholds = np.array([run_metrics["thresholds"][name] for name in run_metrics["label_names"]])
    result = {
        "dataset": part.name,
        "data": str(data or config.data.path or "phantom"),
        "label_names": list(part.label_names),
        **({} if list(part.label_names) == run_metrics["label_names"] else
           {"run_label_names": run_metrics["label_names"]}),  # the run's target, under the name given here
        "thresholds": dict(zip(part.label_names, thresholds.tolist())),
        "threshold_rule": "chosen on the run's own validation split, applied unchanged",
        "run_seal": run_metrics["seal"],
        "splits": {split: split_metrics(part, scores, thresholds, n_resamples=n_resamples, seed=config.training.seed,
                                        score_images=lambda x: predict(model, x),
                                        lesion_fraction=config.data.lesion_fraction)},
    }
    where = evaluation_dir(run, name or part.name, split)
    rundir.write_json(where / rundir.METRICS, result)
    rundir.write_csv(where / rundir.PREDICTIONS, predictions_frame(part, {split: scores}))
    seal.seal(where, [rundir.METRICS, rundir.PREDICTIONS])
    return result, where


def evaluation_dir(run: Path, name: str, split: str) -> Path:
    """Where :func:`evaluate_run` writes the evaluation of ``run`` on data set ``name``, ``split``."""
    return Path(run) / EVALUATIONS / name / split


def compare_runs(run_a: Path, run_b: Path, *, data: str | None = None, split: str = "test", label_columns=None,
                 positive_class: str | None = None, class_names=None, n_resamples: int = 1000,
                 allow_outside_root: bool = False) -> dict:
    """Paired bootstrap of two runs on the same samples and the same resamples, every metric."""
    check_resamples(n_resamples)
    config_a, model_a, metrics_a = load_run(run_a)
    _, model_b, metrics_b = load_run(run_b)
    if metrics_a["label_names"] != metrics_b["label_names"]:
        raise PrivmedError(f"the runs predict different targets ({metrics_a['label_names']} vs "
                           f"{metrics_b['label_names']}); compare runs of the same task.")
    part = _evaluation_data(run_a, config_a, data=data, split=split, label_columns=label_columns,
                            positive_class=positive_class, class_names=class_names,
                            allow_outside_root=allow_outside_root)
    _check_labels(part, metrics_a, named=bool(positive_class or class_names) or data is None)
    x = part.image_tensor
    scores_a, scores_b = predict(model_a, x), predict(model_b, x)
    labels = part.labels if part.labels.shape[1] > 1 else part.labels[:, 0]
    squeeze = (lambda s: s) if part.labels.shape[1] > 1 else (lambda s: s[:, 0])
    thr = {key: np.array([m["thresholds"][n] for n in m["label_names"]]) for key, m in (("a", metrics_a), ("b", metrics_b))}
    if part.labels.shape[1] == 1:
        thr = {k: float(v[0]) for k, v in thr.items()}
    results = {
        metric: paired_bootstrap(y_true=labels, scores_a=squeeze(scores_a), scores_b=squeeze(scores_b),
                                 groups=part.patient_ids, metric=metric, threshold_a=thr["a"], threshold_b=thr["b"],
                                 n_resamples=n_resamples, seed=config_a.training.seed)
        for metric in METRIC_NAMES
    }
    return {"run_a": str(run_a), "run_b": str(run_b), "dataset": part.name, "split": split,
            "n_resamples": n_resamples, "metrics": results}


def _check_labels(part: Dataset, run_metrics: dict, *, named: bool) -> None:
    """The data's target is the run's; ``named``: the user said which class of the data the run's positive class
    is (--positive-class, --class-names), or the data is the run's own (a run recorded before its classes were
    named after their folders: ``label=1``), so a binary run's target may carry the data's name for it."""
    data, run = list(part.label_names), list(run_metrics["label_names"])
    if data == run or (named and len(data) == len(run) == 1):
        return
    raise PrivmedError(TARGET_MISMATCH.format(data=data, run=run))
