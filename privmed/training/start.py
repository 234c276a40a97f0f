"""What every candidate starts from: seeded non-secret randomness, synthetic images (mixed in or
pretrained on), and the head's feature centre (the phantom's, free, or released once, privately:
:mod:`privmed.training.centre`)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from privmed.config import RunConfig
from privmed.data.sources import Dataset
from privmed.errors import PrivmedError
from privmed.privacy.engine import Engine, plan_schedule, poisson_loader
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.units import resolve_unit
from privmed.progress import progress

from .centre import PHANTOM_CENTRE_CORRECTED, PHANTOM_CENTRE_INPUT, center_features, corrects_by_channel
from .epochs import make_optimizer, run_epoch
from .inputs import model_inputs
from .plan import ClassifierPlan
from .state import SyntheticInputs
from .synthetic import SyntheticSource, load_synthetic, prepare_finetune

STREAMED_AUGMENT = ("--synthetic-use augment mixes synthetic images into training data held in memory, and this data "
                    "set is read from disk per batch (data.stream). Use --synthetic-use pretrain, or --stream off "
                    "(data.stream: off) to hold it in memory.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: initialisation, augmentation and anything else that is not
    part of the privacy guarantee. Sampling and noise use secret generators instead."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

def synthetic_source(config: RunConfig, data: Dataset) -> SyntheticSource | None:
    if config.synthetic.path is None:
        return None
    return load_synthetic(config.synthetic, config.data, label_name=data.label_names[0]
                          if len(data.label_names) == 1 else "", private=data)


def synthetic_inputs(source: SyntheticSource | None, model: nn.Module, device: str, *,
                     cache: str | None = None) -> SyntheticInputs | None:
    if source is None:
        return None
    return SyntheticInputs(model_inputs(model, source.data.image_tensor, device=device, cache=cache),
                           torch.from_numpy(source.data.labels), source)


def training_set(config: RunConfig, x_train: torch.Tensor, y_train: torch.Tensor,
                  synthetic: SyntheticInputs | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What the Poisson sampler draws from: real, real + synthetic (augment) or synthetic only."""
    if synthetic is None or config.synthetic.use == "pretrain":
        return x_train, y_train
    if config.synthetic.use == "only":
        return synthetic.x, synthetic.y
    if not isinstance(x_train, torch.Tensor):
        raise PrivmedError(STREAMED_AUGMENT)
    return torch.cat([x_train, synthetic.x]), torch.cat([y_train, synthetic.y])


def prepare_start(net: nn.Module, x_fit: torch.Tensor, plan: ClassifierPlan, ledger: PrivacyLedger,
                   config: RunConfig, checkpoint: dict | None, synthetic: SyntheticInputs | None, device: str,
                   public: torch.Tensor | None = None) -> None:
    """What every candidate starts from: the feature centre (the phantom's, ``public``, or entered in
    the ledger, released once and shared by all candidates) and pretraining on synthetic images."""
    center_mechanism = center_features(net, x_fit, plan, checkpoint, synthetic, public, config.privacy.center)
    if center_mechanism is not None:
        ledger.mechanisms.append(center_mechanism)
    if public is not None:  # only given for a head with a centre and no synthetic images (public_centre_inputs)
        corrected = corrects_by_channel(config.privacy.center, synthetic=synthetic, public=public)
        ledger.free_inputs.append((PHANTOM_CENTRE_CORRECTED if corrected else PHANTOM_CENTRE_INPUT).format(n=len(public)))
    if synthetic is not None and config.synthetic.use == "pretrain":
        if checkpoint is None:  # a resumed run restores the fine-tuned weights instead
            pretrain(net, synthetic, config, device)
        prepare_finetune(net, finetune=config.synthetic.finetune, reinit_head=config.synthetic.reinit_head)

def pretrain(net: nn.Module, synthetic: SyntheticInputs, config: RunConfig, device: str) -> None:
    """Non-private training on synthetic images only (no private data, no validation peeking:
    a fixed number of epochs), the same Poisson sampling, loss and step loop as a non-private run. No guarantee
    rests on this sampling (the images are not this run's private data), so it is drawn from a public generator
    of ``training.seed``, never from the guarantee-bearing streams of :mod:`privmed.privacy.randomness`."""
    s = config.synthetic
    images = resolve_unit("image", None, max_images_per_patient=1, n=len(synthetic.x))
    schedule = plan_schedule(images, batch_size=config.training.batch_size, epochs=s.pretrain_epochs)
    loader = poisson_loader(TensorDataset(synthetic.x, synthetic.y), images, schedule,
                            generator=torch.Generator().manual_seed(config.training.seed))
    optimizer = make_optimizer(net, config, lr=s.pretrain_lr)
    engine = Engine(None, net, net, optimizer, nn.BCEWithLogitsLoss(reduction="sum"), loader, schedule)
    net.train()
    for _ in progress(range(s.pretrain_epochs), desc="pretraining on synthetic", unit="epoch"):
        run_epoch(engine, config, False, device)
