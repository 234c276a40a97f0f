"""What the trainable part of a model sees: images, or precomputed frozen features.

Models with a frozen, data-independent front end (the scattering models expose
``model.features`` and ``model.head``) are trained on features computed once:
the front end has no parameters and does not depend on data, so this is exact
and costs no privacy. Only ``model.head`` goes through Opacus.

A head may start with a feature centre; :mod:`privmed.training.centre` sets it and releases it.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from privmed import atomic
from privmed.errors import FEATURE_CACHE_ENV_OFF, PrivmedError
from privmed.models.parts import is_feature_model, trainable_part
from privmed.progress import progress

__all__ = ["is_feature_model", "model_inputs", "trainable_part"]

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
