"""ScatterNet models (Tramer & Boneh 2021, "Differentially Private Learning Needs Better
Features (or Much More Data)"): a fixed wavelet scattering transform followed by a
small trainable head.

The scattering transform (kymatio, 2D, ``J`` scales, ``L`` angles, order 2) has no
trainable parameters: its filters are buffers and do not depend on data, so it
costs no privacy and its output can be computed once per image. Each model is
split accordingly:

* ``model.features``: scattering -> (B, C*K, H/2^J, W/2^J) [-> 4x4 average pool
  -> log, for the linear head] -> GroupNorm with ``affine=False`` (a per-sample
  normalisation; never normalise scattering features with dataset statistics,
  which would leak the private data). No parameters.
* ``model.head``: the trainable part, the only one Opacus needs to see
  (``make_private(module=model.head, ...)`` on precomputed features).

``model(x) == model.head(model.features(x))``.

Variants: ``scatter_linear`` (linear head on 4x4-average-pooled features) and
``scatter_cnn`` (ScatterNet+CNN: conv-GroupNorm-tanh, max pool, conv-GroupNorm-tanh,
adaptive average pool, linear).

kymatio 0.3 + SciPy 1.17: ``import kymatio.torch`` fails, so the torch frontend is
imported directly from its module.
"""

from __future__ import annotations

import copy
import functools

import torch
from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
from monai.networks.layers.utils import get_act_layer
from torch import nn

from .invariance import InvariantFeatures
from .parts import FrontEndClassifier
from .resnet9 import make_norm, num_groups_for


def default_J(image_size: int) -> int:
    """Scattering scales: J=2 below 128 px, J=3 from 128 px on."""
    return 2 if image_size < 128 else 3


@functools.lru_cache(maxsize=8)
def _scattering_prototype(J: int, image_size: int, L: int, max_order: int) -> ScatteringTorch2D:
    return ScatteringTorch2D(J=J, shape=(image_size, image_size), L=L, max_order=max_order)


def make_scattering(J: int, image_size: int, L: int = 8, max_order: int = 2) -> ScatteringTorch2D:
    """A kymatio 2D scattering module (order ``max_order``, 1 or 2). Building the filter bank takes
    seconds at 224 px (NumPy), so one prototype per (J, size, L, order) is cached and copied."""
    return copy.deepcopy(_scattering_prototype(J, image_size, L, max_order))


def scattering_channels(J: int, L: int, max_order: int = 2) -> int:
    """Number of scattering coefficients per input channel: 1 + JL (+ L^2 J(J-1)/2)."""
    k = 1 + J * L
    if max_order >= 2:
        k += L * L * J * (J - 1) // 2
    return k


class ScatterFeatures(nn.Module):
    """Frozen front end: scattering, per-sample GroupNorm(affine=False), optional pooling.

    Holds no parameters (the scattering filters are buffers), only computes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        *,
        J: int | None = None,
        L: int = 8,
        norm: str = "group",
        pool_size: int | None = None,
        log_scale: bool = False,
        norm_groups: int | None = None,
        max_order: int = 2,
    ) -> None:
        super().__init__()
        if J is None:
            J = default_J(image_size)
        if image_size % (2**J):
            raise ValueError(f"image_size={image_size} must be divisible by 2^J={2**J}")
        if max_order not in (1, 2):
            raise ValueError(f"max_order={max_order} is not a scattering order privmed builds; use 1 or 2")
        self.J, self.L, self.image_size, self.in_channels, self.max_order = J, L, image_size, in_channels, max_order
        self.scattering = make_scattering(J, image_size, L, max_order)
        self.out_channels = in_channels * scattering_channels(J, L, max_order)
        self.spatial_size = pool_size if pool_size else image_size // 2**J
        # per-sample normalisation; "batch" leaves the features raw (the batch-norm lives
        # in the trainable head, see build_scatter_*).
        if norm == "group":
            groups = norm_groups or num_groups_for(self.out_channels, max_groups=self.out_channels,
                                                   min_channels_per_group=8)
            self.norm = nn.GroupNorm(groups, self.out_channels, affine=False)
        else:
            self.norm = nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if pool_size else nn.Identity()
        self.log = LogScale() if log_scale else nn.Identity()
        for p in self.parameters():  # there are none; keep it that way if kymatio changes
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.scattering(x.contiguous())  # (B, C, K, H/2^J, W/2^J)
        z = z.flatten(1, 2)
        return self.norm(self.log(self.pool(z)))

    def extra_repr(self) -> str:
        # in the feature cache's key (privmed.training.inputs._front_end_key) even behind a wrapper; empty at
        # order 2 so that features cached before the option existed stay valid
        return f"max_order={self.max_order}" if self.max_order != 2 else ""

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Per-sample feature shape (C*K, h, w)."""
        return (self.out_channels, self.spatial_size, self.spatial_size)


class FeatureCenter(nn.Module):
    """Flattens and subtracts a fixed centre vector (a buffer, set once before training).

    The centre is the training-feature mean; since that is a statistic of the private
    data, the trainer releases it with the Gaussian mechanism and accounts for it
    (:func:`privmed.training.centre.set_center`).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) - self.center


class LogScale(nn.Module):
    """``log(|x| + eps)``: scattering coefficients are heavy-tailed; their log is near Gaussian."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.abs() + self.eps)


class ScatterNet(FrontEndClassifier):
    """``head(features(x))``: frozen scattering features, trainable head."""


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims != 2:
        raise ValueError(f"scattering models are 2D only, got spatial_dims={spatial_dims}")


def _check_norm(norm: str) -> None:
    if norm not in ("group", "batch"):
        raise ValueError(f"unknown norm {norm!r} for a scattering model; use 'group' or 'batch'")


def build_scatter_linear(
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 64,
    norm: str = "group",
    J: int | None = None,
    L: int = 8,
    pool_size: int = 4,
    input_norm: str = "quantile",
    dihedral: bool = True,
    blur: float = 0.0,
    max_order: int = 2,
    lesion_window: float = 0.0,
    standardise: bool = False,
) -> ScatterNet:
    """ScatterNet + linear: each image's grey levels replaced by the normal scores of their ranks
    (``input_norm="quantile"``) -> second-order scattering averaged over the image's 8 rotations and reflections
    -> 4x4 avg pool -> log -> centring -> linear.

    The default front end is chosen to read the lesion rather than the scanner
    (``benchmarks/results/transfer.md``, docs/shortcuts.md, docs/models.md): among the front ends that no grey-level
    curve can move, it is ahead on the mean of val, deconfounded val and leave-one-acquisition-cluster-out AUROC at
    epsilon 1 and 6 and level non-privately. The per-image rank transform (``input_norm``: ``"quantile"``;
    ``"zscore"`` for mean and spread alone, ``"none"`` for raw grey levels) gives every patch the same histogram, so
    brightness, contrast and gamma, which differ between scanners and, on CBIS-DDSM, between the classes, are gone
    before the scattering sees the image. Options: ``max_order`` (2: 1 + JL + L^2 J(J-1)/2 channels, 81 at J=2;
    1: the first order alone), ``dihedral`` (average the features over the 8 rotations and reflections, at 8 times
    the compute; turn it off where orientation carries the diagnosis), ``standardise`` (a per-sample
    standardisation of the log features, GroupNorm with one group; level on the criterion, and it cost about .05
    AUROC at another hospital on raw grey levels), ``lesion_window`` (keep the central fraction of each side,
    flatten the rest: :class:`privmed.models.invariance.LesionWindow`), ``blur`` (a Gaussian low-pass of each
    image, pixels). Runs record these arguments (``recorded_args``), and runs from before a default changed
    rebuild as they were trained (:mod:`privmed.config.migrate`).

    The head's centre (training mean) is released privately by the trainer; the log makes the coordinates
    roughly Gaussian, which a linear model trained with clipped, noisy gradients needs. ``norm="batch"``
    (non-private only) replaces the centring by a BatchNorm.
    """
    _check_dims(spatial_dims)
    _check_norm(norm)
    features: nn.Module = ScatterFeatures(in_channels, image_size, J=J, L=L,
                                          norm=norm if standardise else "none", pool_size=pool_size,
                                          log_scale=True, norm_groups=1, max_order=max_order)
    if input_norm != "none" or dihedral or blur or lesion_window:  # the plain front end keeps its cached features
        features = InvariantFeatures(features, input_norm=input_norm, dihedral=dihedral, blur=blur,
                                     lesion_window=lesion_window)
    c, h, w = features.output_shape
    if norm == "batch":
        layers: list[nn.Module] = [nn.BatchNorm2d(c), nn.Flatten(1)]
    else:
        layers = [FeatureCenter(c * h * w)]
    layers.append(nn.Linear(c * h * w, num_outputs))
    return ScatterNet(features, nn.Sequential(*layers))


def build_scatter_cnn(
    *,
    spatial_dims: int = 2,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 64,
    norm: str = "group",
    J: int | None = None,
    L: int = 8,
    channels: int = 64,
    act: str = "tanh",
    pool_size: int = 4,
) -> ScatterNet:
    """ScatterNet + CNN: scattering -> GroupNorm(affine=False) -> [conv3x3-GN-tanh, maxpool2,
    conv3x3-GN-tanh] -> adaptive avg pool (``pool_size``) -> linear.

    ``norm="batch"`` (non-private only) puts BatchNorm in the head instead of GroupNorm.
    """
    _check_dims(spatial_dims)
    _check_norm(norm)
    features = ScatterFeatures(in_channels, image_size, J=J, L=L, norm=norm, pool_size=None)
    c, h, _ = features.output_shape
    layers: list[nn.Module] = [nn.BatchNorm2d(c)] if norm == "batch" else []
    layers += [
        nn.Conv2d(c, channels, kernel_size=3, padding=1, bias=False),
        make_norm(norm, 2, channels),
        get_act_layer(act),
    ]
    if h >= 2:
        layers.append(nn.MaxPool2d(2))
    layers += [
        nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
        make_norm(norm, 2, channels),
        get_act_layer(act),
        nn.AdaptiveAvgPool2d(pool_size),
        nn.Flatten(1),
        nn.Linear(channels * pool_size * pool_size, num_outputs),
    ]
    return ScatterNet(features, nn.Sequential(*layers))
