"""The private-training core: one way to sample, clip, noise and account, for every trainer.

The classifier (:func:`privmed.training.trainer.train`), the in-memory trainer used by
audits and benchmarks, and the DP generator's discriminator all train through here:

* :func:`plan_schedule` turns the unit of privacy and the batch size into the Poisson
  sample rate and step count (over units: patients or images);
* :func:`poisson_loader` draws those batches (:class:`GroupPoissonSampler`), private or not,
  so non-private training sees the very same sampling;
* :func:`make_private` wraps model and optimiser with Opacus: per-image clipping at
  ``clip / k`` (a unit's k images sum to at most ``clip``), Gaussian noise of std
  ``noise_multiplier x clip`` per step from a secret generator, and an accountant that
  records ``(noise_multiplier, sample_rate)`` of the *unit*, not Opacus's image view.

In a multi-process run (:mod:`privmed.training.distributed`) each rank keeps its share of every
Poisson batch (:class:`RankShard`) and Opacus's ``DistributedDPOptimizer`` adds the noise once.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.data_loader import wrap_collate_with_empty
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate

from privmed.privacy.accounting import poisson_schedule
from privmed.privacy.randomness import NOISE_STREAM, SAMPLING_STREAM, secret_generator
from privmed.privacy.units import GroupPoissonSampler, PrivacyUnit

from . import distributed


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
class PrivateTraining:
    """What :func:`make_private` returns: Opacus's engine (its accountant holds the spent
    steps), the module to call, the DP optimiser, the criterion and the Poisson loader."""

    engine: PrivacyEngine
    module: nn.Module
    optimizer: DPOptimizer
    criterion: nn.Module
    loader: DataLoader
    #: an exponential moving average of the weights (:mod:`.average`), or None
    average: nn.Module | None = None

    def close(self) -> None:
        """Detach Opacus from the model (its per-sample-gradient hooks and attributes), so the same
        model can be trained again, e.g. by the next candidate of a hyper-parameter search."""
        if self.engine is not None and hasattr(self.module, "_close"):
            self.module.remove_hooks()
            self.module._close()


def make_private(net: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, *, unit: PrivacyUnit,
                 schedule: Schedule, noise_multiplier: float, clip_norm: float, accountant: str,
                 grad_sample_mode: str = "hooks", replay_seed: int | None = None, device: str = "cpu",
                 num_workers: int = 0) -> PrivateTraining:
    """DP-SGD over ``unit``: Poisson batches of units, per-image clip ``clip_norm / k``, noise
    ``noise_multiplier x clip_norm`` from a secret generator (or from ``replay_seed``),
    accounted at the unit's sample rate.

    ``clip_norm=inf`` with ``noise_multiplier=0`` is plain training through the same code.
    In a multi-process run ``net`` is wrapped for Opacus's distributed optimiser (noise on rank 0
    only, gradients summed over ranks; :mod:`privmed.training.distributed`).
    """
    k, world_size = unit.max_per_unit, distributed.current().world_size
    loader = poisson_loader(dataset, unit, schedule, generator=sampling_generator(replay_seed=replay_seed),
                            num_workers=num_workers)
    with warnings.catch_warnings():
        # Opacus warns that its csprng-based secure mode is off; privmed supplies OS-seeded generators instead
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant)
    wrapped = engine.make_private(
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
        lambda _: engine.accountant.step(noise_multiplier=noise_multiplier, sample_rate=schedule.sample_rate))
    return PrivateTraining(engine, module, dp_optimizer, criterion, dp_loader)


def make_plain(net: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, *, unit: PrivacyUnit,
               schedule: Schedule, criterion: nn.Module, replay_seed: int | None,
               num_workers: int = 0) -> PrivateTraining:
    """Non-private training over the same Poisson batches as :func:`make_private` (``engine`` None)."""
    loader = poisson_loader(dataset, unit, schedule, generator=sampling_generator(replay_seed=replay_seed),
                            num_workers=num_workers)
    return PrivateTraining(None, net, optimizer, criterion, loader)


def spent_steps(engine: PrivacyEngine | None) -> int:
    """DP-SGD steps the engine's accountant has recorded (0 without an engine)."""
    return 0 if engine is None else sum(steps for _, _, steps in engine.accountant.history)


def finite(clip_norm: float) -> float:
    """Opacus computes noise std as multiplier x clip; 0 x inf is NaN, 0 x float max is 0 (no clipping)."""
    return clip_norm if math.isfinite(clip_norm) else sys.float_info.max


def resolve_device(name: str) -> str:
    """``auto``: CUDA when available, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
