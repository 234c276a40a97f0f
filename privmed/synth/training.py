"""``privmed synth train``: a class-conditioned GAN on the private training split, with or without DP.

Top to bottom:

1. check the output folder (fresh, or a resumable one with the same config);
2. load the training split of the data (only ``train``: validation and test patients
   never reach the generator), scale images to [-1, 1];
3. plan the privacy: Poisson sampling rate, steps, and the discriminator's noise for
   the target epsilon (the accountant's, over exactly that schedule);
4. each step, one discriminator update on a Poisson batch of real images and as many
   generated ones (through Opacus when private, in one batch: every per-sample gradient,
   real or generated, is clipped, and the sum is noised once; without DP, real and
   generated go through the discriminator separately, so a batch statistic such as
   ``gan.minibatch_std`` never mixes them), then one generator update through the
   discriminator. With ``gan.diff_augment`` the discriminator sees real and generated
   images through the same random per-sample augmentations (DiffAugment). The generator
   sees private data only through the discriminator, so its training is post-processing
   and costs no extra privacy.
   Generated images use labels drawn uniformly, never the private batch's labels;
5. checkpoint every epoch (networks, optimisers, the accountant, the RNG), so a resumed
   run continues its privacy spend instead of restarting it; a grid of samples per class
   every ``grid_every`` epochs;
6. write ``generator.pt`` (the weight-averaged generator) and ``privacy.json``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed import atomic, rundir, seal
from privmed.data.phantom import write_image_grid
from privmed.data.sources import Dataset, load_dataset
from privmed.privacy.ledger import epsilon_text, shown_epsilon
from privmed.privacy.plan import PrivacyPlan, StageSpec, make_plan, protected_unit
from privmed.privacy.randomness import REPLAYABLE_NOT_PRIVATE
from privmed.progress import progress
from privmed.training.private import Schedule, make_plain, make_private, plan_schedule, resolve_device, spent_steps
from privmed.training.trainer import seed_everything

from .config import GeneratorConfig, generator_config_from_dict
from .diffaugment import diff_augment
from .gan import NOISE_DIM, Discriminator, Generator, ScatterDiscriminator

GENERATOR_FILE = "generator.pt"
GRIDS = "grids"
#: name of the generator's stage in every ledger that uses its images
STAGE = "generator_discriminator_dp_sgd"


def train_generator(config: GeneratorConfig, *, resume: bool = False,
                    on_epoch_end: Callable[[int, dict], None] | None = None) -> Path:
    """Train a generator as ``config`` says and write its folder; returns its path.

    Over the house's 60 lines: the generator's loop (preflight, private core, epochs, checkpoint,
    ledger) read top to bottom like the trainer's before its split; splitting it is open work.
    """
    out = Path(config.out)
    checkpoint = _check_out_dir(out, config, resume=resume)
    seed_everything(config.gan.seed)
    device = resolve_device(config.gan.device)
    g = config.gan

    real = load_dataset(config.data, require_splits=("train",)).split("train")  # val and test are not used
    rundir.check_folder_names([real.label_names[0]], "the data's class name, which names synth sample's folders")
    x = real.image_tensor * 2 - 1
    y = torch.from_numpy(real.labels[:, 0]).long()
    n = len(real)
    p, private = config.privacy, config.privacy.private
    plan, schedule = plan_generator(config, real, checkpoint)
    unit, sigma, replay_seed = plan.unit, plan.noise_multiplier, plan.replay_seed

    gen = Generator(image_size=config.data.image_size, width=g.width).to(device)
    disc = _discriminator(config).to(device)
    ema = copy.deepcopy(gen).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), lr=g.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=g.lr_d, betas=(0.5, 0.999))

    if private:
        fit = make_private(disc, opt_d, TensorDataset(x, y), unit=unit, schedule=schedule, noise_multiplier=sigma,
                           clip_norm=p.clip_norm, accountant=p.accountant, grad_sample_mode="hooks",
                           replay_seed=replay_seed, device=device)
    else:  # the same Poisson sampling, without noise
        fit = make_plain(disc, opt_d, TensorDataset(x, y), unit=unit, schedule=schedule,
                         criterion=nn.BCEWithLogitsLoss(), replay_seed=replay_seed)
    engine, disc, opt_d, loader = fit.engine, fit.module, fit.optimizer, fit.loader

    out.mkdir(parents=True, exist_ok=True)
    (out / rundir.CHECKPOINTS).mkdir(exist_ok=True)
    rundir.write_yaml(out / rundir.CONFIG, config.to_dict())
    start, history = 0, []
    if checkpoint is not None:
        start, history = _restore(checkpoint, gen, disc, ema, opt_g, opt_d, engine)
        rundir.append_log(out, f"resumed after epoch {start} with {spent_steps(engine)} discriminator DP steps spent")

    fixed_z = torch.randn(16, NOISE_DIM, generator=torch.Generator().manual_seed(g.seed))
    fixed_y = torch.arange(16) % 2
    expected_batch = schedule.expected_batch
    # progress in steps, so a long epoch moves the bar (the postfix says which epoch)
    bar = progress(desc="generator", unit="step", initial=start * len(loader), total=g.epochs * len(loader))
    for epoch in range(start, g.epochs):
        t0 = time.perf_counter()
        losses = []
        for i, (xb, yb) in enumerate(loader):
            losses.append(_step(gen, disc, ema, opt_g, opt_d, xb, yb, expected_batch, config, device,
                                step=epoch * len(loader) + i))
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{g.epochs}", refresh=False)
        loss_d, loss_g = (float(np.mean(v)) for v in zip(*losses)) if losses else (math.nan, math.nan)
        spent = shown_epsilon(plan.epsilon([plan.spent(STAGE, spent_steps(engine))]) if engine is not None else math.inf,
                              private=private and not p.replayable_noise)
        row = {"epoch": epoch + 1, "loss_d": loss_d, "loss_g": loss_g, "epsilon": spent,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(epoch=f"{epoch + 1}/{g.epochs}", loss_d=f"{loss_d:.3f}", loss_g=f"{loss_g:.3f}",
                        eps=epsilon_text(spent))
        if (epoch + 1) % g.grid_every == 0 or epoch + 1 == g.epochs:
            _write_grid(ema, fixed_z, fixed_y, out / GRIDS / f"epoch_{epoch + 1:04d}.png", epoch + 1, device)
        _save_checkpoint(out, epoch + 1, gen, disc, ema, opt_g, opt_d, engine, history, sigma)
        rundir.write_csv(out / rundir.HISTORY, pd.DataFrame(history))
        rundir.append_log(out, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()

    ledger = plan.start_ledger(n_private=n, clip_norm=p.clip_norm if private else math.inf)
    if private:
        ledger.mechanisms.append(plan.spent(STAGE, spent_steps(engine)))
        if p.replayable_noise:
            ledger.non_private_reasons.append(REPLAYABLE_NOT_PRIVATE)
    else:
        ledger.non_private_reasons.append(
            f"The generator in '{out}' was trained on the private training split without DP.")
    record = {"image_size": config.data.image_size, "width": g.width, "noise_dim": NOISE_DIM,
              "class_names": [f"not_{real.label_names[0]}", real.label_names[0]],
              "positive_class": real.label_names[0], "data": config.data.path, "n_train": n,
              "epochs": g.epochs, "state": ema.state_dict()}
    with atomic.replacing(out / GENERATOR_FILE) as tmp:
        torch.save(record, tmp)
    rundir.write_record(out, ledger.record())
    seal.seal(out, [rundir.CONFIG, GENERATOR_FILE])  # with privacy.json: what synth sample and audits read
    rundir.append_log(out, ledger.summary())
    return out


def plan_generator(config: GeneratorConfig, real: Dataset, checkpoint: dict | None) -> tuple[PrivacyPlan, Schedule]:
    """The generator's privacy plan on the private split ``real``: one stage, the discriminator's DP-SGD over its
    Poisson schedule (a resumed run keeps its recorded noise); and that schedule."""
    unit = protected_unit(config.privacy, patient_ids=real.patient_ids, n=len(real))
    schedule = plan_schedule(unit, batch_size=config.gan.batch_size, epochs=config.gan.epochs)
    plan = make_plan(config.privacy, unit=unit, stages=[StageSpec(STAGE, schedule.sample_rate, schedule.steps)],
                     seed=config.gan.seed,
                     recorded_noise=checkpoint["noise_multiplier"] if checkpoint is not None else None)
    return plan, schedule


def _discriminator(config: GeneratorConfig) -> nn.Module:
    g = config.gan
    if g.discriminator == "scatter":
        return ScatterDiscriminator(image_size=config.data.image_size)
    return Discriminator(image_size=config.data.image_size, width=g.disc_width or g.width,
                         minibatch_std=g.minibatch_std)


def _step(gen: Generator, disc: nn.Module, ema: Generator, opt_g, opt_d, xb: torch.Tensor, yb: torch.Tensor,
          expected_batch: int, config: GeneratorConfig, device: str, *, step: int) -> tuple[float, float]:
    """One discriminator step (with DP: real + generated in one batch, so one clipped, noised
    update), then one generator step through the discriminator."""
    g = config.gan
    view = diff_augment if g.diff_augment else (lambda images: images)
    xb, yb = view(xb.to(device)), yb.to(device)
    z = torch.randn(expected_batch, NOISE_DIM, device=device)
    y_fake = torch.randint(0, 2, (expected_batch,), device=device)  # public prior, not the batch's labels
    with torch.no_grad():
        fake = view(gen(z, y_fake))
    opt_d.zero_grad()
    target = torch.cat([torch.full((len(xb),), g.real_label, device=device), torch.zeros(expected_batch, device=device)])
    if config.privacy.private:
        logits = disc(torch.cat([xb, fake]), torch.cat([yb, y_fake]))
    else:
        logits = torch.cat([disc(xb, yb), disc(fake, y_fake)] if len(xb) else [disc(fake, y_fake)])
    loss_d = nn.functional.binary_cross_entropy_with_logits(logits, target)
    loss_d.backward()
    opt_d.step()

    _set_hooks(disc, enabled=False)
    disc.requires_grad_(False)
    opt_g.zero_grad()
    z = torch.randn(expected_batch, NOISE_DIM, device=device)
    y_fake = torch.randint(0, 2, (expected_batch,), device=device)
    loss_g = nn.functional.binary_cross_entropy_with_logits(disc(view(gen(z, y_fake)), y_fake),
                                                            torch.ones(expected_batch, device=device))
    loss_g.backward()
    opt_g.step()
    disc.requires_grad_(True)
    _set_hooks(disc, enabled=True)
    _update_ema(ema, gen, min(g.ema, (1 + step) / (10 + step)))
    return float(loss_d.detach()), float(loss_g.detach())


def _set_hooks(disc: nn.Module, *, enabled: bool) -> None:
    """Per-sample gradient hooks off for the generator's step (it needs no per-sample grads of D)."""
    if hasattr(disc, "disable_hooks"):
        disc.enable_hooks() if enabled else disc.disable_hooks()


@torch.no_grad()
def _update_ema(ema: Generator, gen: Generator, decay: float) -> None:
    """Average of the generator's weights; the decay warms up with the step count (as TensorFlow's
    ExponentialMovingAverage with num_updates), so a short run is not dominated by its initial weights."""
    for pe, p in zip(ema.parameters(), gen.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), gen.buffers()):
        be.copy_(b)


@torch.no_grad()
def _write_grid(gen: Generator, z: torch.Tensor, y: torch.Tensor, path: Path, epoch: int, device: str) -> None:
    images = (gen(z.to(device), y.to(device)).cpu().numpy()[:, 0] + 1) / 2
    write_image_grid(images, y.numpy(), path, per_class=8, class_names=("class 0", "class 1"),
                     title=f"generator samples after epoch {epoch}")


def _check_out_dir(out: Path, config: GeneratorConfig, *, resume: bool) -> dict | None:
    return rundir.checkpoint_to_resume(out, config.identity(),
                                       lambda raw: generator_config_from_dict(raw).identity(), resume=resume)


def _save_checkpoint(out: Path, epoch: int, gen, disc, ema, opt_g, opt_d, engine, history, sigma: float) -> None:
    state = {
        "epoch": epoch,
        "generator": gen.state_dict(),
        "discriminator": getattr(disc, "_module", disc).state_dict(),
        "ema": ema.state_dict(),
        "opt_g": opt_g.state_dict(),
        "opt_d": getattr(opt_d, "original_optimizer", opt_d).state_dict(),
        "accountant": engine.accountant.state_dict() if engine is not None else None,
        "torch_rng": torch.get_rng_state(),
        "history": history,
        "noise_multiplier": sigma,
    }
    with atomic.replacing(out / rundir.CHECKPOINTS / rundir.LAST) as tmp:
        torch.save(state, tmp)


def _restore(checkpoint: dict, gen, disc, ema, opt_g, opt_d, engine) -> tuple[int, list]:
    gen.load_state_dict(checkpoint["generator"])
    getattr(disc, "_module", disc).load_state_dict(checkpoint["discriminator"])
    ema.load_state_dict(checkpoint["ema"])
    opt_g.load_state_dict(checkpoint["opt_g"])
    getattr(opt_d, "original_optimizer", opt_d).load_state_dict(checkpoint["opt_d"])
    if engine is not None:
        engine.accountant.load_state_dict(checkpoint["accountant"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return checkpoint["epoch"], checkpoint["history"]
