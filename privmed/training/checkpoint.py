"""Where a run stands, saved every epoch and restored on ``--resume``, in the one checkpoint format of every
trainer (:func:`write_checkpoint`): the engine's weights, optimiser and accountant's history, the non-secret
RNG; never the secret generators. Also what the run trains on
(:func:`fingerprint`), so a resume on other data or privacy settings is refused (:func:`check_same_start`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from privmed import atomic, rundir
from privmed.config import RunConfig, config_from_run_dict
from privmed.data.sources import Dataset
from privmed.errors import RESUME_DATA_CHANGED, PrivmedError
from privmed.privacy.engine import Engine

from .plan import ClassifierPlan
from .state import TrainState


def check_out_dir(out: Path, config: RunConfig, *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, return its last checkpoint after checking the config."""
    return upgrade_checkpoint(rundir.checkpoint_to_resume(
        out, config.identity(), lambda raw: config_from_run_dict(raw).identity(), resume=resume))

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


def save_checkpoint(out: Path, fit: Engine, state: TrainState, plan: ClassifierPlan, start: dict | None = None) -> None:
    """The classifier's checkpoint: the engine and where training stands (candidate, best epoch, the steps of
    finished candidates), its privacy plan and what it trains on (:func:`fingerprint`, checked on --resume)."""
    write_checkpoint(out, epoch=state.epoch, engine=fit, history=state.history,
                     extra={"candidate": state.candidate, "best": state.best, "finished_steps": state.finished_steps,
                            "plan": plan.record(), "fingerprint": start})


def resume_state(checkpoint: dict | None) -> TrainState:
    """The state a checkpoint left (a finished candidate's last epoch moves on to the next candidate)."""
    if checkpoint is None:
        return TrainState()
    best = {"candidate": 0, **checkpoint["best"]}
    return TrainState(checkpoint.get("candidate", 0), checkpoint["epoch"], best, checkpoint["history"],
                      list(checkpoint.get("finished_steps", [])))


# --------------------------------------------------------------------------- the one checkpoint format

#: the layout of ``checkpoints/last.pt`` for every trainer (classifier and generator); 1 was each trainer's own
CHECKPOINT_FORMAT = 2


def write_checkpoint(out: Path, *, epoch: int, engine: Engine, history: list, parts: dict | None = None,
                     extra: dict | None = None) -> None:
    """Where a trainer stands after ``epoch``, atomically (a full disk leaves no partial file): the engine's
    state (weights, optimiser, the accountant's history, the weight average), the other ``parts`` it trains
    (name -> anything with ``state_dict``, e.g. a generator and its optimiser), the history, the non-secret
    RNG, and the trainer's own ``extra`` keys. Never the secret generators."""
    checkpoint = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "history": history, "engine": engine.state_dict(),
                  "parts": {name: part.state_dict() for name, part in (parts or {}).items()},
                  "torch_rng": torch.get_rng_state()}
    clash = set(checkpoint) & set(extra or {})
    assert not clash, f"a trainer's own checkpoint keys clash with the format's: {sorted(clash)}"
    with atomic.replacing(out / rundir.CHECKPOINTS / rundir.LAST) as tmp:
        torch.save({**checkpoint, **(extra or {})}, tmp)


def restore(checkpoint: dict, fit: Engine, parts: dict | None = None) -> None:
    """Continue from :func:`write_checkpoint`: the engine (its privacy spend included), the parts and the RNG."""
    fit.load_state_dict(checkpoint["engine"])
    for name, part in (parts or {}).items():
        part.load_state_dict(checkpoint["parts"][name])
    torch.set_rng_state(checkpoint["torch_rng"])


def upgrade_checkpoint(checkpoint: dict | None) -> dict | None:
    """A checkpoint in :data:`CHECKPOINT_FORMAT`; one written by the classifier or the generator in their own
    layouts before (format 1) is moved into it, so such runs still resume where they stopped."""
    if checkpoint is None or checkpoint.get("format") == CHECKPOINT_FORMAT:
        return checkpoint
    old = dict(checkpoint)
    if "generator" in old:  # the generator's: the discriminator is the engine's model
        engine = {"module": old.pop("discriminator"), "optimizer": old.pop("opt_d"), "average": None}
        parts = {name: old.pop(name) for name in ("generator", "ema", "opt_g")}
    else:
        engine = {"module": old.pop("model"), "optimizer": old.pop("optimizer"), "average": old.pop("average", None)}
        parts = {}
    engine["accountant"] = old.pop("accountant")
    return {**old, "format": CHECKPOINT_FORMAT, "engine": engine, "parts": parts}
