"""What every candidate starts from: seeded non-secret randomness, synthetic images (mixed in or
pretrained on), and the head's feature centre (the phantom's, free, or released once, privately)."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
import torch
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from privmed.config import RunConfig
from privmed.data.phantom import PhantomSpec, generate_phantom
from privmed.data.sources import Dataset
from privmed.errors import PrivmedError
from privmed.models.scatter import ScatterFeatures
from privmed.privacy.accounting import Mechanism
from privmed.privacy.ledger import PrivacyLedger
from privmed.privacy.randomness import CENTRE_STREAM, secret_generator
from privmed.progress import progress

from .epochs import epoch_nonprivate, make_optimizer
from .inputs import CENTRE_STAGE, find_center, model_inputs, set_center, set_center_by_channel, trainable_part
from .plan import ClassifierPlan
from .state import SyntheticInputs
from .synthetic import SyntheticSource, load_synthetic, prepare_finetune

#: phantom patches whose mean features centre a feature model's head (``privacy.center``: phantom)
PHANTOM_CENTRE_IMAGES = 1000
PHANTOM_CENTRE_INPUT = ("The head's feature centre is the mean features of {n:,} phantom patches (drawn by a program, "
                        "no patient data), so it costs no privacy")
PHANTOM_CENTRE_CORRECTED = ("The mean features of {n:,} phantom patches (drawn by a program, no patient data, free) are "
                            "where the head's feature centre starts; its correction by the training data's per-channel "
                            "mean is not free: it is the feature_centering stage, counted in epsilon")
PHANTOM_CENTRE_SHAPE = ("privacy.center 'phantom' centres the head with the phantom, which draws one-channel 2D "
                        "patches, and this model takes {channels}-channel images; use privacy.center 'channels' (the "
                        "default) or 'private', which release the training mean privately for such images.")
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


def public_centre_inputs(model: nn.Module, config: RunConfig, *, device: str = "cpu") -> torch.Tensor | None:
    """The features of :data:`PHANTOM_CENTRE_IMAGES` phantom patches at the front end's image size, whose mean
    is the head's centre (``privacy.center`` phantom, or channels / auto where the model takes one-channel images);
    None when the centre is released from the private data instead (or the model has none)."""
    source = config.privacy.center
    front = next((m for m in model.modules() if isinstance(m, ScatterFeatures)), None)
    if source == "private" or front is None or find_center(trainable_part(model)) is None:
        return None
    if front.in_channels != 1:
        if source == "phantom":
            raise PrivmedError(PHANTOM_CENTRE_SHAPE.format(channels=front.in_channels))
        return None
    return model_inputs(model, phantom_centre_images(front.image_size), device=device,
                        cache=config.training.feature_cache)


def phantom_centre_images(image_size: int) -> torch.Tensor:
    """The :data:`PHANTOM_CENTRE_IMAGES` phantom patches (N, 1, H, W) of the centre: the same fixed draw every time,
    drawn once per process (a few seconds at 128 px; an audit's shadows ask for it once each)."""
    return torch.from_numpy(_phantom_centre_draw(image_size).copy()).unsqueeze(1)


@functools.lru_cache(maxsize=2)
def _phantom_centre_draw(image_size: int) -> np.ndarray:
    images, _ = generate_phantom(PhantomSpec(n_samples=PHANTOM_CENTRE_IMAGES, image_size=image_size))
    images.flags.writeable = False
    return images


def corrects_by_channel(source: str, *, synthetic: SyntheticInputs | None, public: torch.Tensor | None) -> bool:
    """Whether the phantom's centre (``public``) is corrected by the private per-channel release: ``privacy.center``
    (``source``) asks for it, and there is a phantom centre to correct (none with synthetic images)."""
    return source == "channels" and synthetic is None and public is not None


def releases_centre(net: nn.Module, *, synthetic: SyntheticInputs | None, public: torch.Tensor | None,
                    source: str) -> bool:
    """Whether the head's centre is released from the private data (a stage :func:`privmed.training.plan.plan_privacy` must plan for):
    the head has one, synthetic images do not give it, and the phantom's features (``public``) do not give it
    alone (:func:`corrects_by_channel`), as :func:`center_features` then decides."""
    return find_center(net) is not None and synthetic is None and (
        public is None or corrects_by_channel(source, synthetic=synthetic, public=public))


def center_features(net: nn.Module, x_train: torch.Tensor, plan: ClassifierPlan, checkpoint: dict | None,
                     synthetic: SyntheticInputs | None, public: torch.Tensor | None, source: str) -> Mechanism | None:
    """Set the head's feature centre once; a resumed run keeps the released one.

    With synthetic images the centre is their exact mean, and with ``public`` (the phantom's
    features, :func:`public_centre_inputs`) its mean: no private data, no cost, unless ``source``
    (``privacy.center``) is ``channels``, which corrects that mean by the private per-channel
    mean (:func:`set_center_by_channel`). Otherwise the private release averages each protected
    unit's features. Both releases with secret noise.
    """
    center = find_center(net)
    if center is None:
        return None
    by_channel = corrects_by_channel(source, synthetic=synthetic, public=public)
    if synthetic is not None or (public is not None and not by_channel):
        given = synthetic.x if synthetic is not None else public
        return set_center(center, given, noise_multiplier=None)
    if checkpoint is not None:  # the centre is in the checkpointed state; releasing it again would pay twice
        return Mechanism(CENTRE_STAGE, plan.center_noise_multiplier, 1.0, 1) \
            if plan.center_noise_multiplier else None
    generator = secret_generator(stream=CENTRE_STREAM, replay_seed=plan.replay_seed)
    if by_channel and plan.center_noise_multiplier is not None:  # non-private: the exact mean below
        return set_center_by_channel(center, x_train, base=public.flatten(1).mean(0),
                                     noise_multiplier=plan.center_noise_multiplier,
                                     generator=generator, groups=plan.protected.groups)
    return set_center(center, x_train, noise_multiplier=plan.center_noise_multiplier, generator=generator,
                      groups=plan.protected.groups)


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
    a fixed number of epochs), the same sampling and loss as a non-private run."""
    s = config.synthetic
    optimizer = make_optimizer(net, config, lr=s.pretrain_lr)
    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(synthetic.x, synthetic.y),
                                                      batch_size=config.training.batch_size))
    expected_batch = max(1, int(len(synthetic.x) / len(loader)))
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    net.train()
    for _ in progress(range(s.pretrain_epochs), desc="pretraining on synthetic", unit="epoch"):
        epoch_nonprivate(net, optimizer, criterion, loader, expected_batch, config, False, device)
