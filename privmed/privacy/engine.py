"""The private-training engine: one way to sample, clip, noise, step and account, for every trainer.

The classifier (:func:`privmed.training.trainer.train`), its in-memory recipe (audits' shadow models) and
the DP generator's discriminator (:func:`privmed.synth.training.train_generator`) all train through here:

* :func:`plan_schedule` turns the unit of privacy and the batch size into the Poisson sample rate and step
  count (over units: patients or images);
* :func:`poisson_loader` draws those batches (:class:`~privmed.privacy.units.GroupPoissonSampler`), private
  or not, so non-private training sees the very same sampling;
* :func:`make_private` wraps model and optimiser with Opacus: per-image clipping at ``clip / k`` (a unit's
  k images sum to at most ``clip``), Gaussian noise of std ``noise_multiplier x clip`` per step from a secret
  generator, and an accountant that records ``(noise_multiplier, sample_rate)`` of the *unit*, not Opacus's
  image view; :func:`make_plain` is the same sampling without DP;
* :meth:`Engine.step` takes one Poisson batch, in physical chunks that fit in memory, to one optimiser step
  (one noised release when private; an empty batch is its noise alone), and :meth:`Engine.run_epoch`, the one
  step loop of every trainer, takes every batch of an epoch so;
* :meth:`Engine.state_dict` is what a checkpoint keeps of it (weights, optimiser, the accountant's history,
  the weight average), never the secret generators.

In a multi-process run (:mod:`privmed.privacy.distributed`) each rank keeps its share of every Poisson batch
(:class:`RankShard`) and Opacus's ``DistributedDPOptimizer`` adds the noise once.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from opacus import PrivacyEngine
from opacus.data_loader import wrap_collate_with_empty
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from . import distributed
from .accounting import poisson_schedule
from .randomness import NOISE_STREAM, SAMPLING_STREAM, secret_generator
from .units import GroupPoissonSampler, PrivacyUnit

#: ``backward(x, y)`` of one physical chunk: runs the model and ``loss.backward()``, returns the chunk's loss
Backward = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass(frozen=True)
class Schedule:
    """Poisson sampling of units: rate, batches per epoch, total steps, and the expected
    number of images in a logical batch (what losses are divided by)."""

    sample_rate: float
    steps_per_epoch: int
    steps: int
    expected_batch: int


def plan_schedule(unit: PrivacyUnit, *, batch_size: int, epochs: int) -> Schedule:
    """``epochs`` epochs of Poisson batches of expected size ``batch_size`` images.

    An epoch is 1 / sample_rate steps over the images units can contribute (sum of
    min(images, k)), as Opacus's DPDataLoader does over samples; for the image unit this is
    exactly :func:`~privmed.privacy.accounting.poisson_schedule` over N images.
    """
    contributions = unit.contributions
    sample_rate, steps = poisson_schedule(contributions, batch_size=batch_size, epochs=epochs)
    steps_per_epoch = round(1 / sample_rate)
    return Schedule(sample_rate, steps_per_epoch, steps, max(1, int(sample_rate * contributions)))


class RankShard(Sampler[list[int]]):
    """This rank's share of each Poisson batch: the rows of units ``u`` with ``u mod world_size == rank``.

    Whether unit ``u`` is in a step's batch is decided by its own rank's (independent, secret)
    generator alone, so the union over ranks is one Poisson sample of units at the sampler's rate.
    Every rank draws for all units and keeps its own: ranks sharing one replay seed (a replayable,
    not-private run) then together yield exactly the one-process batches.
    """

    def __init__(self, sampler: GroupPoissonSampler, *, rank: int, world_size: int) -> None:
        self.sampler = sampler
        self.mine = torch.from_numpy(sampler.unit.groups % world_size == rank)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield [i for i in batch if self.mine[i]]


def poisson_loader(dataset: Dataset, unit: PrivacyUnit, schedule: Schedule, *, generator: torch.Generator,
                   num_workers: int = 0) -> DataLoader:
    """Poisson batches of units from ``dataset`` (rows in the order of ``unit.groups``), this rank's share
    of them in a multi-process run; empty batches come out as zero-length tensors, as from Opacus's
    DPDataLoader."""
    first = dataset[0]
    sampler = GroupPoissonSampler(unit, sample_rate=schedule.sample_rate, steps_per_epoch=schedule.steps_per_epoch,
                                  generator=generator)
    ranks = distributed.current()
    if ranks.world_size > 1:
        sampler = RankShard(sampler, rank=ranks.rank, world_size=ranks.world_size)
    collate = wrap_collate_with_empty(collate_fn=default_collate, sample_empty_shapes=[(0, *x.shape) for x in first],
                                      dtypes=[x.dtype for x in first])
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)


def sampling_generator(*, replay_seed: int | None) -> torch.Generator:
    """The generator Poisson batches are drawn with: secret, or from ``replay_seed``."""
    return secret_generator(stream=SAMPLING_STREAM, replay_seed=replay_seed)


@dataclass
class Engine:
    """One model trained over Poisson batches of units: by DP-SGD through Opacus (``opacus`` holds the
    accountant), or plainly over the very same batches (``opacus`` None).

    ``net`` is the caller's model, ``module`` what to call (Opacus's wrapper of it when private),
    ``optimizer`` the DP optimiser when private, ``criterion`` the loss to use, ``loader`` the batches.
    """

    opacus: PrivacyEngine | None
    net: nn.Module
    module: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    loader: DataLoader
    schedule: Schedule
    #: an exponential moving average of the weights (:mod:`privmed.training.average`), or None
    average: nn.Module | None = None

    @property
    def private(self) -> bool:
        """True when the steps are DP-SGD's (clipped, noised, accounted)."""
        return self.opacus is not None

    @property
    def spent_steps(self) -> int:
        """DP-SGD steps the accountant has recorded (0 without DP)."""
        return 0 if self.opacus is None else sum(steps for _, _, steps in self.opacus.accountant.history)

    def run_epoch(self, backward: Backward, *, physical_batch_size: int | None = None,
                  after_step: Callable[[], None] | None = None) -> float:
        """One pass over the Poisson batches, each one :meth:`step`: the one step loop of every trainer; returns
        the mean loss per image. ``after_step`` runs after each step (e.g. a generator's own update, a progress
        bar)."""
        total, count = 0.0, 0
        for xb, yb in self.loader:
            loss = self.step(xb, yb, backward, physical_batch_size=physical_batch_size)
            total, count = total + loss * len(xb), count + len(xb)
            if after_step is not None:
                after_step()
        return total / count if count else float("nan")

    def step(self, xb: torch.Tensor, yb: torch.Tensor, backward: Backward, *,
             physical_batch_size: int | None = None) -> float:
        """One Poisson batch, one optimiser step; returns its mean loss per image (0 for an empty batch).

        The batch is cut into chunks of at most ``physical_batch_size`` rows (None: whole) and ``backward`` runs on
        each. DP-SGD: Opacus clips every per-sample gradient, sums the chunks and adds the noise once, accounted
        as one step (an empty batch is its noise alone); plain training sums the chunks' gradients."""
        if len(xb) == 0 and self.private:
            self._noise_only_step()
            return 0.0
        chunks = max(1, math.ceil(len(xb) / (physical_batch_size or max(len(xb), 1))))
        total = 0.0
        for i, (xc, yc) in enumerate(zip(xb.tensor_split(chunks), yb.tensor_split(chunks))):
            self._zero_grad(first=i == 0)
            total += backward(xc, yc) * len(xc)
            self._release(last=i == chunks - 1)
        return total / len(xb) if len(xb) else 0.0

    def _zero_grad(self, *, first: bool) -> None:
        # DP: Opacus keeps the clipped sum of a skipped chunk (summed_grad) and clears its per-sample gradients;
        # plain: gradients accumulate over the logical batch's chunks
        if self.private or first:
            self.optimizer.zero_grad()

    def _release(self, *, last: bool) -> None:
        if self.private:  # as Opacus's BatchMemoryManager: clip and sum every chunk, release at the last
            self.optimizer.signal_skip_step(do_skip=not last)
            self.optimizer.step()
        elif last:
            self.optimizer.step()

    def _noise_only_step(self) -> None:
        """The DP-SGD step of an empty Poisson batch (no unit sampled): no gradient, only the Gaussian noise,
        and the accountant's step as for any other, which is what Opacus does with the empty per-sample
        gradients its hooks give such a batch. Expanded weights cannot run a model on zero samples, so the
        empty per-sample gradients are set here and the model is not called."""
        self.optimizer.zero_grad()
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        self.optimizer.signal_skip_step(do_skip=False)
        self.optimizer.step()

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the weights, the optimiser, the accountant's history and the weight average;
        never the secret generators (a resumed run draws fresh ones)."""
        return {"module": self.net.state_dict(), "optimizer": _original(self.optimizer).state_dict(),
                "accountant": self.opacus.accountant.state_dict() if self.private else None,
                "average": self.average.state_dict() if self.average is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`: the privacy spent so far stays spent."""
        self.net.load_state_dict(state["module"])
        _original(self.optimizer).load_state_dict(state["optimizer"])
        if self.private:
            self.opacus.accountant.load_state_dict(state["accountant"])
        if self.average is not None and state.get("average") is not None:
            self.average.load_state_dict(state["average"])

    def close(self) -> None:
        """Detach Opacus from the model (its per-sample-gradient hooks and attributes), so the same
        model can be trained again, e.g. by the next candidate of a hyper-parameter search."""
        if self.private and hasattr(self.module, "_close"):
            self.module.remove_hooks()
            self.module._close()


def _original(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "original_optimizer", optimizer)


def make_private(net: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, *, unit: PrivacyUnit,
                 schedule: Schedule, noise_multiplier: float, clip_norm: float, accountant: str,
                 grad_sample_mode: str = "hooks", replay_seed: int | None = None, device: str = "cpu",
                 num_workers: int = 0) -> Engine:
    """DP-SGD over ``unit``: Poisson batches of units, per-image clip ``clip_norm / k``, noise
    ``noise_multiplier x clip_norm`` from a secret generator (or from ``replay_seed``),
    accounted at the unit's sample rate.

    ``clip_norm=inf`` with ``noise_multiplier=0`` is plain training through the same code.
    In a multi-process run ``net`` is wrapped for Opacus's distributed optimiser (noise on rank 0
    only, gradients summed over ranks; :mod:`privmed.privacy.distributed`).
    """
    k, world_size = unit.max_per_unit, distributed.current().world_size
    loader = poisson_loader(dataset, unit, schedule, generator=sampling_generator(replay_seed=replay_seed),
                            num_workers=num_workers)
    with warnings.catch_warnings():
        # Opacus warns that its csprng-based secure mode is off; privmed supplies OS-seeded generators instead
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        opacus = PrivacyEngine(accountant=accountant)
    wrapped = opacus.make_private(
        module=distributed.wrap(net), optimizer=optimizer, data_loader=loader, criterion=nn.BCEWithLogitsLoss(),
        noise_multiplier=noise_multiplier * k, max_grad_norm=finite(clip_norm) / k, poisson_sampling=False,
        grad_sample_mode=grad_sample_mode,
        noise_generator=secret_generator(stream=NOISE_STREAM, replay_seed=replay_seed, device=device))
    if grad_sample_mode == "ghost":
        module, dp_optimizer, criterion, dp_loader = wrapped
    else:
        (module, dp_optimizer, dp_loader), criterion = wrapped, nn.BCEWithLogitsLoss()
    if hasattr(module, "forbid_grad_accumulation"):
        module.forbid_grad_accumulation()  # as Opacus does under Poisson sampling
    dp_optimizer.expected_batch_size = schedule.expected_batch / world_size  # per rank, as Opacus sets it
    dp_optimizer.secure_mode = True  # Opacus's floating-point-safe Gaussian sampling (needs no csprng)
    dp_optimizer.attach_step_hook(
        lambda _: opacus.accountant.step(noise_multiplier=noise_multiplier, sample_rate=schedule.sample_rate))
    return Engine(opacus, net, module, dp_optimizer, criterion, dp_loader, schedule)


def make_plain(net: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, *, unit: PrivacyUnit,
               schedule: Schedule, criterion: nn.Module, replay_seed: int | None,
               num_workers: int = 0) -> Engine:
    """Non-private training over the same Poisson batches as :func:`make_private` (no accountant)."""
    loader = poisson_loader(dataset, unit, schedule, generator=sampling_generator(replay_seed=replay_seed),
                            num_workers=num_workers)
    return Engine(None, net, net, optimizer, criterion, loader, schedule)


def finite(clip_norm: float) -> float:
    """Opacus computes noise std as multiplier x clip; 0 x inf is NaN, 0 x float max is 0 (no clipping)."""
    return clip_norm if math.isfinite(clip_norm) else sys.float_info.max
