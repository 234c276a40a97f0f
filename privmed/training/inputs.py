"""What the trainable part of a model sees: images, or precomputed frozen features.

Models with a frozen, data-independent front end (the scattering models expose
``model.features`` and ``model.head``) are trained on features computed once:
the front end has no parameters and does not depend on data, so this is exact
and costs no privacy. Only ``model.head`` goes through Opacus.

A head may start with a :class:`FeatureCenter` layer. Its centre (the mean
feature vector of the training set) makes the linear problem well conditioned
for DP-SGD, but it is a statistic of private data, so it is released through
the Gaussian mechanism and accounted as its own stage (``feature_centering``): all of it
(:func:`set_center`), or a public centre corrected by its per-channel mean (:func:`set_center_by_channel`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from privmed import atomic
from privmed.errors import FEATURE_CACHE_ENV_OFF, PrivmedError
from privmed.models.parts import is_feature_model, trainable_part
from privmed.models.scatter import FeatureCenter
from privmed.privacy.accounting import Mechanism
from privmed.privacy.mechanisms import gaussian_release
from privmed.progress import progress

from .dp_head import CENTRE_STAGE, clip_rows

__all__ = ["FeatureCenter", "find_center", "is_feature_model", "model_inputs", "set_center", "set_center_by_channel",
           "trainable_part"]

#: frozen features computed in this process, keyed by front end and image bytes (most recent last)
_FEATURE_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
FEATURE_CACHE_SIZE = 8
#: ``training.feature_cache`` value that keeps no features on disk
CACHE_OFF = "off"
#: the default folder of the disk cache when a run names none (a location, never a switch)
CACHE_ENV = "PRIVMED_CACHE"


@torch.no_grad()
def model_inputs(model: nn.Module, images: torch.Tensor, *, chunk: int = 64, device: str = "cpu",
                 cache: str | None = None) -> torch.Tensor:
    """Inputs of :func:`trainable_part`: frozen features for feature models, else the images.

    Features are cached (the front end is fixed and data-independent, so the same images
    always give the same features): in memory per process, and on disk in
    :func:`feature_cache_dir` keyed by the front end and a hash of the images, so the runs of
    a sweep, study, audit or benchmark compute each data set's scattering once. The disk cache
    holds features of private images: ``cache`` is the run's ``training.feature_cache`` (a folder, ``off``
    for none, None for the default location, :func:`feature_cache_dir`). Callers must not modify the result.
    """
    if not is_feature_model(model):
        return images
    key = (_front_end_key(model.features), tuple(images.shape), _data_hash(images))
    if key in _FEATURE_CACHE:
        _FEATURE_CACHE.move_to_end(key)
        return _FEATURE_CACHE[key]
    folder = feature_cache_dir(cache)
    features = _read_cached(folder, key)
    if features is None:
        model.features.to(device).eval()
        starts = progress(range(0, len(images), chunk), desc="computing frozen features", unit="chunk")
        parts = [model.features(images[i:i + chunk].to(device)).cpu() for i in starts]
        features = torch.cat(parts) if parts else torch.zeros((0,))
        _write_cached(folder, key, features)
    _FEATURE_CACHE[key] = features
    while len(_FEATURE_CACHE) > FEATURE_CACHE_SIZE:
        _FEATURE_CACHE.popitem(last=False)
    return features


def _data_hash(images) -> str:
    """A hash of the images: of their pixels, or of their files when they are read on access."""
    if hasattr(images, "fingerprint"):  # privmed.data.lazy.LazyImageTensor
        return images.fingerprint()
    return hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest()


def feature_cache_dir(setting: str | None = None) -> Path | None:
    """Where frozen features are cached on disk: ``setting`` (``training.feature_cache``) as a folder, None for
    ``off``; unset, the folder ``$PRIVMED_CACHE`` names (a location only: it changes no result), else
    ``~/.cache/privmed/features``."""
    if setting is not None:
        return None if setting == CACHE_OFF else Path(setting).expanduser()
    default = os.environ.get(CACHE_ENV, "")
    if default.lower() == CACHE_OFF:
        raise PrivmedError(FEATURE_CACHE_ENV_OFF)
    return Path(default).expanduser() if default else Path.home() / ".cache" / "privmed" / "features"


def _cache_file(folder: Path | None, key: tuple) -> Path | None:
    return None if folder is None else folder / f"{hashlib.sha1(repr(key).encode()).hexdigest()}.pt"


def _read_cached(folder: Path | None, key: tuple) -> torch.Tensor | None:
    path = _cache_file(folder, key)
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError):  # a torn or foreign file: compute again
        return None


def _write_cached(folder: Path | None, key: tuple, features: torch.Tensor) -> None:
    path = _cache_file(folder, key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic.replacing(path) as tmp:  # a full disk leaves no partial file in the cache
            torch.save(features, tmp)
    except (OSError, PrivmedError):  # a read-only home or a full disk: the cache is an optimisation only
        pass


def _front_end_key(features: nn.Module) -> tuple:
    """What determines a frozen front end's output: its class, its settings, its structure."""
    settings = tuple(sorted((k, v) for k, v in vars(features).items()
                            if isinstance(v, (int, float, str, bool)) and k != "training"))  # not the mode
    return type(features).__name__, settings, repr(features)


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
