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
no clipping reproduces it exactly. For multi-process data-parallel training, the
two places to extend are :func:`_make_loader` (a distributed Poisson sampler) and
:func:`_make_private` (wrap the model in ``opacus.distributed.DifferentiallyPrivateDistributedDataParallel``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from privmed import rundir
from privmed.config import RunConfig, config_from_dict, save_config
from privmed.data.sources import SPLITS, Dataset, load_dataset
from privmed.evaluation.predictions import evaluate_predictions, predict, predictions_frame
from privmed.errors import BATCH_TOO_LARGE, PHYSICAL_BATCH_LOWERED, PrivmedError
from privmed.models import build_model, grad_sample_mode_for
from privmed.privacy.accounting import Mechanism, calibrate_noise, check_delta, default_delta, poisson_schedule
from privmed.privacy.ledger import PrivacyLedger

from .augment import augment_batch
from .inputs import find_center, is_feature_model, model_inputs, set_center, trainable_part
from .memory import choose_physical_batch, gigabytes, measure
from .synthetic import SyntheticSource, load_synthetic, prepare_finetune

EpochCallback = Callable[[int, dict], None]


@dataclass
class PrivacyPlan:
    """Noise and schedule fixed before training starts."""

    delta: float
    sample_rate: float
    steps: int
    noise_multiplier: float  # 0 for non-private
    center_noise_multiplier: float | None  # None: exact (non-private) centring or no centring


def train(config: RunConfig, *, resume: bool = False, on_epoch_end: EpochCallback | None = None) -> Path:
    """Train one model as ``config`` says and write its run directory; returns its path."""
    out = Path(config.out)
    checkpoint = _check_out_dir(out, config, resume=resume)
    seed_everything(config.training.seed)
    device = _device(config.training.device)

    data = load_dataset(config.data)
    train_data, val_data = data.split("train"), data.split("val")
    source = _synthetic_source(config, data)  # before the slow part, so a bad folder fails at once
    model = build_model(config.model.name, spatial_dims=config.data.spatial_dims, in_channels=1,
                        num_outputs=len(data.label_names), image_size=config.data.image_size,
                        norm=config.model.norm)
    inputs = {split: model_inputs(model, data.split(split).image_tensor, device=device) for split in SPLITS}
    x_train, x_val = inputs["train"], inputs["val"]
    y_train, y_val = torch.from_numpy(train_data.labels), torch.from_numpy(val_data.labels)
    net = trainable_part(model).to(device)
    synthetic = _synthetic_inputs(source, model, device)
    x_fit, y_fit = _training_set(config, x_train, y_train, synthetic)

    plan = _plan_privacy(config, n=len(train_data), n_sampled=len(x_fit), checkpoint=checkpoint,
                         has_center=find_center(net) is not None and synthetic is None)
    ledger = _ledger(config, plan, n=len(train_data), synthetic=synthetic)
    config = _fit_physical_batch(net, x_fit, y_fit, config, device)  # measured, before the run directory exists

    # ---- from here on the run directory exists
    out.mkdir(parents=True, exist_ok=True)
    (out / rundir.CHECKPOINTS).mkdir(exist_ok=True)
    save_config(config, out / rundir.CONFIG)

    engine, net_dp, optimizer, criterion, loader = _prepare(net, x_fit, y_fit, plan, ledger, config, checkpoint,
                                                            synthetic, device)

    start_epoch, best, history = 0, {"val_auroc": -math.inf, "epoch": -1, "state": None}, []
    if checkpoint is not None:
        start_epoch, best, history = _restore(checkpoint, net, optimizer, engine)
        rundir.append_log(out, f"resumed after epoch {start_epoch} with {_spent_steps(engine)} DP-SGD steps spent")

    bar = tqdm(range(start_epoch, config.training.epochs), desc="training", unit="epoch",
               initial=start_epoch, total=config.training.epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        net.train()
        loss = _run_epoch(engine, net_dp, optimizer, criterion, loader, plan, len(x_fit), config,
                          _augments(config, model), device)
        val_auroc = _mean_auroc(y_val.numpy(), predict(net, x_val, device=device))
        best = _keep_best(best, net, val_auroc, epoch + 1)
        spent = _epsilon_so_far(ledger, engine)
        row = {"epoch": epoch + 1, "loss": loss, "val_auroc": val_auroc, "epsilon": spent,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(loss=f"{loss:.4f}", val_auroc=f"{val_auroc:.3f}", eps=f"{spent:.3g}")
        _save_checkpoint(out, epoch + 1, net, optimizer, engine, best, history, plan)
        rundir.write_csv(out / rundir.HISTORY, pd.DataFrame(history))
        rundir.append_log(out, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)

    if engine is not None:
        ledger.mechanisms.append(Mechanism("dp_sgd", plan.noise_multiplier, plan.sample_rate, _spent_steps(engine)))
    net.load_state_dict(best["state"])
    torch.save({"model": best["state"], "epoch": best["epoch"]}, out / rundir.CHECKPOINTS / rundir.BEST)
    ledger.validation_choices.append(
        f"The checkpoint (epoch {best['epoch']} of {config.training.epochs}) was selected by AUROC on the private "
        f"validation split ({len(val_data)} samples), and decision thresholds were chosen on it (Youden); "
        f"these choices are not covered by the epsilon above.")
    _write_results(out, net, inputs, data, config, ledger, best, device)
    rundir.append_log(out, ledger.summary())
    return out


# --------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (sampling, noise, augmentation all draw from torch's RNG)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _check_out_dir(out: Path, config: RunConfig, *, resume: bool) -> dict | None:
    """Refuse to overwrite a run; on resume, return its last checkpoint after checking the config."""
    return rundir.checkpoint_to_resume(out, config.identity(), lambda raw: config_from_dict(raw).identity(),
                                       resume=resume)


def _plan_privacy(config: RunConfig, *, n: int, n_sampled: int, checkpoint: dict | None,
                  has_center: bool) -> PrivacyPlan:
    """Delta, sample rate, steps and the noise that reaches the classifier's target epsilon
    (its feature centring and DP-SGD together; a generator's stages are composed on top).

    ``n`` private samples set delta; ``n_sampled`` (private plus any synthetic mixed in) the
    Poisson sample rate.
    """
    p, t = config.privacy, config.training
    delta = p.delta if p.delta is not None else default_delta(n)
    sample_rate, steps = poisson_schedule(n_sampled, batch_size=t.batch_size, epochs=t.epochs)
    if not p.private:
        return PrivacyPlan(delta, sample_rate, steps, 0.0, None)
    check_delta(delta, n)
    center_sigma = p.center_noise_multiplier if has_center else None
    if checkpoint is not None:
        sigma = checkpoint["plan"]["noise_multiplier"]
    elif p.noise_multiplier is not None:
        sigma = p.noise_multiplier
    else:
        prior = [Mechanism("feature_centering", center_sigma, 1.0, 1)] if center_sigma else []
        sigma = calibrate_noise(target_epsilon=p.epsilon, delta=delta, sample_rate=sample_rate, steps=steps,
                                prior=prior, accountant=p.accountant)
    return PrivacyPlan(delta, sample_rate, steps, sigma, center_sigma)


def _ledger(config: RunConfig, plan: PrivacyPlan, *, n: int, synthetic: "SyntheticInputs | None") -> PrivacyLedger:
    """Stages spent before training (a generator) and reasons the run is not private, if any."""
    ledger = PrivacyLedger(delta=plan.delta, accountant=config.privacy.accountant,
                           clip_norm=config.privacy.clip_norm if config.privacy.private else math.inf, n_private=n)
    if synthetic is not None:
        ledger.mechanisms.extend(synthetic.source.mechanisms)
        if synthetic.source.non_private_reason:
            ledger.non_private_reasons.append(synthetic.source.non_private_reason)
        if synthetic.source.free_input:
            ledger.free_inputs.append(synthetic.source.free_input)
    touches_private_train = synthetic is None or config.synthetic.use != "only"
    if touches_private_train and not config.privacy.private:
        ledger.non_private_reasons.append(
            "The classifier was trained on the private data without DP-SGD (no epsilon or noise multiplier given).")
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


def _center_features(net: nn.Module, x_train: torch.Tensor, plan: PrivacyPlan, config: RunConfig,
                     checkpoint: dict | None, synthetic: SyntheticInputs | None) -> Mechanism | None:
    """Set the head's feature centre once; a resumed run keeps the released one.

    With synthetic images the centre is their exact mean: no private data, no cost.
    """
    center = find_center(net)
    if center is None:
        return None
    if synthetic is not None:
        return set_center(center, synthetic.x, noise_multiplier=None, generator=torch.Generator())
    if checkpoint is not None:  # the centre is in the checkpointed state; releasing it again would pay twice
        return Mechanism("feature_centering", plan.center_noise_multiplier, 1.0, 1) \
            if plan.center_noise_multiplier else None
    generator = torch.Generator().manual_seed(config.training.seed + 7919)
    return set_center(center, x_train, noise_multiplier=plan.center_noise_multiplier, generator=generator)


def _prepare(net: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, plan: PrivacyPlan, ledger: PrivacyLedger,
             config: RunConfig, checkpoint: dict | None, synthetic: SyntheticInputs | None, device: str):
    """Feature centre (entered in the ledger), pretraining on synthetic images, optimiser,
    Poisson loader, and Opacus when private.

    Returns ``(engine or None, module to call, optimizer, criterion, loader)``.
    """
    center_mechanism = _center_features(net, x_train, plan, config, checkpoint, synthetic)
    if center_mechanism is not None:
        ledger.mechanisms.append(center_mechanism)
    if synthetic is not None and config.synthetic.use == "pretrain":
        if checkpoint is None:  # a resumed run restores the fine-tuned weights instead
            _pretrain(net, synthetic, config, device)
        prepare_finetune(net, finetune=config.synthetic.finetune, reinit_head=config.synthetic.reinit_head)
    optimizer = _make_optimizer(net, config)
    loader = _make_loader(x_train, y_train, config)
    if config.privacy.private:
        return _make_private(net, optimizer, loader, plan, config)
    return None, net, optimizer, nn.BCEWithLogitsLoss(reduction="sum"), loader


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


def _make_loader(x: torch.Tensor, y: torch.Tensor, config: RunConfig) -> DataLoader:
    """Poisson-sampled logical batches (expected size ``batch_size``), private or not.
    Mixed real + synthetic sets are sampled as one set: every real sample with the same rate."""
    loader = DataLoader(TensorDataset(x, y), batch_size=config.training.batch_size,
                        num_workers=config.training.num_workers)
    return loader if config.privacy.private else DPDataLoader.from_data_loader(loader)


def _make_private(net, optimizer, loader, plan: PrivacyPlan, config: RunConfig):
    """Wrap model, optimizer and loader with Opacus; Poisson sampling, the model's fastest correct mode."""
    engine = PrivacyEngine(accountant=config.privacy.accountant)
    mode = grad_sample_mode_for(config.model.name)
    wrapped = engine.make_private(module=net, optimizer=optimizer, data_loader=loader,
                                  criterion=nn.BCEWithLogitsLoss(), noise_multiplier=plan.noise_multiplier,
                                  max_grad_norm=_finite(config.privacy.clip_norm), poisson_sampling=True,
                                  grad_sample_mode=mode)
    if mode == "ghost":
        net_dp, dp_optimizer, criterion, dp_loader = wrapped
    else:
        (net_dp, dp_optimizer, dp_loader), criterion = wrapped, nn.BCEWithLogitsLoss()
    return engine, net_dp, dp_optimizer, criterion, dp_loader


def _finite(clip_norm: float) -> float:
    """Opacus computes noise std as multiplier x clip; 0 x inf is NaN, 0 x float max is 0 (no clipping)."""
    return clip_norm if math.isfinite(clip_norm) else sys.float_info.max


def _fit_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> RunConfig:
    """``config`` with the largest physical batch that fits in memory (:mod:`privmed.training.memory`), then
    one step at that size; refuses, saying what one sample needs, when not even one fits."""
    plan = measure(net, x, y, private=config.privacy.private, device=device)
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


def _probe_physical_batch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, config: RunConfig, device: str) -> None:
    """One forward/backward at the physical batch size, so an out-of-memory shows before any writing."""
    size = min(config.training.physical_batch_size, len(x))
    probe = copy.deepcopy(net).to(device)
    try:
        loss = nn.functional.binary_cross_entropy_with_logits(probe(x[:size].to(device)), y[:size].to(device))
        loss.backward()
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if "memory" not in str(err).lower() and "allocate" not in str(err).lower():
            raise
        raise PrivmedError(BATCH_TOO_LARGE.format(batch=size, reason=str(err).splitlines()[0][:200],
                                                  suggest=max(1, size // 4))) from None
    finally:
        del probe


# --------------------------------------------------------------------------- one epoch


def _augments(config: RunConfig, model: nn.Module) -> bool:
    """Augmentation applies to images, never to precomputed features."""
    return config.training.augment and not is_feature_model(model)


def _run_epoch(engine, net_dp, optimizer, criterion, loader, plan: PrivacyPlan, n_train: int, config: RunConfig,
               augment: bool, device: str) -> float:
    """One pass over Poisson batches, through Opacus when ``engine`` is set; returns the mean loss."""
    if engine is not None:
        return _epoch_private(net_dp, optimizer, criterion, loader, config, augment, device)
    expected_batch = max(1, int(plan.sample_rate * n_train))  # as Opacus's DPOptimizer
    return _epoch_nonprivate(net_dp, optimizer, criterion, loader, expected_batch, config, augment, device)


def _keep_best(best: dict, net: nn.Module, val_auroc: float, epoch: int) -> dict:
    """The checkpoint with the highest validation AUROC so far."""
    if val_auroc > best["val_auroc"]:
        return {"val_auroc": val_auroc, "epoch": epoch, "state": copy.deepcopy(net.state_dict())}
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


def _spent_steps(engine: PrivacyEngine | None) -> int:
    return 0 if engine is None else sum(steps for _, _, steps in engine.accountant.history)


def _epsilon_so_far(ledger: PrivacyLedger, engine: PrivacyEngine | None) -> float:
    if engine is None:
        return math.inf
    sgd = [Mechanism("dp_sgd", s, q, n) for s, q, n in engine.accountant.history]
    return PrivacyLedger(ledger.delta, ledger.accountant, ledger.clip_norm, ledger.n_private,
                         [*ledger.mechanisms, *sgd]).epsilon


def _mean_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(np.mean([roc_auc_score(y[:, j], scores[:, j]) for j in range(y.shape[1])]))


def _save_checkpoint(out: Path, epoch: int, net, optimizer, engine, best, history, plan: PrivacyPlan) -> None:
    original = getattr(optimizer, "original_optimizer", optimizer)
    state = {
        "epoch": epoch,
        "model": net.state_dict(),
        "optimizer": original.state_dict(),
        "accountant": engine.accountant.state_dict() if engine is not None else None,
        "torch_rng": torch.get_rng_state(),
        "best": best,
        "history": history,
        "plan": plan.__dict__,
    }
    tmp = out / rundir.CHECKPOINTS / (rundir.LAST + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / rundir.CHECKPOINTS / rundir.LAST)


def _restore(checkpoint: dict, net, optimizer, engine) -> tuple[int, dict, list]:
    net.load_state_dict(checkpoint["model"])
    getattr(optimizer, "original_optimizer", optimizer).load_state_dict(checkpoint["optimizer"])
    if engine is not None:
        engine.accountant.load_state_dict(checkpoint["accountant"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return checkpoint["epoch"], checkpoint["best"], checkpoint["history"]


def _write_results(out: Path, net: nn.Module, inputs: dict[str, torch.Tensor], data: Dataset, config: RunConfig,
                   ledger: PrivacyLedger, best: dict, device: str) -> None:
    scores = {split: predict(net, x, device=device) for split, x in inputs.items()}
    frame = predictions_frame(data, scores)
    metrics = evaluate_predictions(data, scores, threshold_split="val",
                                   n_resamples=config.training.bootstrap_resamples, seed=config.training.seed)
    metrics["checkpoint"] = {"epoch": best["epoch"], "selected_by": "val_auroc", "val_auroc": best["val_auroc"]}
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
                    x_val: torch.Tensor, y_val: torch.Tensor, *, device: str = "cpu") -> FittedModel:
    """The recipe of :func:`train` on tensors already in memory, without a run directory.

    ``build`` makes a fresh model; it is called after seeding, so the initial weights, like
    everything else, follow from ``config.training.seed`` and not from the caller's RNG state
    (the same model in any process). ``x_*`` are the model's :func:`model_inputs`. Same
    privacy plan (noise calibrated for ``len(x_train)`` samples), sampling, optimiser,
    clipping and checkpoint selection as a run, so shadow models for a membership audit are
    trained exactly as the target was.
    """
    seed_everything(config.training.seed)
    model = build()
    if config.synthetic.path is not None:
        raise PrivmedError("retraining a run that used synthetic images in memory (membership audits) is not "
                           "supported yet; audit a run trained on real data, or the generator with "
                           "`privmed audit-synthetic`.")
    net = trainable_part(model).to(device)
    plan = _plan_privacy(config, n=len(x_train), n_sampled=len(x_train), checkpoint=None,
                         has_center=find_center(net) is not None)
    ledger = _ledger(config, plan, n=len(x_train), synthetic=None)
    engine, net_dp, optimizer, criterion, loader = _prepare(net, x_train, y_train, plan, ledger, config, None,
                                                            None, device)
    augment = _augments(config, model)
    best = {"val_auroc": -math.inf, "epoch": config.training.epochs, "state": None}
    for epoch in range(config.training.epochs):
        net.train()
        _run_epoch(engine, net_dp, optimizer, criterion, loader, plan, len(x_train), config, augment, device)
        best = _keep_best(best, net, _mean_auroc(y_val.numpy(), predict(net, x_val, device=device)), epoch + 1)
    if engine is not None:
        ledger.mechanisms.append(Mechanism("dp_sgd", plan.noise_multiplier, plan.sample_rate, _spent_steps(engine)))
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    return FittedModel(net.eval(), ledger, best["epoch"])
