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
5. checkpoint every epoch in the classifier's format (:func:`privmed.training.checkpoint.write_checkpoint`:
   the engine's discriminator, optimiser and accountant, the generator's parts, the RNG), so a resumed
   run continues its privacy spend instead of restarting it; a grid of samples per class
   every ``grid_every`` epochs;
6. write ``generator.pt`` (the weight-averaged generator) and ``privacy.json``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
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
from privmed.privacy.distributed import resolve_device
from privmed.privacy.engine import Engine, Schedule, make_plain, make_private, plan_schedule
from privmed.training.checkpoint import restore, upgrade_checkpoint, write_checkpoint
from privmed.training.trainer import seed_everything

from .config import GeneratorConfig, generator_config_from_dict
from .diffaugment import diff_augment
from .gan import NOISE_DIM, Discriminator, Generator, ScatterDiscriminator

GENERATOR_FILE = "generator.pt"
GRIDS = "grids"
#: name of the generator's stage in every ledger that uses its images
STAGE = "generator_discriminator_dp_sgd"


@dataclass
class Gan:
    """The generator's side of training, beside the engine that trains the discriminator: the generator, its
    weight average (what is written) and optimiser, and the fixed noise of the progress grids."""

    gen: Generator
    ema: Generator
    opt_g: torch.optim.Optimizer
    fixed_z: torch.Tensor
    fixed_y: torch.Tensor

    @property
    def parts(self) -> dict:
        """What a checkpoint keeps of it (beside the engine's discriminator, optimiser and accountant)."""
        return {"generator": self.gen, "ema": self.ema, "opt_g": self.opt_g}


def train_generator(config: GeneratorConfig, *, resume: bool = False,
                    on_epoch_end: Callable[[int, dict], None] | None = None) -> Path:
    """Train a generator as ``config`` says and write its folder; returns its path."""
    out = Path(config.out)
    checkpoint = _check_out_dir(out, config, resume=resume)
    seed_everything(config.gan.seed)
    device = resolve_device(config.gan.device)
    real = load_dataset(config.data, require_splits=("train",)).split("train")  # val and test are not used
    rundir.check_folder_names([real.label_names[0]], "the data's class name, which names synth sample's folders")
    plan, schedule = plan_generator(config, real, checkpoint)
    gan, engine = _build(config, real, plan, schedule, device)

    out.mkdir(parents=True, exist_ok=True)
    (out / rundir.CHECKPOINTS).mkdir(exist_ok=True)
    rundir.write_yaml(out / rundir.CONFIG, config.to_dict())
    start, history = 0, []
    if checkpoint is not None:
        restore(checkpoint, engine, gan.parts)
        start, history = checkpoint["epoch"], checkpoint["history"]
        rundir.append_log(out, f"resumed after epoch {start} with {engine.spent_steps} discriminator DP steps spent")
    _train_epochs(out, config, gan, engine, plan, start, history, device, on_epoch_end)
    _write_generator(out, config, real, gan, engine, plan)
    return out


def _build(config: GeneratorConfig, real: Dataset, plan: PrivacyPlan, schedule: Schedule,
           device: str) -> tuple[Gan, Engine]:
    """The generator and its average, and the engine over the discriminator: DP-SGD when private, else the same
    Poisson sampling without noise."""
    g, p = config.gan, config.privacy
    gen = Generator(image_size=config.data.image_size, width=g.width).to(device)
    disc = _discriminator(config).to(device)
    opt_d = torch.optim.Adam(disc.parameters(), lr=g.lr_d, betas=(0.5, 0.999))
    images = TensorDataset(real.image_tensor * 2 - 1, torch.from_numpy(real.labels[:, 0]).long())
    if p.private:
        engine = make_private(disc, opt_d, images, unit=plan.unit, schedule=schedule,
                              noise_multiplier=plan.noise_multiplier, clip_norm=p.clip_norm, accountant=p.accountant,
                              grad_sample_mode="hooks", replay_seed=plan.replay_seed, device=device)
    else:
        engine = make_plain(disc, opt_d, images, unit=plan.unit, schedule=schedule,
                            criterion=nn.BCEWithLogitsLoss(), replay_seed=plan.replay_seed)
    gan = Gan(gen, copy.deepcopy(gen).eval().requires_grad_(False),
              torch.optim.Adam(gen.parameters(), lr=g.lr_g, betas=(0.5, 0.999)),
              torch.randn(16, NOISE_DIM, generator=torch.Generator().manual_seed(g.seed)), torch.arange(16) % 2)
    return gan, engine


def _train_epochs(out: Path, config: GeneratorConfig, gan: Gan, engine: Engine, plan: PrivacyPlan, start: int,
                  history: list, device: str, on_epoch_end: Callable[[int, dict], None] | None) -> None:
    """Epochs ``start`` to the last, each checkpointed with the engine's privacy spend."""
    g, p = config.gan, config.privacy
    steps_per_epoch = len(engine.loader)
    # progress in steps, so a long epoch moves the bar (the postfix says which epoch)
    bar = progress(desc="generator", unit="step", initial=start * steps_per_epoch, total=g.epochs * steps_per_epoch)
    for epoch in range(start, g.epochs):
        t0 = time.perf_counter()
        losses_d, losses_g = _epoch(gan, engine, config, device, first_step=epoch * steps_per_epoch,
                                    on_step=lambda: (bar.update(1), bar.set_postfix(epoch=f"{epoch + 1}/{g.epochs}",
                                                                                    refresh=False)))
        spent = shown_epsilon(plan.epsilon([plan.spent(STAGE, engine.spent_steps)]) if engine.private else math.inf,
                              private=p.private and not p.replayable_noise)
        row = {"epoch": epoch + 1, "loss_d": _mean(losses_d), "loss_g": _mean(losses_g), "epsilon": spent,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        bar.set_postfix(epoch=f"{epoch + 1}/{g.epochs}", loss_d=f"{row['loss_d']:.3f}",
                        loss_g=f"{row['loss_g']:.3f}", eps=epsilon_text(spent))
        if (epoch + 1) % g.grid_every == 0 or epoch + 1 == g.epochs:
            _write_grid(gan.ema, gan.fixed_z, gan.fixed_y, out / GRIDS / f"epoch_{epoch + 1:04d}.png", epoch + 1,
                        device)
        write_checkpoint(out, epoch=epoch + 1, engine=engine, history=history, parts=gan.parts,
                         extra={"noise_multiplier": plan.noise_multiplier})
        rundir.write_csv(out / rundir.HISTORY, pd.DataFrame(history))
        rundir.append_epoch_log(out, row)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _write_generator(out: Path, config: GeneratorConfig, real: Dataset, gan: Gan, engine: Engine,
                     plan: PrivacyPlan) -> None:
    """``generator.pt`` (the weight-averaged generator) and the ledger, sealed: what synth sample and audits read."""
    p, g = config.privacy, config.gan
    ledger = plan.start_ledger(n_private=len(real), clip_norm=p.clip_norm if p.private else math.inf)
    if p.private:
        ledger.mechanisms.append(plan.spent(STAGE, engine.spent_steps))
        if p.replayable_noise:
            ledger.non_private_reasons.append(REPLAYABLE_NOT_PRIVATE)
    else:
        ledger.non_private_reasons.append(
            f"The generator in '{out}' was trained on the private training split without DP.")
    record = {"image_size": config.data.image_size, "width": g.width, "noise_dim": NOISE_DIM,
              "class_names": [f"not_{real.label_names[0]}", real.label_names[0]],
              "positive_class": real.label_names[0], "data": config.data.path, "n_train": len(real),
              "epochs": g.epochs, "state": gan.ema.state_dict()}
    with atomic.replacing(out / GENERATOR_FILE) as tmp:
        torch.save(record, tmp)
    rundir.write_record(out, ledger.record())
    seal.seal(out, [rundir.CONFIG, GENERATOR_FILE])  # with privacy.json: what synth sample and audits read
    rundir.append_log(out, ledger.summary())


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


def _epoch(gan: Gan, engine: Engine, config: GeneratorConfig, device: str, *, first_step: int,
           on_step: Callable[[], object]) -> tuple[list[float], list[float]]:
    """One pass of the engine's step loop: each Poisson batch is one discriminator update (with DP: real and
    generated images in one batch, so one clipped, noised release), followed by one generator update through
    the discriminator. Returns the epoch's discriminator and generator losses."""
    g, disc = config.gan, engine.module
    view = diff_augment if g.diff_augment else (lambda images: images)
    losses_d, losses_g = [], []
    expected = engine.schedule.expected_batch

    def discriminator_backward(xb: torch.Tensor, yb: torch.Tensor) -> float:
        xb, yb = view(xb.to(device)), yb.to(device)
        z = torch.randn(expected, NOISE_DIM, device=device)
        y_fake = torch.randint(0, 2, (expected,), device=device)  # public prior, not the batch's labels
        with torch.no_grad():
            fake = view(gan.gen(z, y_fake))
        target = torch.cat([torch.full((len(xb),), g.real_label, device=device), torch.zeros(expected, device=device)])
        if engine.private:
            logits = disc(torch.cat([xb, fake]), torch.cat([yb, y_fake]))
        else:  # apart, so a batch statistic (gan.minibatch_std) never mixes real and generated
            logits = torch.cat([disc(xb, yb), disc(fake, y_fake)] if len(xb) else [disc(fake, y_fake)])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        losses_d.append(float(loss.detach()))
        return losses_d[-1]

    def generator_step() -> None:
        step = first_step + len(losses_g)
        losses_g.append(_generator_step(gan, disc, expected, view, device))
        _update_ema(gan.ema, gan.gen, min(g.ema, (1 + step) / (10 + step)))
        on_step()

    engine.run_epoch(discriminator_backward, after_step=generator_step)
    return losses_d, losses_g


def _generator_step(gan: Gan, disc: nn.Module, batch: int, view, device: str) -> float:
    """One generator update through the discriminator (whose per-sample gradient hooks are off: the generator's
    step reads no private data but through the released discriminator)."""
    _set_hooks(disc, enabled=False)
    disc.requires_grad_(False)
    gan.opt_g.zero_grad()
    z = torch.randn(batch, NOISE_DIM, device=device)
    y_fake = torch.randint(0, 2, (batch,), device=device)
    loss_g = nn.functional.binary_cross_entropy_with_logits(disc(view(gan.gen(z, y_fake)), y_fake),
                                                            torch.ones(batch, device=device))
    loss_g.backward()
    gan.opt_g.step()
    disc.requires_grad_(True)
    _set_hooks(disc, enabled=True)
    return float(loss_g.detach())


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
    return upgrade_checkpoint(rundir.checkpoint_to_resume(
        out, config.identity(), lambda raw: generator_config_from_dict(raw).identity(), resume=resume))
