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
private-training core's (:mod:`privmed.training.private`), over the run's unit of
privacy (:mod:`privmed.privacy.units`: patients by default when the data has patient
ids), with secret randomness (:mod:`privmed.privacy.randomness`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from opacus.data_loader import DPDataLoader
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from privmed import rundir
from privmed.config import RunConfig, config_from_dict, save_config
from privmed.data.sources import SPLITS, Dataset, load_dataset
from privmed.evaluation.predictions import evaluate_predictions, predict, predictions_frame
from privmed.errors import BATCH_TOO_LARGE, PHYSICAL_BATCH_LOWERED, RESUME_OTHER_UNIT, PrivmedError
from privmed.models import build_model, grad_sample_mode_for
from privmed.privacy.accounting import Mechanism, calibrate_noise, check_delta, default_delta, epsilon_for
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.randomness import CENTRE_STREAM, REPLAYABLE_NOT_PRIVATE, replay_seed_for, secret_generator
from privmed.privacy.units import PrivacyUnit, resolve_unit

from .augment import augment_batch
from .inputs import find_center, is_feature_model, model_inputs, set_center, trainable_part
from .memory import choose_physical_batch, gigabytes, measure
from .private import PrivateTraining, Schedule, make_plain, make_private, plan_schedule, resolve_device, spent_steps
from .synthetic import SyntheticSource, load_synthetic, prepare_finetune

EpochCallback = Callable[[int, dict], None]

GENERATOR_OTHER_UNIT = ("The generator '{generator}' protects one {generator_unit} per unit of privacy and this run "
                        "protects one {unit}, so its epsilon does not compose into a {unit}-level guarantee. Train the "
                        "generator with privacy.unit '{unit}'.")


@dataclass
class PrivacyPlan:
    """Who is protected, and the noise and schedules fixed before training starts.

    ``protected`` is the unit of the private training data; ``sampled`` the unit the
    Poisson sampler draws from (the same, plus each synthetic image as its own unit when
    synthetic images are mixed in, or synthetic images alone). ``schedules`` has one entry
    per hyper-parameter candidate (one without a search); all share ``noise_multiplier``.
    """

    delta: float
    protected: PrivacyUnit
    sampled: PrivacyUnit
    schedules: list[Schedule]
    noise_multiplier: float  # 0 for non-private
    center_noise_multiplier: float | None  # None: exact (non-private) centring or no centring
    replay_seed: int | None  # None: secret randomness; else the seed noise and sampling are derived from

    def record(self) -> dict:
        """What a checkpoint keeps of the plan (no randomness, no data)."""
        return {"noise_multiplier": self.noise_multiplier, "unit": self.protected.name,
                "max_per_unit": self.protected.max_per_unit}


@dataclass
class TrainState:
    """Where training stands: the candidate and epoch reached, the best (candidate, epoch) on
    validation so far, the history, and the DP-SGD steps of candidates already finished."""

    candidate: int = 0
    epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_auroc": -math.inf, "candidate": 0, "epoch": -1, "state": None})
    history: list = field(default_factory=list)
    finished_steps: list = field(default_factory=list)


def train(config: RunConfig, *, resume: bool = False, on_epoch_end: EpochCallback | None = None) -> Path:
    """Train one model as ``config`` says and write its run directory; returns its path."""
    out = Path(config.out)
    checkpoint = _check_out_dir(out, config, resume=resume)
    seed_everything(config.training.seed)
    device = resolve_device(config.training.device)

    data = load_dataset(config.data)
    train_data, val_data = data.split("train"), data.split("val")
    source = _synthetic_source(config, data)  # before the slow part, so a bad folder fails at once
    protected = _protected_unit(config, train_data, checkpoint)
    model = build_model(config.model.name, spatial_dims=config.data.spatial_dims, in_channels=1,
                        num_outputs=len(data.label_names), image_size=config.data.image_size,
                        norm=config.model.norm, **config.model.builder_options())
    inputs = {split: model_inputs(model, data.split(split).image_tensor, device=device) for split in SPLITS}
    x_val, y_val = inputs["val"], torch.from_numpy(val_data.labels)
    net = trainable_part(model).to(device)
    synthetic = _synthetic_inputs(source, model, device)
    x_fit, y_fit = _training_set(config, inputs["train"], torch.from_numpy(train_data.labels), synthetic)

    config = _fit_physical_batch(net, x_fit, y_fit, config, device)  # measured, before the run directory exists
    candidates = config.tune.candidates(config.training)
    plan = _plan_privacy(config, protected, _sampled_unit(config, protected, synthetic), candidates,
                         checkpoint=checkpoint, has_center=find_center(net) is not None and synthetic is None)
    ledger = _ledger(config, plan, n=len(train_data), synthetic=synthetic)

    # ---- from here on the run directory exists
    out.mkdir(parents=True, exist_ok=True)
    (out / rundir.CHECKPOINTS).mkdir(exist_ok=True)
    save_config(config, out / rundir.CONFIG)

    _prepare_start(net, x_fit, plan, ledger, config, checkpoint, synthetic, device)
    initial = copy.deepcopy(net.state_dict())
    state = _resume_state(checkpoint)
    bar = tqdm(desc="training", unit="epoch", total=sum(c.epochs for c in candidates),
               initial=sum(c.epochs for c in candidates[:state.candidate]) + state.epoch)
    for c in range(state.candidate, len(candidates)):
        candidate = dataclasses.replace(config, training=candidates[c])
        if state.epoch == 0:
            net.load_state_dict(initial)
        fit = _fit(net, x_fit, y_fit, plan, c, candidate, device)
        if checkpoint is not None and state.candidate == c:
            _restore(checkpoint, net, fit)
            rundir.append_log(out, f"resumed after epoch {state.epoch} of candidate {c} with "
                                   f"{spent_steps(fit.engine)} DP-SGD steps spent; sampling and noise continue "
                                   f"from fresh secret randomness")
        for epoch in range(state.epoch, candidate.training.epochs):
            t0 = time.perf_counter()
            net.train()
            loss = _run_epoch(fit, plan.schedules[c], candidate, _augments(config, model), device)
            val_auroc = _mean_auroc(y_val.numpy(), predict(net, x_val, device=device))
            state.best = _keep_best(state.best, net, val_auroc, c, epoch + 1)
            spent = _epsilon_so_far(ledger, plan, state, fit, c)
            row = {**({"candidate": c} if len(candidates) > 1 else {}), "epoch": epoch + 1, "loss": loss,
                   "val_auroc": val_auroc, "epsilon": spent, "seconds": time.perf_counter() - t0}
            state.history.append(row)
            state.candidate, state.epoch = c, epoch + 1
            bar.update()
            bar.set_postfix(loss=f"{loss:.4f}", val_auroc=f"{val_auroc:.3f}", eps=f"{spent:.3g}")
            _save_checkpoint(out, net, fit, state, plan)
            rundir.write_csv(out / rundir.HISTORY, pd.DataFrame(state.history))
            rundir.append_log(out, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in row.items()))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
        state.finished_steps.append(spent_steps(fit.engine))
        state.candidate, state.epoch, checkpoint = c + 1, 0, None
        fit.close()
    bar.close()

    ledger.mechanisms.extend(_dp_sgd_stages(plan, state, candidates, config))
    net.load_state_dict(state.best["state"])
    ledger.validation_choices.extend(_validation_choices(config, candidates, state.best, len(val_data)))
    _write_results(out, net, inputs, data, config, ledger, state.best, candidates, device)
    torch.save({"model": state.best["state"], "epoch": state.best["epoch"], "ledger_sha256": rundir.seal_ledger(out)},
               out / rundir.CHECKPOINTS / rundir.BEST)  # evaluate, compare and audit refuse an edited ledger
    rundir.append_log(out, ledger.summary())
    return out


def _dp_sgd_stages(plan: PrivacyPlan, state: TrainState, candidates: list, config: RunConfig) -> list[Mechanism]:
    """One accounted DP-SGD stage per candidate trained (the kept one named ``dp_sgd``)."""
    if not config.privacy.private:
        return []
    stages = []
    for c, (schedule, steps) in enumerate(zip(plan.schedules, state.finished_steps)):
        name = "dp_sgd" if c == state.best["candidate"] else f"dp_sgd_tuning_candidate_{c}"
        stages.append(Mechanism(name, plan.noise_multiplier, schedule.sample_rate, steps))
    return stages


def _validation_choices(config: RunConfig, candidates: list, best: dict, n_val: int) -> list[str]:
    """Sentences for the ledger: what was chosen by looking at the private validation split."""
    choices = []
    if len(candidates) > 1:
        grid = ", ".join(f"{k} in {list(v)}" for k, v in config.tune.grid.items())
        kept = candidates[best["candidate"]]
        chosen = ", ".join(f"{k}={getattr(kept, k)}" for k in config.tune.grid)
        spent = ("each trained with DP-SGD on the private training data at one shared noise multiplier, and all "
                 "of them are composed in the epsilon above" if config.privacy.private
                 else "each trained on the private training data")
        choices.append(f"Hyper-parameters were searched over {grid}: {len(candidates)} candidates, {spent}; the "
                       f"candidate kept ({chosen}) was chosen by AUROC on the private validation split.")
    choices.append(
        f"The checkpoint (epoch {best['epoch']} of {candidates[best['candidate']].epochs}) was selected by AUROC on "
        f"the private validation split ({n_val} samples), and decision thresholds were chosen on it (Youden); "
        f"these choices are not covered by the epsilon above.")
    return choices


# --------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: initialisation, augmentation and anything else that is not
    part of the privacy guarantee. Sampling and noise use secret generators instead."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_out_dir(out: Path, config: RunConfig, *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, return its last checkpoint after checking the config."""
    return rundir.checkpoint_to_resume(out, config.identity(), lambda raw: config_from_dict(raw).identity(),
                                       resume=resume)


def _protected_unit(config: RunConfig, train_data: Dataset, checkpoint: dict | None) -> PrivacyUnit:
    """The unit of privacy of the private training split (a resumed run must keep its own)."""
    p = config.privacy
    unit = resolve_unit(p.unit, train_data.patient_ids, max_images_per_patient=p.max_images_per_patient,
                        n=len(train_data))
    recorded = (checkpoint or {}).get("plan", {}).get("unit")
    if recorded is not None and recorded != unit.name:
        raise PrivmedError(RESUME_OTHER_UNIT.format(path=config.out, recorded=recorded, unit=unit.name))
    return unit


def _sampled_unit(config: RunConfig, protected: PrivacyUnit, synthetic: "SyntheticInputs | None") -> PrivacyUnit:
    """What the Poisson sampler draws: the private units, each synthetic image as a unit of its own
    after them (augment), or synthetic images alone (only)."""
    if synthetic is None or config.synthetic.use == "pretrain":
        return protected
    extra = np.arange(len(synthetic.x), dtype=np.int64)
    if config.synthetic.use == "only":
        return PrivacyUnit("image", extra, 1)
    return PrivacyUnit(protected.name, np.concatenate([protected.groups, extra + protected.n_units]),
                       protected.max_per_unit)


def _plan_privacy(config: RunConfig, protected: PrivacyUnit, sampled: PrivacyUnit, candidates: list, *,
                  checkpoint: dict | None, has_center: bool) -> PrivacyPlan:
    """Delta, schedules and the noise that reaches the classifier's target epsilon: its feature
    centring and the DP-SGD of every hyper-parameter candidate together (a generator's stages
    are composed on top).

    The protected units (patients or images of the private split) set delta; the sampled
    units (private plus any synthetic mixed in) the Poisson sample rate.
    """
    p, seed = config.privacy, config.training.seed
    delta = p.delta if p.delta is not None else default_delta(protected.n_units)
    schedules = [plan_schedule(sampled, batch_size=c.batch_size, epochs=c.epochs) for c in candidates]
    replay_seed = replay_seed_for(private=p.private, replayable=p.replayable_noise, seed=seed)
    if not p.private:
        return PrivacyPlan(delta, protected, sampled, schedules, 0.0, None, replay_seed)
    check_delta(delta, protected.n_units)
    center_sigma = p.center_noise_multiplier if has_center else None
    if checkpoint is not None:
        sigma = checkpoint["plan"]["noise_multiplier"]
    elif p.noise_multiplier is not None:
        sigma = p.noise_multiplier
    else:
        prior = [Mechanism("feature_centering", center_sigma, 1.0, 1)] if center_sigma else []
        sigma = calibrate_noise(target_epsilon=p.epsilon, delta=delta, prior=prior, accountant=p.accountant,
                                schedules=[(s.sample_rate, s.steps) for s in schedules])
    return PrivacyPlan(delta, protected, sampled, schedules, sigma, center_sigma, replay_seed)


def _ledger(config: RunConfig, plan: PrivacyPlan, *, n: int, synthetic: "SyntheticInputs | None") -> PrivacyLedger:
    """Stages spent before training (a generator) and reasons the run is not private, if any."""
    ledger = PrivacyLedger.for_unit(plan.protected, delta=plan.delta, accountant=config.privacy.accountant,
                                    clip_norm=config.privacy.clip_norm if config.privacy.private else math.inf,
                                    n_private=n)
    if synthetic is not None:
        ledger.mechanisms.extend(synthetic.source.mechanisms)
        if synthetic.source.non_private_reason:
            ledger.non_private_reasons.append(synthetic.source.non_private_reason)
        if synthetic.source.free_input:
            ledger.free_inputs.append(synthetic.source.free_input)
        if synthetic.source.mechanisms and synthetic.source.unit != plan.protected.name:
            ledger.non_private_reasons.append(GENERATOR_OTHER_UNIT.format(
                generator=synthetic.source.generator, generator_unit=synthetic.source.unit, unit=plan.protected.name))
    touches_private_train = synthetic is None or config.synthetic.use != "only"
    if touches_private_train and not config.privacy.private:
        ledger.non_private_reasons.append(
            "The classifier was trained on the private data without DP-SGD (no epsilon or noise multiplier given).")
    if touches_private_train and config.privacy.private and config.privacy.replayable_noise:
        ledger.non_private_reasons.append(REPLAYABLE_NOT_PRIVATE)
    return ledger


@dataclass
class SyntheticInputs:
    """Synthetic images as model inputs (features for feature models), with their origin."""

    x: torch.Tensor
    y: torch.Tensor
    source: SyntheticSource


def _synthetic_source(config: RunConfig, data: Dataset) -> SyntheticSource | None:
    if config.synthetic.path is None:
        return None
    return load_synthetic(config.synthetic, config.data, label_name=data.label_names[0]
                          if len(data.label_names) == 1 else "", private=data)


def _synthetic_inputs(source: SyntheticSource | None, model: nn.Module, device: str) -> SyntheticInputs | None:
    if source is None:
        return None
    return SyntheticInputs(model_inputs(model, source.data.image_tensor, device=device),
                           torch.from_numpy(source.data.labels), source)


def _training_set(config: RunConfig, x_train: torch.Tensor, y_train: torch.Tensor,
                  synthetic: SyntheticInputs | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the Poisson sampler draws from: real, real + synthetic (augment) or synthetic only."""
    if synthetic is None or config.synthetic.use == "pretrain":
        return x_train, y_train
    if config.synthetic.use == "only":
        return synthetic.x, synthetic.y
    return torch.cat([x_train, synthetic.x]), torch.cat([y_train, synthetic.y])


def _center_features(net: nn.Module, x_train: torch.Tensor, plan: PrivacyPlan, checkpoint: dict | None,
                     synthetic: SyntheticInputs | None) -> Mechanism | None:
    """Set the head's feature centre once; a resumed run keeps the released one.

    With synthetic images the centre is their exact mean: no private data, no cost. The
    private release averages each protected unit's features, with secret noise.
    """
    center = find_center(net)
    if center is None:
        return None
    if synthetic is not None:
        return set_center(center, synthetic.x, noise_multiplier=None, generator=torch.Generator())
    if checkpoint is not None:  # the centre is in the checkpointed state; releasing it again would pay twice
        return Mechanism("feature_centering", plan.center_noise_multiplier, 1.0, 1) \
            if plan.center_noise_multiplier else None
    generator = secret_generator(stream=CENTRE_STREAM, replay_seed=plan.replay_seed)
    return set_center(center, x_train, noise_multiplier=plan.center_noise_multiplier, generator=generator,
                      groups=plan.protected.groups)


def _prepare_start(net: nn.Module, x_fit: torch.Tensor, plan: PrivacyPlan, ledger: PrivacyLedger,
                   config: RunConfig, checkpoint: dict | None, synthetic: SyntheticInputs | None, device: str) -> None:
    """What every candidate starts from: the feature centre (entered in the ledger, released
    once and shared by all candidates) and pretraining on synthetic images."""
    center_mechanism = _center_features(net, x_fit, plan, checkpoint, synthetic)
    if center_mechanism is not None:
        ledger.mechanisms.append(center_mechanism)
    if synthetic is not None and config.synthetic.use == "pretrain":
        if checkpoint is None:  # a resumed run restores the fine-tuned weights instead
            _pretrain(net, synthetic, config, device)
        prepare_finetune(net, finetune=config.synthetic.finetune, reinit_head=config.synthetic.reinit_head)


def _fit(net: nn.Module, x_fit: torch.Tensor, y_fit: torch.Tensor, plan: PrivacyPlan, candidate: int,
         config: RunConfig, device: str) -> PrivateTraining:
    """Optimiser and Poisson loader over the sampled units for one candidate, through the
    private-training core when private; otherwise plain training with the same loader and
    loss scaling (the returned ``engine`` is then None)."""
    net.train()
    optimizer = _make_optimizer(net, config)
    dataset, schedule, p = TensorDataset(x_fit, y_fit), plan.schedules[candidate], config.privacy
    if p.private:
        return make_private(net, optimizer, dataset, unit=plan.sampled, schedule=schedule,
                            noise_multiplier=plan.noise_multiplier, clip_norm=p.clip_norm, accountant=p.accountant,
                            grad_sample_mode=grad_sample_mode_for(config.model.name), replay_seed=plan.replay_seed,
                            device=device, num_workers=config.training.num_workers)
    return make_plain(net, optimizer, dataset, unit=plan.sampled, schedule=schedule,
                      criterion=nn.BCEWithLogitsLoss(reduction="sum"), replay_seed=plan.replay_seed,
                      num_workers=config.training.num_workers)


def _pretrain(net: nn.Module, synthetic: SyntheticInputs, config: RunConfig, device: str) -> None:
    """Non-private training on synthetic images only (no private data, no validation peeking:
    a fixed number of epochs), the same sampling and loss as a non-private run."""
    s = config.synthetic
    optimizer = _make_optimizer(net, config, lr=s.pretrain_lr)
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(synthetic.x, synthetic.y),
                                                      batch_size=config.training.batch_size))
    expected_batch = max(1, int(len(synthetic.x) / len(loader)))
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    net.train()
    for _ in tqdm(range(s.pretrain_epochs), desc="pretraining on synthetic", unit="epoch", leave=False):
        _epoch_nonprivate(net, optimizer, criterion, loader, expected_batch, config, False, device)


def _make_optimizer(net: nn.Module, config: RunConfig, *, lr: float | None = None) -> torch.optim.Optimizer:
    t = config.training
    lr = t.lr if lr is None else lr
    params = [p for p in net.parameters() if p.requires_grad]
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay)


def _fit_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> RunConfig:
    """``config`` with the largest physical batch that fits in memory (:mod:`privmed.training.memory`), then
    one step at that size; refuses, saying what one sample needs, when not even one fits."""
    try:
        plan = measure(net, x, y, private=config.privacy.private, device=device)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        _probe_physical_batch(net, x, y, config, device)  # says which physical batch to try
        raise
    requested = min(config.training.physical_batch_size, len(x))
    chosen = choose_physical_batch(plan, requested, what=f"{config.model.name} at {config.data.image_size} px "
                                                         f"({config.data.spatial_dims}D)")
    if chosen < requested:
        note = PHYSICAL_BATCH_LOWERED.format(requested=requested, available=gigabytes(plan.available),
                                             per_sample=gigabytes(plan.per_sample), chosen=chosen,
                                             logical=config.training.batch_size)
        print(f"privmed: {note}", file=sys.stderr)
        config = dataclasses.replace(config, training=dataclasses.replace(config.training,
                                                                          physical_batch_size=chosen))
    _probe_physical_batch(net, x, y, config, device)
    return config


def _out_of_memory(err: Exception) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "memory" in str(err).lower() or "allocate" in str(err).lower()


def _probe_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> None:
    """One forward/backward at the physical batch size, so an out-of-memory shows before any writing."""
    size = min(config.training.physical_batch_size, len(x))
    probe = copy.deepcopy(net).to(device)
    try:
        loss = nn.functional.binary_cross_entropy_with_logits(probe(x[:size].to(device)), y[:size].to(device))
        loss.backward()
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        raise PrivmedError(BATCH_TOO_LARGE.format(batch=size, reason=str(err).splitlines()[0][:200],
                                                  suggest=max(1, size // 4))) from None
    finally:
        del probe


# --------------------------------------------------------------------------- one epoch


def _augments(config: RunConfig, model: nn.Module) -> bool:
    """Augmentation applies to images, never to precomputed features."""
    return config.training.augment and not is_feature_model(model)


def _run_epoch(fit: PrivateTraining, schedule: Schedule, config: RunConfig, augment: bool, device: str) -> float:
    """One pass over Poisson batches, through Opacus when private; returns the mean loss."""
    if fit.engine is not None:
        return _epoch_private(fit.module, fit.optimizer, fit.criterion, fit.loader, config, augment, device)
    return _epoch_nonprivate(fit.module, fit.optimizer, fit.criterion, fit.loader, schedule.expected_batch,
                             config, augment, device)


def _keep_best(best: dict, net: nn.Module, val_auroc: float, candidate: int, epoch: int) -> dict:
    """The (candidate, epoch) with the highest validation AUROC so far."""
    if val_auroc > best["val_auroc"]:
        return {"val_auroc": val_auroc, "candidate": candidate, "epoch": epoch,
                "state": copy.deepcopy(net.state_dict())}
    return best


def _batches(batches, *, total: int | None):
    """Progress inside an epoch (a long 3D or CNN epoch is otherwise a frozen bar); off when not a terminal."""
    return tqdm(batches, desc="batches", unit="batch", total=total, leave=False, disable=None)


def _epoch_nonprivate(net, optimizer, criterion, loader, expected_batch: int, config: RunConfig, augment: bool,
                      device: str) -> float:
    """Logical Poisson batches, gradient accumulated over physical chunks, loss summed / expected batch."""
    total, count = 0.0, 0
    for xb, yb in _batches(loader, total=len(loader)):
        optimizer.zero_grad(set_to_none=False)
        for xc, yc in zip(xb.split(config.training.physical_batch_size), yb.split(config.training.physical_batch_size)):
            xc, yc = xc.to(device), yc.to(device)
            if augment:
                xc = augment_batch(xc)
            # mean over labels, sum over samples, divided by the expected batch: what Opacus computes
            loss = criterion(net(xc), yc) / (expected_batch * yc.shape[1])
            loss.backward()
            total, count = total + loss.item() * expected_batch, count + len(xc)
        optimizer.step()
    return total / count if count else float("nan")


def _epoch_private(net_dp, optimizer, criterion, loader, config: RunConfig, augment: bool, device: str) -> float:
    """DP-SGD: Opacus clips per-sample gradients, adds noise once per logical batch."""
    total, count = 0.0, 0
    with BatchMemoryManager(data_loader=loader, max_physical_batch_size=config.training.physical_batch_size,
                            optimizer=optimizer) as batches:
        for xb, yb in _batches(batches, total=None):
            xb, yb = xb.to(device), yb.to(device)
            if augment:
                xb = augment_batch(xb)
            optimizer.zero_grad()
            loss = criterion(net_dp(xb), yb)
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(xb), count + len(xb)
    return total / max(count, 1)


# --------------------------------------------------------------------------- bookkeeping


def _epsilon_so_far(ledger: PrivacyLedger, plan: PrivacyPlan, state: TrainState, fit: PrivateTraining,
                    candidate: int) -> float:
    """Epsilon spent up to now: earlier stages, finished candidates, and this candidate's steps."""
    if fit.engine is None:
        return math.inf
    steps = [*state.finished_steps, spent_steps(fit.engine)]
    sgd = [Mechanism("dp_sgd", plan.noise_multiplier, plan.schedules[c].sample_rate, n)
           for c, n in zip(range(candidate + 1), steps)]
    return epsilon_for([*ledger.mechanisms, *sgd], delta=ledger.delta, accountant=ledger.accountant)


def _mean_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])]))


def _save_checkpoint(out: Path, net, fit: PrivateTraining, state: TrainState, plan: PrivacyPlan) -> None:
    """Weights, optimiser, the accountant's history and the non-secret RNG; never the secret generators."""
    original = getattr(fit.optimizer, "original_optimizer", fit.optimizer)
    checkpoint = {
        "candidate": state.candidate,
        "epoch": state.epoch,
        "model": net.state_dict(),
        "optimizer": original.state_dict(),
        "accountant": fit.engine.accountant.state_dict() if fit.engine is not None else None,
        "torch_rng": torch.get_rng_state(),
        "best": state.best,
        "history": state.history,
        "finished_steps": state.finished_steps,
        "plan": plan.record(),
    }
    tmp = out / rundir.CHECKPOINTS / (rundir.LAST + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(out / rundir.CHECKPOINTS / rundir.LAST)


def _resume_state(checkpoint: dict | None) -> TrainState:
    """The state a checkpoint left (a finished candidate's last epoch moves on to the next candidate)."""
    if checkpoint is None:
        return TrainState()
    best = {"candidate": 0, **checkpoint["best"]}
    return TrainState(checkpoint.get("candidate", 0), checkpoint["epoch"], best, checkpoint["history"],
                      list(checkpoint.get("finished_steps", [])))


def _restore(checkpoint: dict, net, fit: PrivateTraining) -> None:
    net.load_state_dict(checkpoint["model"])
    getattr(fit.optimizer, "original_optimizer", fit.optimizer).load_state_dict(checkpoint["optimizer"])
    if fit.engine is not None:
        fit.engine.accountant.load_state_dict(checkpoint["accountant"])
    torch.set_rng_state(checkpoint["torch_rng"])


def _write_results(out: Path, net: nn.Module, inputs: dict[str, torch.Tensor], data: Dataset, config: RunConfig,
                   ledger: PrivacyLedger, best: dict, candidates: list, device: str) -> None:
    scores = {split: predict(net, x, device=device) for split, x in inputs.items()}
    frame = predictions_frame(data, scores)
    metrics = evaluate_predictions(data, scores, threshold_split="val",
                                   n_resamples=config.training.bootstrap_resamples, seed=config.training.seed)
    metrics["checkpoint"] = {"epoch": best["epoch"], "selected_by": "val_auroc", "val_auroc": best["val_auroc"]}
    if len(candidates) > 1:
        metrics["checkpoint"]["candidate"] = {k: getattr(candidates[best["candidate"]], k) for k in config.tune.grid}
    rundir.write_csv(out / rundir.PREDICTIONS, frame)
    rundir.write_json(out / rundir.METRICS, metrics)
    rundir.write_json(out / rundir.PRIVACY, ledger.to_dict())


# --------------------------------------------------------------------------- in memory (audits, shadows)


@dataclass
class FittedModel:
    """A model trained in memory by :func:`train_in_memory`, with what its training spent."""

    net: nn.Module
    ledger: PrivacyLedger
    best_epoch: int


def train_in_memory(config: RunConfig, build: Callable[[], nn.Module], x_train: torch.Tensor, y_train: torch.Tensor,
                    x_val: torch.Tensor, y_val: torch.Tensor, *, device: str = "cpu",
                    groups: np.ndarray | None = None) -> FittedModel:
    """The recipe of :func:`train` on tensors already in memory, without a run directory.

    ``build`` makes a fresh model; it is called after seeding, so the initial weights, like
    everything else that is not part of the guarantee, follow from ``config.training.seed``
    and not from the caller's RNG state (the same model in any process). ``x_*`` are the
    model's :func:`model_inputs`; ``groups`` the patient id of each training row (None:
    none known). Same unit of privacy, privacy plan (noise calibrated for these units),
    sampling, optimiser, clipping and checkpoint selection as a run, so shadow models for a
    membership audit are trained exactly as the target was.
    """
    seed_everything(config.training.seed)
    model = build()
    if config.synthetic.path is not None:
        raise PrivmedError("retraining a run that used synthetic images in memory (membership audits) is not "
                           "supported yet; audit a run trained on real data, or the generator with "
                           "`privmed audit-synthetic`.")
    net = trainable_part(model).to(device)
    p = config.privacy
    unit = resolve_unit(p.unit, groups, max_images_per_patient=p.max_images_per_patient, n=len(x_train))
    if config.tune.grid:
        raise PrivmedError("train_in_memory trains one recipe; give it a configuration without a tune section.")
    plan = _plan_privacy(config, unit, unit, [config.training], checkpoint=None,
                         has_center=find_center(net) is not None)
    ledger = _ledger(config, plan, n=len(x_train), synthetic=None)
    _prepare_start(net, x_train, plan, ledger, config, None, None, device)
    fit = _fit(net, x_train, y_train, plan, 0, config, device)
    augment = _augments(config, model)
    best = {"val_auroc": -math.inf, "candidate": 0, "epoch": config.training.epochs, "state": None}
    for epoch in range(config.training.epochs):
        net.train()
        _run_epoch(fit, plan.schedules[0], config, augment, device)
        best = _keep_best(best, net, _mean_auroc(y_val.numpy(), predict(net, x_val, device=device)), 0, epoch + 1)
    if fit.engine is not None:
        ledger.mechanisms.append(Mechanism("dp_sgd", plan.noise_multiplier, plan.schedules[0].sample_rate,
                                           spent_steps(fit.engine)))
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    return FittedModel(net.eval(), ledger, best["epoch"])
