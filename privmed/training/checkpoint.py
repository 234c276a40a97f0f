"""Where a run stands, saved every epoch and restored on ``--resume``: weights, optimiser, the
accountant's history and the non-secret RNG; never the secret generators."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from privmed import rundir
from privmed.config import RunConfig, config_from_run_dict

from .plan import PrivacyPlan
from .private import PrivateTraining
from .state import TrainState


def check_out_dir(out: Path, config: RunConfig, *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, return its last checkpoint after checking the config."""
    return rundir.checkpoint_to_resume(out, config.identity(), lambda raw: config_from_run_dict(raw).identity(),
                                       resume=resume)

def save_checkpoint(out: Path, net, fit: PrivateTraining, state: TrainState, plan: PrivacyPlan) -> None:
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
    }
    tmp = out / rundir.CHECKPOINTS / (rundir.LAST + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(out / rundir.CHECKPOINTS / rundir.LAST)


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
