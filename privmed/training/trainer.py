"""``privmed train``: one run, from data to a run directory, top to bottom.

1. check the output directory (fresh run, or a resumable one with the same config);
2. load and check the data, build the model, compute frozen features if the model has them;
3. plan the privacy: delta, feature centering, DP-SGD noise for the target epsilon;
4. train with Poisson-sampled logical batches (split into physical batches that fit
   in memory), through Opacus when private; checkpoint every epoch with the
   accountant's state, so a resumed run neither recounts nor loses a step;
5. pick the epoch with the best validation AUROC, choose thresholds on validation,
   evaluate every split with bootstrap CIs, and write the run directory.

Non-private training uses the very same sampling and loss scaling (sum of
per-sample losses over the expected batch size), so DP-SGD with zero noise and
no clipping reproduces it exactly. Sampling, clipping, noise and accounting are the
private-training core's (:mod:`privmed.privacy.engine`), over the run's unit of
privacy (:mod:`privmed.privacy.units`: patients by default when the data has patient
ids), with secret randomness (:mod:`privmed.privacy.randomness`).

Several processes (``torchrun --nproc_per_node N -m privmed train``, or ``--nproc N``) train one
model together through Opacus's distributed optimiser (:mod:`privmed.privacy.distributed`);
rank 0 alone validates and writes.

The parts live beside this module: the privacy plan (:mod:`.plan`), the start of every candidate
(:mod:`.start`), one epoch (:mod:`.epochs`), checkpoints (:mod:`.checkpoint`), the physical batch
(:mod:`.batch_fit`) and the in-memory recipe for audits (:mod:`.in_memory`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from privmed import atomic, rundir, seal
from privmed.config import RunConfig, save_config
from privmed.data.sources import SPLITS, Dataset, load_dataset
from privmed.errors import RUN_BUSY, PrivmedError
from privmed.evaluation.predictions import evaluate_predictions, predict, predictions_frame
from privmed.models import build_for_run
from privmed.models.pretrained import weights_digest
from privmed.privacy import distributed
from privmed.privacy.distributed import resolve_device
from privmed.privacy.ledger import PrivacyLedger, epsilon_text, shown_epsilon
from privmed.progress import progress

from .batch_fit import fit_physical_batch
from .checkpoint import (TrainState, check_out_dir, check_same_start, fingerprint, restore, resume_state,
                         save_checkpoint)
from .average import evaluated
from .epochs import augments, keep_best, make_fit, mean_auroc, run_epoch
from .in_memory import FittedModel, train_in_memory
from .centre import public_centre_inputs, releases_centre
from .inputs import model_inputs, trainable_part
from .plan import (ClassifierPlan, dp_sgd_stages, epsilon_so_far, plan_privacy, protected_unit, sampled_unit,
                   start_ledger, validation_choices)
from .start import SyntheticInputs, prepare_start, seed_everything, synthetic_inputs, synthetic_source, training_set

__all__ = ["FittedModel", "seed_everything", "train", "train_in_memory", "train_processes"]

EpochCallback = Callable[[int, dict], None]


@dataclass
class Run:
    """Everything a run prepared before its first epoch: data, model inputs, the plan and the ledger."""

    config: RunConfig
    out: Path
    checkpoint: dict | None
    device: str
    data: Dataset
    model: nn.Module
    net: nn.Module
    inputs: dict[str, torch.Tensor]
    x_fit: torch.Tensor
    y_fit: torch.Tensor
    synthetic: SyntheticInputs | None
    public_centre: torch.Tensor | None  # the phantom's features, whose mean centres the head (free)
    plan: ClassifierPlan
    ledger: PrivacyLedger
    candidates: list
    start: dict  # the training set's and privacy settings' fingerprint, kept in every checkpoint


def train(config: RunConfig, *, resume: bool = False, on_epoch_end: EpochCallback | None = None,
          data: Dataset | None = None) -> Path:
    """Train one model as ``config`` says and write its run directory; returns its path. ``data``:
    ``config.data`` already loaded (by the CLI's checks), else it is loaded here.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; they train together and
    rank 0 writes the run directory. Rank 0 holds the run folder's lock from its first look at it to
    the last file written: a second ``privmed train`` into the same ``--out`` is refused (``RUN_BUSY``).
    """
    ranks = distributed.join_from_env(resolve_device(config.training.device))
    if ranks.world_size > 1 and not config.privacy.private:
        raise PrivmedError(distributed.NPROC_NEEDS_DP.format(nproc=ranks.world_size))
    with rundir.folder_lock(Path(config.out), RUN_BUSY) if ranks.lead else contextlib.nullcontext():
        run = _prepare(config, resume=resume, data=data)
        if ranks.lead:
            _create_run_dir(run)
        state = resume_state(run.checkpoint)
        _train_candidates(run, state, on_epoch_end)
        if ranks.lead:
            _finish(run, state)
    return run.out


def _prepare(config: RunConfig, *, resume: bool, data: Dataset | None = None) -> Run:
    """Check the output folder, load the data, build the model and plan the privacy; nothing written."""
    out = Path(config.out)
    checkpoint = check_out_dir(out, config, resume=resume)
    distributed.barrier()  # every rank has looked at --out before rank 0 creates it
    seed_everything(config.training.seed)
    device = distributed.rank_device(resolve_device(config.training.device))
    if data is None:
        data = load_dataset(config.data, stream=None)  # large data: images decoded per batch
    train_data = data.split("train")
    source = synthetic_source(config, data)  # before the slow part, so a bad folder fails at once
    protected = protected_unit(config, train_data, checkpoint)
    model = build_for_run(config, num_outputs=len(data.label_names))  # model.args, weights, freeze
    cache = config.training.feature_cache
    inputs = {split: model_inputs(model, data.split(split).image_tensor, device=device, cache=cache)
              for split in SPLITS}
    net = trainable_part(model).to(device)
    synthetic = synthetic_inputs(source, model, device, cache=cache)
    x_fit, y_fit = training_set(config, inputs["train"], torch.from_numpy(train_data.labels), synthetic)
    public = public_centre_inputs(model, config, device=device) if synthetic is None else None
    config = fit_physical_batch(net, x_fit, y_fit, config, device)  # measured, before the run directory exists
    candidates = config.tune.candidates(config.training)
    plan = plan_privacy(config, protected, sampled_unit(config, protected, synthetic), candidates,
                        checkpoint=checkpoint,
                        has_center=releases_centre(net, synthetic=synthetic, public=public,
                                                    source=config.privacy.center), synthetic=synthetic)
    ledger = start_ledger(config, plan, n=len(train_data), synthetic=synthetic)
    start = fingerprint(train_data, config, plan)
    check_same_start(out, checkpoint, start)  # a resume on other data or settings: refused
    return Run(config, out, checkpoint, device, data, model, net, inputs, x_fit, y_fit, synthetic, public, plan,
               ledger, candidates, start)


def _create_run_dir(run: Run) -> None:
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / rundir.CHECKPOINTS).mkdir(exist_ok=True)
    save_config(run.config, run.out / rundir.CONFIG)
    seal.seal(run.out, [rundir.CONFIG])  # what --resume reads again
    for note in run.data.notes:  # e.g. where the class names came from
        rundir.append_log(run.out, note)


def _train_candidates(run: Run, state: TrainState, on_epoch_end: EpochCallback | None) -> None:
    """Every hyper-parameter candidate (one without a search), each from the same start, from where
    ``state`` stands; the lead checkpoints after every epoch."""
    config, net, candidates = run.config, run.net, run.candidates
    prepare_start(net, run.x_fit, run.plan, run.ledger, config, run.checkpoint, run.synthetic, run.device,
                  run.public_centre)
    initial = copy.deepcopy(net.state_dict())
    bar = progress(desc="training", unit="epoch", total=sum(c.epochs for c in candidates),
               initial=sum(c.epochs for c in candidates[:state.candidate]) + state.epoch,
               disable=not distributed.is_lead())
    checkpoint = run.checkpoint
    for c in range(state.candidate, len(candidates)):
        candidate = dataclasses.replace(config, training=candidates[c])
        if state.epoch == 0:
            net.load_state_dict(initial)
        fit = make_fit(net, run.x_fit, run.y_fit, run.plan, c, candidate, run.device)
        if checkpoint is not None and state.candidate == c:
            restore(checkpoint, fit)
            if distributed.is_lead():
                rundir.append_log(run.out, f"resumed after epoch {state.epoch} of candidate {c} with "
                                           f"{fit.spent_steps} DP-SGD steps spent; sampling and noise "
                                           f"continue from fresh secret randomness")
        for epoch in range(state.epoch, candidate.training.epochs):
            t0 = time.perf_counter()
            net.train()
            loss = run_epoch(fit, candidate, augments(config, run.model), run.device)
            state.candidate, state.epoch = c, epoch + 1
            if distributed.is_lead():
                row = _end_epoch(run, state, fit, c, loss=loss, seconds=time.perf_counter() - t0)
                bar.update()
                bar.set_postfix(loss=f"{loss:.4f}", val_auroc=f"{row['val_auroc']:.3f}",
                                eps=epsilon_text(row["epsilon"]))
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, row)
        state.finished_steps.append(fit.spent_steps)
        state.candidate, state.epoch, checkpoint = c + 1, 0, None
        fit.close()
    bar.close()


def _end_epoch(run: Run, state: TrainState, fit, candidate: int, *, loss: float, seconds: float) -> dict:
    """Validate, keep the best epoch, and checkpoint, log and write the history (the lead only)."""
    y_val = run.data.split("val").labels
    kept = evaluated(run.net, fit.average)  # the weights, or their average (training.ema)
    val_auroc = mean_auroc(y_val, predict(kept, run.inputs["val"], device=run.device))
    state.best = keep_best(state.best, kept, val_auroc, candidate, state.epoch)
    # a NOT PRIVATE run (replayable noise, a non-private or other-unit generator, no DP-SGD) shows no epsilon
    spent = shown_epsilon(epsilon_so_far(run.ledger, run.plan, state, fit, candidate), private=run.ledger.private)
    row = {**({"candidate": candidate} if len(run.candidates) > 1 else {}), "epoch": state.epoch, "loss": loss,
           "val_auroc": val_auroc, "epsilon": spent, "seconds": seconds}
    state.history.append(row)
    save_checkpoint(run.out, fit, state, run.plan, run.start)
    rundir.write_csv(run.out / rundir.HISTORY, pd.DataFrame(state.history))
    rundir.append_epoch_log(run.out, row)
    return row


def _finish(run: Run, state: TrainState) -> None:
    """Compose the ledger, restore the best epoch, evaluate every split and seal the run directory."""
    config, out, ledger = run.config, run.out, run.ledger
    ledger.mechanisms.extend(dp_sgd_stages(run.plan, state, run.candidates, config))
    run.net.load_state_dict(state.best["state"])
    ledger.validation_choices.extend(validation_choices(config, run.candidates, state.best,
                                                       len(run.data.split("val"))))
    _write_results(out, run, ledger, state.best)
    best = {"model": state.best["state"], "epoch": state.best["epoch"], "ledger_sha256": rundir.seal_ledger(out),
            "weights_sha256": weights_digest(config.model.weights)}
    with atomic.replacing(out / rundir.CHECKPOINTS / rundir.BEST) as tmp:
        torch.save(best, tmp)  # evaluate, compare and audit refuse an edited ledger or weights
    rundir.seal_run(out)  # config, ledger, metrics and best.pt under the keyed seal (privmed.seal)
    rundir.append_log(out, ledger.summary())


def _write_results(out: Path, run: Run, ledger: PrivacyLedger, best: dict) -> None:
    config, net, data, candidates, device = run.config, run.net, run.data, run.candidates, run.device
    scores = {split: predict(net, x, device=device) for split, x in run.inputs.items()}
    frame = predictions_frame(data, scores)
    metrics = evaluate_predictions(data, scores, threshold_split="val",
                                   n_resamples=config.training.bootstrap_resamples, seed=config.training.seed,
                                   score_images=lambda x: predict(net, model_inputs(run.model, x, device=device,
                                                                               cache=config.training.feature_cache),
                                                                  device=device),
                                   lesion_fraction=config.data.lesion_fraction)
    metrics["checkpoint"] = {"epoch": best["epoch"], "selected_by": "val_auroc", "val_auroc": best["val_auroc"]}
    if len(candidates) > 1:
        metrics["checkpoint"]["candidate"] = {k: getattr(candidates[best["candidate"]], k) for k in config.tune.grid}
    rundir.write_csv(out / rundir.PREDICTIONS, frame)
    rundir.write_json(out / rundir.METRICS, metrics)
    rundir.write_record(out, ledger.record())


def train_processes(config, *, resume: bool, nproc: int = 1, on_epoch_end=None, data: Dataset | None = None
                    ) -> Path | None:
    """``privmed train``: :func:`~privmed.training.trainer.train` in this process (under ``torchrun``:
    this rank), or in ``nproc`` new processes (``--nproc``). Returns the run directory in the
    process that wrote it, None on the other ranks. ``on_epoch_end`` is called in the lead process
    only, and only when training runs in this process (not with ``nproc`` > 1); so is ``data``, the
    loaded ``config.data`` (the new processes load their own)."""
    if nproc < 1:
        raise PrivmedError(distributed.NPROC_NOT_POSITIVE.format(nproc=nproc))
    if nproc == 1:
        out = train(config, resume=resume, on_epoch_end=on_epoch_end if distributed.is_lead() else None, data=data)
        return out if distributed.is_lead() else None
    if not config.privacy.private:
        raise PrivmedError(distributed.NPROC_NEEDS_DP.format(nproc=nproc))
    distributed.launch(_train_rank, (config, resume), nproc=nproc, out=config.out)
    return Path(config.out)


def _train_rank(config, resume: bool) -> None:
    try:
        train(config, resume=resume)
    finally:
        distributed.leave()
