"""The head's feature centre: where it comes from, how it is released, and its stage in the privacy plan.

A feature model's head (scattering front end + linear head) may start with a :class:`FeatureCenter` layer,
which subtracts a centre from the features. The centre (the mean feature vector of the training set) makes the
linear problem well conditioned for DP-SGD, but it is a statistic of private data, so it is released through
the Gaussian mechanism and accounted as its own stage (``feature_centering``, :data:`CENTRE_STAGE`): all of it
(:func:`set_center`), or a public centre corrected by its per-channel mean (:func:`set_center_by_channel`).
The public centre is the mean features of :data:`PHANTOM_CENTRE_IMAGES` phantom patches
(:func:`public_centre_inputs`: drawn by a program, no patient data, free); with synthetic images the centre is
their exact mean. :func:`center_features` decides once per run, and :func:`releases_centre` tells the privacy
plan (:func:`privmed.training.plan.plan_privacy`) whether the centre is a stage it must declare.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from privmed.config import RunConfig
from privmed.data.phantom import PhantomSpec, generate_phantom
from privmed.errors import PrivmedError
from privmed.models.scatter import FeatureCenter, ScatterFeatures
from privmed.privacy.accounting import Mechanism
from privmed.privacy.mechanisms import gaussian_release
from privmed.privacy.randomness import CENTRE_STREAM, secret_generator

from .dp_head import CENTRE_STAGE, clip_rows
from .inputs import model_inputs, trainable_part
from .plan import ClassifierPlan
from .state import SyntheticInputs

__all__ = ["CENTRE_STAGE", "CHANNEL_BOUND_FRACTION", "FeatureCenter", "PHANTOM_CENTRE_IMAGES", "center_features",
           "corrects_by_channel", "find_center", "phantom_centre_images", "public_centre_inputs", "releases_centre",
           "set_center", "set_center_by_channel"]

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


def find_center(head: nn.Module) -> FeatureCenter | None:
    """The head's :class:`FeatureCenter`, if it has one."""
    return next((m for m in head.modules() if isinstance(m, FeatureCenter)), None)


@torch.no_grad()
def set_center(center: FeatureCenter, features: torch.Tensor, *, noise_multiplier: float | None,
               generator: torch.Generator | None = None, groups: np.ndarray | None = None) -> Mechanism | None:
    """Set the centre to the training-feature mean; privately when ``noise_multiplier`` is given (then
    ``generator``, a secret one, is required; the exact mean draws nothing).

    Private release over the unit of privacy: each sample's flattened feature vector is
    clipped to norm ``sqrt(D)`` (the norm per-sample-normalised features already have),
    each unit (``groups[i]``: a patient, or by default each image) contributes the mean of
    its clipped vectors (norm at most ``sqrt(D)``: the sensitivity, whatever the unit's
    image count), the sum over units gets Gaussian noise of std ``noise_multiplier * sqrt(D)``
    from ``generator`` (a secret one, :mod:`privmed.privacy.randomness`), and is divided by
    the number of units (treated as public, as Opacus does). Returns the accounted mechanism.
    """
    flat = features.flatten(1).double()
    d = flat.shape[1]
    if noise_multiplier is None:
        center.center.copy_(flat.mean(0).float())
        return None
    if generator is None:
        raise ValueError("a private centre draws its noise from a secret generator "
                         "(privmed.privacy.randomness.secret_generator); none was given")
    mean, mechanism = _noisy_unit_mean(flat, bound=math.sqrt(d), noise_multiplier=noise_multiplier,
                                       generator=generator, groups=groups)
    center.center.copy_(mean.float())
    return mechanism


#: a unit's per-channel deviation from the base is clipped to this fraction of sqrt(C) (the norm of a
#: standardised feature map's channel means, at most): chosen once on CBIS-DDSM validation (docs/models.md)
CHANNEL_BOUND_FRACTION = 1 / 3


@torch.no_grad()
def set_center_by_channel(center: FeatureCenter, features: torch.Tensor, *, base: torch.Tensor,
                          noise_multiplier: float, generator: torch.Generator,
                          groups: np.ndarray | None = None) -> Mechanism:
    """Set the centre to ``base`` (a public centre, e.g. the phantom's mean features; zeros without one)
    corrected by the training data's per-channel mean, released privately: C numbers, not C x H x W.

    ``features`` (N, C, ...) are feature maps; each sample's per-channel mean deviation from ``base``
    (a C-vector) is clipped to norm ``bound = CHANNEL_BOUND_FRACTION * sqrt(C)``, each unit (``groups[i]``,
    by default each image) contributes the mean of its clipped vectors (norm at most ``bound``: the
    sensitivity), and the sum over units gets Gaussian noise of std ``noise_multiplier * bound`` from
    ``generator`` (a secret one) before it is divided by the number of units. The correction is the
    same at every position of a channel. Where the offset between the public and the private mean
    is a per-channel one (on CBIS-DDSM's scattering features, 99% of it), this removes it with
    far less noise than releasing all C x H x W coordinates (:func:`set_center`).
    """
    n = len(features)
    maps = features.double().reshape(n, features.shape[1], -1)  # (N, C, positions); (N, D) -> D channels
    channels, positions = maps.shape[1], maps.shape[2]
    base = base.double().to(maps.device).reshape(channels, positions)
    correction, mechanism = _noisy_unit_mean((maps - base).mean(2), bound=CHANNEL_BOUND_FRACTION * math.sqrt(channels),
                                             noise_multiplier=noise_multiplier, generator=generator, groups=groups)
    center.center.copy_((base + correction.unsqueeze(1)).reshape(-1).float())
    return mechanism


def _noisy_unit_mean(rows: torch.Tensor, *, bound: float, noise_multiplier: float, generator: torch.Generator,
                     groups: np.ndarray | None) -> tuple[torch.Tensor, Mechanism]:
    """The Gaussian mechanism both centre releases share: rows clipped to ``bound``, one mean per unit (norm at
    most ``bound``: the sensitivity), their sum released by :func:`~privmed.privacy.mechanisms.gaussian_release`
    (noise of std ``noise_multiplier * bound`` from ``generator``), divided by the number of units; and its
    accounted stage."""
    unit_means = _unit_means(clip_rows(rows, bound), groups)
    released, mechanism = gaussian_release(unit_means.sum(0), sensitivity=bound, noise_multiplier=noise_multiplier,
                                           generator=generator, stage=CENTRE_STAGE)
    return released / len(unit_means), mechanism


def _unit_means(rows: torch.Tensor, groups: np.ndarray | None) -> torch.Tensor:
    """Mean of each group's rows (groups numbered 0..G-1); the rows themselves without groups."""
    if groups is None:
        return rows
    index = torch.from_numpy(np.asarray(groups, dtype=np.int64))
    sums = torch.zeros(int(index.max()) + 1, rows.shape[1], dtype=rows.dtype).index_add_(0, index, rows)
    counts = torch.bincount(index, minlength=len(sums)).to(rows.dtype).unsqueeze(1)
    return sums / counts


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
