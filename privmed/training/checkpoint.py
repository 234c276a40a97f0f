"""Where a run stands, saved every epoch and restored on ``--resume``: weights, optimiser, the
accountant's history and the non-secret RNG; never the secret generators. Also what the run trains on
(:func:`fingerprint`), so a resume on other data or privacy settings is refused (:func:`check_same_start`)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from privmed import atomic, rundir
from privmed.config import RunConfig, config_from_run_dict
from privmed.data.sources import Dataset
from privmed.errors import RESUME_DATA_CHANGED, PrivmedError

from .plan import ClassifierPlan
from .private import PrivateTraining
from .state import TrainState


def check_out_dir(out: Path, config: RunConfig, *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, return its last checkpoint after checking the config."""
    return rundir.checkpoint_to_resume(out, config.identity(), lambda raw: config_from_run_dict(raw).identity(),
                                       resume=resume)

def fingerprint(train: Dataset, config: RunConfig, plan: ClassifierPlan) -> dict:
    """What the accountant's spend so far depends on: the training set (its size, patients, files by path, size
    and modification time, or the bytes of in-memory images, and labels: no second read of the images) and the
    privacy settings (unit, k, sampling rates, batch size, epsilon or noise, delta, clip)."""
    table, patients = train.table, train.patient_ids
    files = hashlib.sha256()
    if "path" in table and config.data.path is not None:
        root = Path(config.data.path)
        base = root.parent if root.is_file() else root  # where a manifest's relative paths start
        for path in sorted(table["path"].astype(str)):
            full = base / path  # an absolute path stays itself
            st = os.stat(full) if full.is_file() else None
            files.update(f"{path}\0{st and st.st_size}\0{st and st.st_mtime_ns}\n".encode())
    elif isinstance(train.images, np.ndarray):
        files.update(np.ascontiguousarray(train.images).tobytes())
    p = config.privacy
    return {"data": {"images": len(train), "patients": 0 if patients is None else len(set(patients)),
                     "patient_ids": _digest(sorted(set(patients)) if patients is not None else []),
                     "files": files.hexdigest(), "labels": _digest(train.labels.tobytes())},
            "privacy": {"unit": plan.protected.name, "max_images_per_patient": plan.protected.max_per_unit,
                        "sample_rates": [s.sample_rate for s in plan.schedules],
                        "batch_size": config.training.batch_size, "epsilon": p.epsilon,
                        "noise_multiplier": plan.noise_multiplier, "delta": plan.delta, "clip_norm": p.clip_norm}}


def _digest(value) -> str:
    return hashlib.sha256(value if isinstance(value, bytes) else "\n".join(value).encode()).hexdigest()


_DATA_WORDS = {"images": "the number of training images", "patients": "the number of training patients",
               "patient_ids": "the training set's patient ids", "labels": "the training labels",
               "files": "the training files (paths, sizes or modification times)"}


def check_same_start(out: Path, checkpoint: dict | None, now: dict) -> None:
    """Refuse a resume whose training data or privacy settings differ from those the checkpoint recorded
    (:data:`~privmed.errors.RESUME_DATA_CHANGED`, naming what changed); a checkpoint from before privmed kept
    them is resumed as before."""
    then = (checkpoint or {}).get("fingerprint")
    if not then:
        return
    data = [f"{_DATA_WORDS.get(k, k)} changed" + (f" ({then['data'][k]} -> {v})" if k in ("images", "patients")
                                                   else "")
            for k, v in now["data"].items() if then["data"].get(k) != v]
    privacy = rundir.config_changes(then["privacy"], now["privacy"], "privacy.")
    if data or privacy:
        raise PrivmedError(RESUME_DATA_CHANGED.format(path=out, changes="; ".join(data + privacy)))


def save_checkpoint(out: Path, net, fit: PrivateTraining, state: TrainState, plan: ClassifierPlan,
                    start: dict | None = None) -> None:
    """Weights, optimiser, the accountant's history and the non-secret RNG; never the secret generators."""
    original = getattr(fit.optimizer, "original_optimizer", fit.optimizer)
    checkpoint = {
        "candidate": state.candidate,
        "epoch": state.epoch,
        "model": net.state_dict(),
        "optimizer": original.state_dict(),
        "accountant": fit.engine.accountant.state_dict() if fit.engine is not None else None,
        "average": fit.average.state_dict() if fit.average is not None else None,
        "torch_rng": torch.get_rng_state(),
        "best": state.best,
        "history": state.history,
        "finished_steps": state.finished_steps,
        "plan": plan.record(),
        "fingerprint": start,  # the data and privacy settings (fingerprint), checked on --resume
    }
    with atomic.replacing(out / rundir.CHECKPOINTS / rundir.LAST) as tmp:  # a full disk leaves no partial file
        torch.save(checkpoint, tmp)


def resume_state(checkpoint: dict | None) -> TrainState:
    """The state a checkpoint left (a finished candidate's last epoch moves on to the next candidate)."""
    if checkpoint is None:
        return TrainState()
    best = {"candidate": 0, **checkpoint["best"]}
    return TrainState(checkpoint.get("candidate", 0), checkpoint["epoch"], best, checkpoint["history"],
                      list(checkpoint.get("finished_steps", [])))


def restore(checkpoint: dict, net, fit: PrivateTraining) -> None:
    net.load_state_dict(checkpoint["model"])
    getattr(fit.optimizer, "original_optimizer", fit.optimizer).load_state_dict(checkpoint["optimizer"])
    if fit.engine is not None:
        fit.engine.accountant.load_state_dict(checkpoint["accountant"])
    if fit.average is not None and checkpoint.get("average") is not None:
        fit.average.load_state_dict(checkpoint["average"])
    torch.set_rng_state(checkpoint["torch_rng"])
